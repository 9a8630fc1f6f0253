"""Batch samplers (#24): which records make each training batch, where the shuffled stream of
``make_dataset`` is not what a loss needs. One registered class each (``@register``), chosen by
``train.sampler`` with its parameters in ``train.sampler_params``.

- ``pk``  P identities x K images per batch (Hermans et al.'s P x K; facenet-pytorch-glint360k's
  ``num_human_identities_per_batch``): P = batch_size / K distinct classes drawn uniformly from
  the eligible ones, K of each class's records; ``short: replace`` draws a class with fewer than K
  records with replacement, ``short: skip`` leaves such classes out. The records of a batch come
  class by class, so a global batch split over R replicas keeps whole identities when R divides P.

Batch b is drawn from ``numpy.random.default_rng([seed, b])`` alone: the same seed gives the same
batches, and a resumed run starts at its batch without replaying the earlier ones. Records are read
by their byte span in the shards (``tfrecord.record_spans``); nothing is loaded into memory but
each record's label, shard and span."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..errors import ConfigError, FormatError

BATCH_SAMPLERS: dict[str, type["BatchSampler"]] = {}


def register(cls):
    BATCH_SAMPLERS[cls.name] = cls
    return cls


def record_labels(meta: dict) -> np.ndarray:
    """Every record's label (a union's parts offset), in shard order: one read of the shards that
    parses the label field alone."""
    import tensorflow as tf

    from .tfrecord import check_shards, data_error

    shards = [str(p) for p in check_shards(meta)]
    spec = {"label": tf.io.FixedLenFeature([], tf.int64)}
    out = []
    try:
        for path, sh in zip(shards, meta["shards"]):
            ds = tf.data.TFRecordDataset(path).batch(4096).map(lambda r: tf.io.parse_example(r, spec)["label"])
            labels = np.concatenate([b.numpy() for b in ds] or [np.zeros(0, np.int64)])
            if len(labels) != int(sh["records"]):
                raise FormatError(f"{path}: {len(labels)} records, metadata.json recorded {sh['records']}")
            out.append(labels + int(sh.get("label_offset", 0)))
    except tf.errors.OpError as e:
        raise data_error(meta, e) from None
    return np.concatenate(out) if out else np.zeros(0, np.int64)


class BatchSampler:
    """``rows(b)``: the record rows (shard order) of batch b."""

    name: ClassVar[str]
    PARAMS: ClassVar[dict] = {}

    @classmethod
    def check_params(cls, params: dict, where: str = "sampler_params") -> dict:
        unknown = sorted(set(params) - set(cls.PARAMS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} for sampler {cls.name}; "
                              f"valid: {', '.join(cls.PARAMS)}")
        return {**cls.PARAMS, **params}

    def rows(self, b: int) -> np.ndarray:
        raise NotImplementedError


@register
class PKSampler(BatchSampler):
    name = "pk"
    PARAMS: ClassVar[dict] = {"k": 4, "short": "replace"}

    def __init__(self, labels, batch_size: int, seed: int = 0, replicas: int = 1, keep=None, source: str = "dataset",
                 **params):
        p = self.check_params(params)
        k, short = p["k"], p["short"]
        if not isinstance(k, int) or isinstance(k, bool) or k < 2:
            raise ConfigError(f"sampler_params: k: {k!r}: a whole number >= 2 (images per identity)")
        if short not in ("replace", "skip"):
            raise ConfigError(f"sampler_params: short: {short!r}; valid: replace, skip")
        if batch_size % k:
            raise ConfigError(f"sampler pk: batch_size {batch_size} is not a multiple of k = {k} (P x K images)")
        self.k, self.p, self.seed = k, batch_size // k, int(seed)
        if self.p % replicas:
            raise ConfigError(f"sampler pk: P = {self.p} identities per batch do not split over {replicas} replicas "
                              "(each replica's part must hold whole identities): choose batch_size / k divisible by it")
        labels = np.asarray(labels, np.int64)
        rows = np.arange(len(labels))
        if keep is not None:
            labels, rows = labels[keep], rows[keep]
        order = np.argsort(labels, kind="stable")
        classes, start, counts = np.unique(labels[order], return_index=True, return_counts=True)
        ok = counts >= (k if short == "skip" else 1)
        self.classes = classes[ok]
        self.rows_of = [rows[order[s:s + n]] for s, n, o in zip(start, counts, ok) if o]
        if len(self.classes) < self.p:
            most = int(counts.max()) if len(counts) else 0
            raise ConfigError(f"sampler pk: {source} has {len(self.classes)} classes with "
                              f"{'>= ' + str(k) if short == 'skip' else 'any'} images (most images in a class: "
                              f"{most}), fewer than the P = {self.p} identities a batch of {batch_size} needs")

    def rows(self, b: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, int(b)])
        chosen = rng.choice(len(self.classes), self.p, replace=False)
        return np.concatenate([rng.choice(self.rows_of[c], self.k, replace=len(self.rows_of[c]) < self.k)
                               for c in chosen])


def make_sampler(name: str, labels, batch_size: int, seed: int = 0, replicas: int = 1, keep=None,
                 source: str = "dataset", **params) -> BatchSampler:
    if name not in BATCH_SAMPLERS:
        raise ConfigError(f"sampler: unknown {name!r}; valid: shuffle, {', '.join(BATCH_SAMPLERS)}")
    return BATCH_SAMPLERS[name](labels, batch_size, seed, replicas, keep, source, **params)


def record_index(meta: dict) -> dict:
    """Where every record is: its shard and byte span (one header walk per shard), and each shard's
    path, label offset and whether its images are paths."""
    from pathlib import Path

    from .tfrecord import record_spans

    d = Path(meta["_dir"])
    paths = [d / s["name"] for s in meta["shards"]]
    spans = [np.asarray(record_spans(p), np.int64).reshape(-1, 2) for p in paths]
    union = "_parts" in meta
    return {"paths": paths,
            "shard_of": np.concatenate([np.full(len(s), i) for i, s in enumerate(spans)] or [np.zeros(0, int)]),
            "span": np.concatenate(spans or [np.zeros((0, 2), np.int64)]),
            "offsets": [int(s.get("label_offset", 0)) for s in meta["shards"]],
            "by_path": [bool(s["by_path"]) if union else meta.get("image_storage") == "path" for s in meta["shards"]]}


def sampled_records(index: dict, sampler: BatchSampler, start_batch: int = 0):
    """Endless (row, record bytes, label offset, image is a path) in the sampler's batch order,
    from batch ``start_batch``; each record read by its span in its shard (``record_index``)."""
    paths, shard_of, span = index["paths"], index["shard_of"], index["span"]
    offsets, by_path = index["offsets"], index["by_path"]
    files = {}
    try:
        b = int(start_batch)
        while True:
            for r in sampler.rows(b):
                i = int(shard_of[r])
                f = files.get(i) or files.setdefault(i, open(paths[i], "rb"))
                f.seek(int(span[r, 0]))
                yield int(r), f.read(int(span[r, 1])), offsets[i], by_path[i]
            b += 1
    finally:
        for f in files.values():
            f.close()


__all__ = ["BATCH_SAMPLERS", "BatchSampler", "PKSampler", "make_sampler", "record_index", "record_labels",
           "sampled_records"]
