"""The embedder interface."""
from __future__ import annotations

import numpy as np

from ..io_utils import load_item
from ..protocol.verification import flip_sum, l2_normalize


class Embedder:
    """Subclasses give ``prepare(image) -> (face crop, how it was found)`` and
    ``embed_crops(crops) -> (N, D)``; the rest is shared."""

    name = "embedder"
    dim = 0
    threshold: float | None = None  # a reference's published cosine threshold (a model's is in its spec)

    def faces(self, image: np.ndarray) -> list:
        """Every face of a photo or video frame, each as (aligned crop, ``align.detectors.Detection``),
        aligned as this embedder needs (``identify`` and ``watch``)."""
        from ..errors import ConfigError

        raise ConfigError(f"{self.name}: finds one face per image; it cannot name several faces in a frame")

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, str]:
        raise NotImplementedError

    def embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def prepare_landmarks(self, image: np.ndarray, landmarks5: np.ndarray) -> tuple[np.ndarray, str]:
        """A face whose five landmarks are given (IJB's release): embedders that align by landmarks
        use them; the others fall back to their own chain."""
        return self.prepare(image)

    def embed_crops_with_flip(self, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Normalised embeddings of the crops and of their mirror images."""
        if not crops:
            z = np.zeros((0, self.dim))
            return z, z
        e = l2_normalize(self.embed_crops(crops))
        ef = l2_normalize(self.embed_crops([np.ascontiguousarray(c[:, ::-1]) for c in crops]))
        return e, ef

    def embed_items(self, items: list, flip: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
        """Paths, encoded bytes or RGB arrays (or ``(item, five landmarks)`` pairs) -> (embeddings,
        mirrored embeddings (empty without ``flip``), {how: count}); also the worker entry point of
        ``embed_parallel``."""
        crops, stats = [], {}
        for it in items:
            if isinstance(it, tuple):
                c, how = self.prepare_landmarks(load_item(it[0], str(it[0])), np.asarray(it[1], np.float64))
            else:
                c, how = self.prepare(load_item(it))
            crops.append(c)
            stats[how] = stats.get(how, 0) + 1
        if not flip:
            e = l2_normalize(self.embed_crops(crops)) if crops else np.zeros((0, self.dim))
            return e, np.zeros((0, e.shape[1])), stats
        e, ef = self.embed_crops_with_flip(crops)
        return e, ef, stats

    def embed_items_plain(self, items: list) -> tuple[np.ndarray, np.ndarray, dict]:
        """``embed_items`` without the mirrored pass (a worker entry point)."""
        return self.embed_items(items, flip=False)

    def embed(self, images: list, flip: bool = False) -> np.ndarray:
        """L2-normalised embeddings (with ``flip``: the flip TTA of ``flip_sum``)."""
        e, ef, _ = self.embed_items(list(images))
        return flip_sum(e, ef) if flip else e
