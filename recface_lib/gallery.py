"""The enrolment gallery of a bundle: people enrolled from a few photos each, searched to name the
faces ``FaceRecognizer.identify`` finds (``recface enroll``, ``recface identify``).

Stored beside the bundle as ``<bundle>.gallery.npz`` (``vectors``: N x d float32 L2-normalised
embeddings, flip TTA; ``labels``: N int32, grouped by person) and ``<bundle>.gallery.json`` (names,
each vector's source photo, the embedding size and the weights' SHA-256 it was made with), both
written atomically; no pickle. A gallery made with other weights is refused.

Search is one matrix product and a per-person maximum (``np.maximum.reduceat`` over the grouped
vectors): a person's score is the best cosine over their enrolled photos, accepted above the
bundle's verification threshold (or the gallery's own, ``enroll --threshold``). ``benchmarks/gallery_search.py`` measures it at 100k vectors."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .errors import ConfigError, FormatError
from .io_utils import atomic_path, atomic_write_json


def gallery_paths(bundle: str | os.PathLike) -> tuple[Path, Path]:
    b = Path(bundle)
    return b.with_name(b.stem + ".gallery.npz"), b.with_name(b.stem + ".gallery.json")


class Gallery:
    def __init__(self, dim: int, weights: str | None = None):
        self.dim, self.weights = int(dim), weights
        self.names: list[str] = []
        self.vectors = np.zeros((0, self.dim), np.float32)
        self.labels = np.zeros(0, np.int32)
        self.sources: list[str] = []
        self.threshold: float | None = None  # set by `enroll --threshold`; else the bundle's is used

    # -- files ------------------------------------------------------------------------------------
    @classmethod
    def load(cls, bundle: str | os.PathLike, dim: int, weights: str | None = None) -> "Gallery":
        """The bundle's gallery (empty when there is none yet)."""
        npz, js = gallery_paths(bundle)
        g = cls(dim, weights)
        if not js.is_file() and not npz.is_file():
            return g
        try:
            meta = json.loads(js.read_text())
            with np.load(npz, allow_pickle=False) as z:
                vectors, labels = z["vectors"].astype(np.float32), z["labels"].astype(np.int32)
        except (OSError, ValueError, KeyError) as e:
            raise FormatError(f"{js.parent / js.stem}.*: unreadable gallery ({e})") from e
        if int(meta.get("dim", -1)) != g.dim or (weights and meta.get("weights_sha256") not in (None, weights)):
            raise FormatError(f"{js}: enrolled with another model ({meta.get('dim')}-d, weights "
                              f"{meta.get('weights_sha256')}); this bundle gives {g.dim}-d, weights {weights}. "
                              "Enrol the people again with this bundle")
        names, sources = list(meta.get("names", [])), list(meta.get("sources", []))
        if vectors.shape != (len(labels), g.dim) or len(sources) != len(labels) or (
                len(labels) and (labels.min() < 0 or labels.max() >= len(names) or np.any(np.diff(labels) < 0))):
            raise FormatError(f"{js}: gallery files do not agree (vectors {vectors.shape}, {len(labels)} labels, "
                              f"{len(names)} names)")
        g.names, g.vectors, g.labels, g.sources = names, vectors, labels, sources
        g.threshold = meta.get("threshold")
        return g

    def save(self, bundle: str | os.PathLike) -> None:
        npz, js = gallery_paths(bundle)
        with atomic_path(npz, suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, vectors=self.vectors, labels=self.labels)
        atomic_write_json(js, {"names": self.names, "sources": self.sources, "dim": self.dim,
                               "weights_sha256": self.weights, "threshold": self.threshold,
                               "vectors": int(len(self.labels))})

    # -- editing ----------------------------------------------------------------------------------
    def add(self, name: str, vectors: np.ndarray, sources: list[str]) -> None:
        v = np.asarray(vectors, np.float32).reshape(-1, self.dim)
        if not name or len(v) != len(sources):
            raise ConfigError("enroll: a person's name and one source per vector are needed")
        if name not in self.names:
            self.names.append(name)
        lab = self.names.index(name)
        vectors = np.concatenate([self.vectors, v])
        labels = np.concatenate([self.labels, np.full(len(v), lab, np.int32)])
        sources = self.sources + list(sources)
        order = np.argsort(labels, kind="stable")  # grouped by person: what the search's reduceat needs
        self.vectors, self.labels, self.sources = vectors[order], labels[order], [sources[i] for i in order]

    def remove(self, name: str) -> int:
        if name not in self.names:
            raise ConfigError(f"enroll --remove: {name!r} is not enrolled; enrolled: {', '.join(self.names) or 'nobody'}")
        lab = self.names.index(name)
        keep = self.labels != lab
        n = int((~keep).sum())
        self.vectors, self.sources = self.vectors[keep], [s for s, k in zip(self.sources, keep) if k]
        labels = self.labels[keep]
        self.labels = np.where(labels > lab, labels - 1, labels).astype(np.int32)
        self.names.pop(lab)
        return n

    def counts(self) -> dict[str, int]:
        return {n: int((self.labels == i).sum()) for i, n in enumerate(self.names)}

    # -- search -----------------------------------------------------------------------------------
    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(best person index, its score) per query: the best cosine over each person's vectors."""
        q = np.asarray(queries, np.float32).reshape(-1, self.dim)
        if not len(self.labels):
            return np.full(len(q), -1), np.full(len(q), -np.inf, np.float32)
        starts = np.flatnonzero(np.r_[True, np.diff(self.labels) != 0])
        per_person = np.maximum.reduceat(q @ self.vectors.T, starts, axis=1)  # m x people present
        best = per_person.argmax(1)
        return self.labels[starts][best], per_person[np.arange(len(q)), best]
