"""facenet's held-out validation (``validation_split``): a fraction of each class's images is kept
out of training and scored by the classifier every N segment ends (cross-entropy and accuracy),
beside the pair-set validation.

The split follows facenet's ``split_dataset(..., mode='SPLIT_IMAGES')``: each class's images in a
seeded random order, the first ``floor(n (1 - ratio))`` train, the rest validate; a class whose
images would all train gives one to validation. One departure: facenet sends the only image of a
one-image class to validation (its split is 0, so the class keeps its label but no training
image); here at least one image of every class stays in training, so such a class is never
validated. Records are numbered in shard order (``metadata.json``), labels read once from the
shards."""
from __future__ import annotations

import math

import numpy as np



def split_heldout(labels: np.ndarray, ratio: float, seed: int = 0) -> np.ndarray:
    """A boolean mask over the records: True for the held-out (validation) ones. Per class of n
    images: ``n - max(1, t)`` held out, t = floor(n (1 - ratio)) lowered to n - 1 when it is n
    (facenet's rule, except that one image always stays in training)."""
    labels = np.asarray(labels, np.int64)
    held = np.zeros(len(labels), bool)
    if ratio <= 0 or not len(labels):
        return held
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(labels)), labels))  # by class, random within it
    classes, start, counts = np.unique(labels[order], return_index=True, return_counts=True)
    for s, n in zip(start, counts):
        t = int(math.floor(n * (1.0 - ratio)))
        t = n - 1 if t == n else t
        t = max(1, t)
        held[order[s + t:s + n]] = True
    return held


__all__ = ["split_heldout"]
