"""The ``dlib_resnet`` reference embedder: dlib's ResNet face descriptor
(``dlib_face_recognition_resnet_model_v1.dat`` from face-recognition-models; published at 99.38%
on LFW) with dlib's own chain: HOG detector (upsample 0, 1, 2 until a face is found), then the MMOD
CNN detector, face nearest the image centre, 5-point shape, dlib's 150x150 face chip (padding 0.25).
Where no detector finds a face, the central box of the image is used and counted as a fallback.

It takes raw (unaligned) RGB images, so any pair set or folder can be scored against a published
model out of the box."""
from __future__ import annotations

import numpy as np

from ..align.detectors import Detection, DlibHOG, DlibLandmarks, DlibMMOD, central_box, models_dir, select_face
from .base import Embedder


class DlibResNetEmbedder(Embedder):
    name = "dlib_resnet"
    dim = 128
    threshold = 0.82  # face_recognition's tolerance 0.6 (Euclidean, unit vectors): cosine 1 - 0.6^2 / 2

    def __init__(self, upsamples=(0, 1, 2), use_mmod: bool = True, fallback_fraction: float = 0.5,
                 select: str = "center", num_jitters: int = 0):
        import dlib

        lm = DlibLandmarks("5")
        self.sp = lm.predictor
        hog = DlibHOG(landmarks=lm)
        # the chain, in order: (name in the stats, detector, upsample)
        self.chain = [(f"hog{u}", hog, u) for u in upsamples]
        if use_mmod:
            self.chain.append(("mmod", DlibMMOD(landmarks=lm), 1))
        self.fallback_fraction = fallback_fraction
        self.select = select
        self.num_jitters = int(num_jitters)
        self.facerec = dlib.face_recognition_model_v1(str(models_dir() / "dlib_face_recognition_resnet_model_v1.dat"))

    def _box(self, img: np.ndarray) -> tuple[np.ndarray, str]:
        for name, det, up in self.chain:
            found = det.boxes(img, up)
            if found:
                return select_face([Detection(b, s) for b, s in found], img.shape, self.select).box, name
        return central_box(img.shape, self.fallback_fraction), "fallback"

    def chip(self, img: np.ndarray) -> tuple[np.ndarray, str]:
        """dlib's 150x150 face chip, and which step of the chain found the face."""
        import dlib

        img = np.ascontiguousarray(img)
        box, how = self._box(img)
        x1, y1, x2, y2 = [int(round(v)) for v in box]
        shape = self.sp(img, dlib.rectangle(x1, y1, x2, y2))
        return np.asarray(dlib.get_face_chip(img, shape, size=150, padding=0.25)), how

    def faces(self, image: np.ndarray) -> list:
        """Every face the first step of the chain that finds any finds (no fallback box), as dlib's chip."""
        import dlib

        img = np.ascontiguousarray(image)
        for _, det, up in self.chain:
            found = det.boxes(img, up)
            if found:
                out = []
                for b, sc in found:
                    x1, y1, x2, y2 = [int(round(v)) for v in b]
                    shape = self.sp(img, dlib.rectangle(x1, y1, x2, y2))
                    out.append((np.asarray(dlib.get_face_chip(img, shape, size=150, padding=0.25)),
                                Detection(np.asarray(b, np.float64), float(sc))))
                return out
        return []

    def embed_chips(self, chips: list[np.ndarray]) -> np.ndarray:
        if not chips:
            return np.zeros((0, self.dim))
        return np.asarray(self.facerec.compute_face_descriptor([np.ascontiguousarray(c) for c in chips],
                                                               self.num_jitters), dtype=np.float64)

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, str]:
        return self.chip(image)

    def embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        return self.embed_chips(crops)
