"""Image in, identity out: detect -> align (exactly as the model's preprocessing contract says)
-> embed -> identify.

``FaceRecognizer.from_bundle("weights/NAME.zip")`` loads an export bundle (``backend="onnx"`` runs
with onnxruntime only: TensorFlow is never imported); a bundle without a complete contract is
refused. ``FaceRecognizer.from_run(run_dir)`` loads a training run. Methods:
``identify(image) -> [Face]``, ``embed(image)``, ``verify(img1, img2)``, ``embed_aligned(faces)``,
``align_one(image)``.

Images are RGB uint8 HxWx3 (``io_utils.read_image``). An image that already has the contract's
crop size (or the model's input size) is taken as an aligned crop; anything else is detected and
aligned with the recorded detector, method and template."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .embedders.model import load_bundle, load_run
from .errors import ConfigError, FormatError
from .io_utils import load_item
from .protocol.verification import flip_sum


@dataclass
class Face:
    box: list[float]
    landmarks: list[list[float]] | None
    name: str | None          # None: unknown (score not above the classifier's threshold)
    score: float
    detection_score: float
    candidate: str | None = None  # the closest known person, whatever the threshold

    def to_json(self) -> dict:
        return {"box": [round(v, 1) for v in self.box], "name": self.name, "candidate": self.candidate,
                "score": round(self.score, 4),
                "detection_score": round(self.detection_score, 4),
                "landmarks": None if self.landmarks is None else [[round(a, 1), round(b, 1)] for a, b in self.landmarks]}


class FaceRecognizer:
    """``embedder``: a bundle's or run's ``ModelEmbedder`` (its contract aligns the faces) or a
    reference embedder (``sface``, ``dlib_resnet``: their own detection and crop). ``identity``:
    what a gallery must have been made with (the weights' SHA-256, or the reference's name)."""

    def __init__(self, embedder, classifier=None, threshold: float | None = None, gallery=None,
                 identity: str | None = None):
        self.embedder, self.classifier, self.gallery = embedder, classifier, gallery
        self.spec = getattr(embedder, "spec", None) or {}
        self.size = getattr(embedder, "size", None)
        own = self.spec.get("verification_threshold") if self.spec else getattr(embedder, "threshold", None)
        self.threshold = threshold if threshold is not None else own
        self.identity = identity or self.spec.get("weights_sha256")

    @classmethod
    def from_embedder(cls, spec: str, gallery: str | os.PathLike | None = None, backend: str = "onnx",
                      threads: int = 0) -> "FaceRecognizer":
        """Any embedder recface has (a bundle ``.zip``, a training run folder, a reference such as
        ``sface``) with the gallery in the folder ``gallery`` (a bundle's own gallery, and its
        classifier, without one)."""
        from .embedders.factory import is_reference, make_embedder, model_identity
        from .gallery import Gallery

        if str(spec).endswith(".zip") and not is_reference(spec):
            rec = cls.from_bundle(spec, backend, threads)
            if gallery:
                rec.gallery = Gallery.load(gallery, rec.embedder.dim, rec.identity)
            return rec
        if not gallery:
            raise ConfigError(f"embedder {spec}: give a gallery folder (--gallery): only a bundle keeps its "
                              "gallery beside it")
        emb = make_embedder(str(spec), "keras")
        ident = model_identity(str(spec))
        return cls(emb, gallery=Gallery.load(gallery, emb.dim, ident), identity=ident)

    # -- loading ------------------------------------------------------------------------------
    @classmethod
    def from_run(cls, run: str | os.PathLike, weights: str = "final") -> "FaceRecognizer":
        return cls(load_run(run, weights))

    @classmethod
    def from_bundle(cls, path: str | os.PathLike, backend: str = "onnx", threads: int = 0) -> "FaceRecognizer":
        from .gallery import Gallery

        emb, files = load_bundle(path, backend, threads)
        gallery = Gallery.load(path, emb.dim, emb.spec.get("weights_sha256"))  # the one beside the bundle
        clf = None
        if ("classifier.json" in files) != ("classifier.npz" in files):
            raise FormatError(f"{path}: the bundle has only one of classifier.json and classifier.npz")
        if "classifier.json" in files:
            import tempfile
            from pathlib import Path

            from .evaluate.classifier import Classifier
            with tempfile.TemporaryDirectory() as tmp:
                for k in ("classifier.json", "classifier.npz"):
                    (Path(tmp) / k).write_bytes(files[k])
                clf = Classifier.load(tmp)
        return cls(emb, clf, gallery=gallery)

    # -- embedding ----------------------------------------------------------------------------
    def embed_aligned(self, faces: list[np.ndarray], flip: bool = True) -> np.ndarray:
        """Aligned crops -> L2-normalised embeddings (with flip: the flip TTA)."""
        e, ef = self.embedder.embed_crops_with_flip(list(faces))
        return flip_sum(e, ef) if flip else e

    def detect(self, image: np.ndarray):
        """All faces: [(aligned crop, Detection)], aligned as the embedder needs (a model: its contract)."""
        return self.embedder.faces(image)

    def align_one(self, image: np.ndarray) -> tuple[np.ndarray, str]:
        """The labelled face of a photo (the one the contract's ``select`` rule picks), or the photo
        itself if it is already an aligned crop."""
        return self.embedder.prepare(image)

    def embed(self, image, flip: bool = True) -> np.ndarray:
        crop, _ = self.align_one(load_item(image))
        return self.embed_aligned([crop], flip)[0]

    def verify(self, img1, img2, flip: bool = True) -> dict:
        e1, e2 = self.embed(img1, flip), self.embed(img2, flip)
        cos = float(e1 @ e2)
        same = None if self.threshold is None else bool(cos > self.threshold)
        return {"cosine": cos, "same": same, "threshold": self.threshold}

    def enroll_vectors(self, photos: list, flip: bool = True) -> np.ndarray:
        """One embedding per photo (its selected face); a photo without a face is an error naming it."""
        crops = []
        for p in photos:
            crop, how = self.align_one(load_item(p))
            if how == "fallback":
                by = self.spec.get("preprocessing", {}).get("detector") if self.spec else self.embedder.name
                raise FormatError(f"{p}: no face found ({by}); enrol photos where the face is visible")
            crops.append(crop)
        return self.embed_aligned(crops, flip)

    def name_embeddings(self, emb: np.ndarray, gallery=None):
        """(best person index, score, the names, the acceptance threshold) for embeddings, by the
        enrolment gallery when it has people (``gallery``: another one to use, e.g. a reloaded one),
        else by the bundle's classifier."""
        g = self.gallery if gallery is None else gallery
        use_gallery = g is not None and len(g.names) > 0
        if not use_gallery and self.classifier is None:
            raise ConfigError("identify needs people: enrol some (recface enroll) or export with a classifier")
        if use_gallery:
            thr = g.threshold if g.threshold is not None else self.threshold
            if thr is None:
                raise ConfigError("identify with a gallery needs a threshold: the model has none (export a run "
                                  "validated on a pair set), or give one with recface enroll --threshold T")
            if not len(emb):
                return np.zeros(0, int), np.zeros(0, np.float32), g.names, thr
            idx, scores = g.search(emb)
            return idx, scores, g.names, thr
        if not len(emb):
            return np.zeros(0, int), np.zeros(0, np.float32), self.classifier.names, self.classifier.threshold
        idx, scores = self.classifier.predict_scores(emb)
        return idx, scores, self.classifier.names, self.classifier.threshold

    def identify(self, image, flip: bool = True) -> list[Face]:
        """Every face of the photo, named by the enrolment gallery when it has people (accepted above
        the model's verification threshold or the gallery's own), else by the bundle's classifier."""
        self.name_embeddings(np.zeros((0, self.embedder.dim), np.float32))  # no people: fail before detecting
        img = load_item(image)
        found = self.detect(img)
        if not found:
            return []
        idx, scores, names, thr = self.name_embeddings(self.embed_aligned([c for c, _ in found], flip))
        return [Face([float(v) for v in d.box], None if d.landmarks5 is None else np.asarray(d.landmarks5).tolist(),
                     names[i] if s > thr else None, float(s), float(d.score), names[i])
                for (c, d), i, s in zip(found, idx, scores)]


__all__ = ["Face", "FaceRecognizer"]
