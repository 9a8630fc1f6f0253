"""Keras callbacks of the trainer: validation on pair sets, checkpoints every N steps and at each
segment end, the NaN guard, history (CSV, TensorBoard, PNG curves) and the progress bar."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import keras

from ..io_utils import atomic_path, load_item


class PairSetValidator:
    """A pair set decoded once (and, with ``prepare``, its unaligned photos aligned once by the
    data's contract, as evaluate aligns them); ``__call__(embedder)`` scores it with the shared
    protocol (``protocol.pair_sets.score_pair_set``)."""

    def __init__(self, path: str, input_size: int, flip: bool = True, prepare=None):
        import cv2

        from ..protocol.pair_sets import PairSource, load_pair_source

        src = load_pair_source(path)
        images = [load_item(item, f"{path} image {i if src.stored is None else src.stored[i]}")
                  for i, item in enumerate(src.items)]
        if prepare is not None:  # photos (a pairs2bin .bin of LFW) aligned once as the model's data was
            images = prepare(images)
        for i, im in enumerate(images):  # decoded, aligned and resized once, not at every validation
            if im.shape[:2] != (input_size, input_size):
                images[i] = cv2.resize(im, (input_size, input_size), interpolation=cv2.INTER_AREA)
        self.src = PairSource(src.name, images, src.index1, src.index2, src.issame, src.stored)
        self.name, self.flip = src.name, flip

    def __call__(self, embedder):
        from ..protocol.pair_sets import score_pair_set

        return score_pair_set(self.src, embedder.embed_items, (self.flip,))[0][self.flip]


class PlanCallback(keras.callbacks.Callback):
    """Counts global steps, checkpoints, validates at segment ends, records history, guards NaN."""

    def __init__(self, run, stage_index: int, first_segment: int, bar):
        super().__init__()
        self.run, self.si, self.seg, self.bar = run, stage_index, first_segment, bar
        self.nan_step = None

    # batches are counted here, not by optimizer.iterations: under mixed_float16 the loss-scale
    # optimizer skips (and does not count) steps whose gradients overflowed
    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            self.nan_step = self.run.global_step + 1
            self.model.stop_training = True
            return
        self.run.global_step += 1
        step = self.run.global_step
        self.bar.update(1)
        if batch % 10 == 0:
            extra = {k: f"{float(logs[k]):.3f}" for k in ("accuracy", "cosine") if k in logs}
            self.bar.set_postfix(loss=f"{loss:.3f}", **extra, refresh=False)
        every = self.run.cfg.checkpoint_every
        if every and step % every == 0:
            self.run.checkpoint(step, self.si, self.seg)

    def on_epoch_end(self, epoch, logs=None):
        if self.nan_step is not None:
            return
        self.run.end_segment(self.run.global_step, self.si, self.seg, logs or {})
        self.seg += 1


def write_history_csv(rows: list[dict], path: Path) -> None:
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def save_backbone(backbone, path: Path) -> Path:
    with atomic_path(path, suffix=".weights.h5") as tmp:
        backbone.save_weights(str(tmp))
    return path

