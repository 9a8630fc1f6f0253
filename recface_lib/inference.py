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

from .embedders.model import ModelEmbedder, load_bundle, load_run
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
    def __init__(self, embedder: ModelEmbedder, classifier=None, threshold: float | None = None, gallery=None):
        self.embedder, self.classifier, self.gallery = embedder, classifier, gallery
        self.spec = embedder.spec
        self.size = embedder.size
        self.threshold = threshold if threshold is not None else self.spec.get("verification_threshold")

    # -- loading ------------------------------------------------------------------------------
    @classmethod
    def from_run(cls, run: str | os.PathLike, weights: str = "final") -> "FaceRecognizer":
        return cls(load_run(run, weights))

    @classmethod
    def from_bundle(cls, path: str | os.PathLike, backend: str = "onnx", threads: int = 0) -> "FaceRecognizer":
        from .gallery import Gallery

        emb, files = load_bundle(path, backend, threads)
        gallery = Gallery.load(path, emb.dim, emb.spec.get("weights_sha256"))
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
        """All faces: [(aligned crop, Detection)], aligned as the contract says."""
        a = self.embedder.aligner
        return [(a.align_detection(image, d), d) for d in a.detector.detect_batch([image])[0]]

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
                raise FormatError(f"{p}: no face found ({self.spec.get('preprocessing', {}).get('detector')}); "
                                  "enrol photos where the face is visible")
            crops.append(crop)
        return self.embed_aligned(crops, flip)

    def identify(self, image, flip: bool = True) -> list[Face]:
        """Every face of the photo, named by the enrolment gallery when it has people (accepted above
        the bundle's verification threshold), else by the bundle's classifier."""
        use_gallery = self.gallery is not None and len(self.gallery.names) > 0
        if not use_gallery and self.classifier is None:
            raise ConfigError("identify needs people: enrol some (recface enroll) or export with a classifier")
        gallery_thr = self.gallery.threshold if use_gallery and self.gallery.threshold is not None else self.threshold
        if use_gallery and gallery_thr is None:
            raise ConfigError("identify with a gallery needs a threshold: the bundle has none (export a run validated "
                              "on a pair set), or give one with recface enroll --threshold T")
        img = load_item(image)
        found = self.detect(img)
        if not found:
            return []
        emb = self.embed_aligned([c for c, _ in found], flip)
        if use_gallery:
            idx, scores = self.gallery.search(emb)
            names, thr = self.gallery.names, gallery_thr
        else:
            idx, scores = self.classifier.predict_scores(emb)
            names, thr = self.classifier.names, self.classifier.threshold
        return [Face([float(v) for v in d.box], None if d.landmarks5 is None else np.asarray(d.landmarks5).tolist(),
                     names[i] if s > thr else None, float(s), float(d.score), names[i])
                for (c, d), i, s in zip(found, idx, scores)]


__all__ = ["Face", "FaceRecognizer"]
