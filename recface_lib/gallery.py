"""The enrolment gallery: people enrolled from a few photos each, searched to name the faces
``FaceRecognizer.identify`` finds (``recface enroll``, ``recface identify``, ``recface watch``).

Where it lives: beside a bundle as ``<bundle>.gallery.npz`` / ``<bundle>.gallery.json``, or, for
any embedder (a bundle, a training run, a reference such as ``sface``), in the folder ``--gallery``
names as ``gallery.npz`` / ``gallery.json``. ``vectors``: N x d float32 L2-normalised embeddings
(flip TTA), ``labels``: N int32, grouped by person; the JSON holds the names, each vector's source
photo, the embedding size, the embedder's identity (a reference's name or the weights' SHA-256) and
the SHA-256 of the ``.npz`` it goes with. Both are written atomically (the ``.npz`` first); no
pickle. A gallery made with another embedder is refused, and a reader that meets a ``.json`` and an
``.npz`` of two different saves (a save half done) is told so (``GalleryChanging``) instead of
mixing them: ``watch`` then keeps the gallery it had and reads again later.

Search is one matrix product and a per-person maximum (``np.maximum.reduceat`` over the grouped
vectors): a person's score is the best cosine over their enrolled photos, accepted above the
bundle's verification threshold (or the gallery's own, ``enroll --threshold``). ``benchmarks/gallery_search.py`` measures it at 100k vectors."""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from .errors import ConfigError, FormatError
from .io_utils import atomic_path, atomic_write_json


class GalleryChanging(FormatError):
    """The gallery's two files are of two different saves (one is being replaced): read again."""


def gallery_paths(location: str | os.PathLike) -> tuple[Path, Path]:
    """A bundle ``.zip``: the files beside it; any other path: a gallery folder."""
    b = Path(location)
    if b.suffix == ".zip":
        return b.with_name(b.stem + ".gallery.npz"), b.with_name(b.stem + ".gallery.json")
    return b / "gallery.npz", b / "gallery.json"


def gallery_stamp(location: str | os.PathLike) -> tuple:
    """What changes when the gallery is saved again (size and modification time of both files)."""
    out = []
    for f in gallery_paths(location):
        try:
            st = f.stat()
            out.append((st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


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
    def load(cls, location: str | os.PathLike, dim: int, weights: str | None = None) -> "Gallery":
        """The gallery of a bundle or folder (empty when there is none yet); ``weights``: the
        embedder's identity it must have been made with."""
        npz, js = gallery_paths(location)
        g = cls(dim, weights)
        if not js.is_file() and not npz.is_file():
            return g
        try:
            meta = json.loads(js.read_text())
            raw = npz.read_bytes()
            if meta.get("npz_sha256") not in (None, hashlib.sha256(raw).hexdigest()):
                raise GalleryChanging(f"{npz}: not the file {js.name} was saved with (a save in progress?)")
            with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                vectors, labels = z["vectors"].astype(np.float32), z["labels"].astype(np.int32)
        except GalleryChanging:
            raise
        except (OSError, ValueError, KeyError) as e:
            raise FormatError(f"{js.parent / js.stem}.*: unreadable gallery ({e})") from e
        made_with = meta.get("embedder_id", meta.get("weights_sha256"))
        if int(meta.get("dim", -1)) != g.dim or (weights and made_with not in (None, weights)):
            raise FormatError(f"{js}: enrolled with another model ({meta.get('dim')}-d, {made_with}); this "
                              f"embedder gives {g.dim}-d, {weights}. Enrol the people again with it, or give "
                              "another --gallery folder")
        names, sources = list(meta.get("names", [])), list(meta.get("sources", []))
        if vectors.shape != (len(labels), g.dim) or len(sources) != len(labels) or (
                len(labels) and (labels.min() < 0 or labels.max() >= len(names) or np.any(np.diff(labels) < 0))):
            raise FormatError(f"{js}: gallery files do not agree (vectors {vectors.shape}, {len(labels)} labels, "
                              f"{len(names)} names)")
        g.names, g.vectors, g.labels, g.sources = names, vectors, labels, sources
        g.threshold = meta.get("threshold")
        return g

    def save(self, location: str | os.PathLike) -> None:
        npz, js = gallery_paths(location)
        npz.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, vectors=self.vectors, labels=self.labels)
        with atomic_path(npz, suffix=".npz") as tmp:
            Path(tmp).write_bytes(buf.getvalue())
        atomic_write_json(js, {"names": self.names, "sources": self.sources, "dim": self.dim,
                               "embedder_id": self.weights, "threshold": self.threshold,
                               "vectors": int(len(self.labels)), "npz_sha256": hashlib.sha256(buf.getvalue()).hexdigest()})

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
