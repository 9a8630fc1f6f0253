"""Image in, identity out: detect -> align (exactly as recorded with the model) -> embed -> identify.

``FaceRecognizer.from_bundle("weights/NAME.zip")`` loads an export bundle (``backend="onnx"`` runs
with onnxruntime only: TensorFlow is never imported), ``FaceRecognizer.from_run(run_dir)`` a
training run. Methods: ``identify(image) -> [Face]``, ``embed(image)``, ``verify(img1, img2)``,
``embed_aligned(faces)``, and ``embed_items(items)`` (the worker entry point used by verification
and classification: paths/bytes -> embeddings, mirrored embeddings, detection stats).

Images are RGB uint8 HxWx3 (``io_utils.read_image``). An image that already has the model's input
size is taken as an aligned crop (``.bin`` sets, aligned folders); anything else is detected and
aligned with the recorded detector and template."""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError, FormatError
from .io_utils import load_item

DEFAULT_ALIGNMENT = {"detector": "mtcnn", "method": "landmarks", "min_prob": 0.4, "select": "center"}


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


class KerasBackend:
    def __init__(self, spec: dict, weights: str | os.PathLike | None = None, keras_file: str | None = None):
        import recface_lib  # noqa: F401
        import keras

        if keras_file:
            from .models import heads  # noqa: F401  (registers custom layers)
            from .models.backbones import seesaw  # noqa: F401
            self.model = keras.saving.load_model(keras_file, compile=False, safe_mode=True)
        else:
            from .models.build import build_backbone
            self.model = build_backbone(spec["backbone"], spec["input_size"], spec["embd_shape"])
            self.model.load_weights(str(weights))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(x, training=False), np.float32)


class OnnxBackend:
    def __init__(self, onnx_bytes: bytes, threads: int = 0):
        import onnxruntime as ort

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
        self.input = self.sess.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.sess.run(None, {self.input: x.astype(np.float32)})[0], np.float32)


class FaceRecognizer:
    def __init__(self, spec: dict, backend, classifier=None, threshold: float | None = None):
        self.spec, self.backend, self.classifier = spec, backend, classifier
        self.size = int(spec["input_size"])
        self.normalization = spec["normalization"]
        if spec.get("color_order", "RGB") != "RGB":
            raise ConfigError(f"model expects {spec['color_order']} input; recface models are RGB")
        self.alignment = {**DEFAULT_ALIGNMENT, **(spec.get("alignment") or {})}
        self.threshold = threshold if threshold is not None else spec.get("verification_threshold")
        self._aligner = None

    # -- loading ------------------------------------------------------------------------------
    @classmethod
    def from_run(cls, run: str | os.PathLike, weights: str = "final") -> "FaceRecognizer":
        d = Path(run)
        spec_p = d / "model.json"
        if not spec_p.is_file():
            raise FormatError(f"{d}: no model.json (not a finished training run)")
        spec = json.loads(spec_p.read_text())
        w = d / "final" / "backbone.weights.h5" if weights == "final" else d / "best" / f"{weights}.weights.h5"
        if not w.is_file():
            raise FormatError(f"{w}: weights not found")
        return cls(spec, KerasBackend(spec, w))

    @classmethod
    def from_bundle(cls, path: str | os.PathLike, backend: str = "onnx", threads: int = 0) -> "FaceRecognizer":
        from .export import open_bundle

        spec, files = open_bundle(path, need=("model.onnx",) if backend == "onnx" else ("embedding.keras",))
        if backend == "onnx":
            be = OnnxBackend(files["model.onnx"], threads)
        elif backend == "keras":
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                p = Path(tmp) / "embedding.keras"
                p.write_bytes(files["embedding.keras"])
                be = KerasBackend(spec, keras_file=str(p))
        else:
            raise ConfigError(f"backend: unknown {backend!r}; valid: onnx, keras")
        clf = None
        if "classifier.json" in files:
            import tempfile

            from .evaluate.classifier import Classifier
            with tempfile.TemporaryDirectory() as tmp:
                for k in ("classifier.json", "classifier.npz"):
                    (Path(tmp) / k).write_bytes(files[k])
                clf = Classifier.load(tmp)
        return cls(spec, be, clf)

    # -- embedding ----------------------------------------------------------------------------
    def embed_aligned(self, faces: list[np.ndarray], flip: bool = True, batch_size: int = 64) -> np.ndarray:
        """Aligned crops -> L2-normalised embeddings (with flip: of the sum with the mirrored crop's)."""
        from .evaluate.verification import l2_normalize
        from .models.embedder import preprocess

        out = []
        for s in range(0, len(faces), batch_size):
            x = preprocess(faces[s:s + batch_size], self.size, self.normalization)
            e = l2_normalize(self.backend(x))
            if flip:
                e = l2_normalize(e + l2_normalize(self.backend(np.ascontiguousarray(x[:, :, ::-1]))))
            out.append(e)
        return np.concatenate(out) if out else np.zeros((0, int(self.spec["embd_shape"])), np.float32)

    @property
    def aligner(self):
        if self._aligner is None:
            from .align.pipeline import Aligner
            a = self.alignment
            self._aligner = Aligner(detector=a["detector"], method=a["method"], size=self.size,
                                    min_prob=float(a.get("min_prob", 0.4)), select=a.get("select", "center"),
                                    on_failure="keep")
        return self._aligner

    def detect(self, image: np.ndarray):
        """All faces: [(aligned crop, Detection)]."""
        dets = self.aligner.detector.detect_batch([image])[0]
        return [(self.aligner.align_detection(image, d), d) for d in dets]

    def align_one(self, image: np.ndarray) -> tuple[np.ndarray, str]:
        """The labelled face of a photo (the one nearest the centre) or the photo itself if aligned."""
        if image.shape[:2] == (self.size, self.size):
            return image, "aligned"
        (crop, status, _), = self.aligner.align_images([image])
        return crop, "detected" if status == "detected" else "fallback"

    def embed(self, image, flip: bool = True) -> np.ndarray:
        crop, _ = self.align_one(load_item(image))
        return self.embed_aligned([crop], flip)[0]

    def verify(self, img1, img2, flip: bool = True) -> dict:
        e1, e2 = self.embed(img1, flip), self.embed(img2, flip)
        cos = float(e1 @ e2)
        same = None if self.threshold is None else bool(cos > self.threshold)
        return {"cosine": cos, "same": same, "threshold": self.threshold}

    def identify(self, image, flip: bool = True) -> list[Face]:
        img = load_item(image)
        found = self.detect(img)
        if not found:
            return []
        emb = self.embed_aligned([c for c, _ in found], flip)
        if self.classifier is None:
            raise ConfigError("identify needs a classifier in the bundle (export with --classifier DIR)")
        idx, scores = self.classifier.predict_scores(emb)
        return [Face([float(v) for v in d.box], None if d.landmarks5 is None else np.asarray(d.landmarks5).tolist(),
                     self.classifier.names[i] if s > self.classifier.threshold else None, float(s), float(d.score),
                     self.classifier.names[i]) for (c, d), i, s in zip(found, idx, scores)]

    def embed_items(self, items: list) -> tuple[np.ndarray, np.ndarray, dict]:
        """Worker entry point: (embeddings, mirrored-crop embeddings, {how: count})."""
        crops, stats = [], {}
        for it in items:
            c, how = self.align_one(load_item(it))
            crops.append(c)
            stats[how] = stats.get(how, 0) + 1
        return self.embed_aligned(crops, flip=False), self.embed_aligned([np.ascontiguousarray(c[:, ::-1]) for c in crops], flip=False), stats


def make_recognizer(spec: str, backend: str = "keras") -> FaceRecognizer:
    """A run folder (model.json) or a bundle .zip."""
    p = Path(spec)
    if p.is_file():
        if not zipfile.is_zipfile(p):
            raise FormatError(f"{p}: not a zip file (an export bundle is a .zip)")
        return FaceRecognizer.from_bundle(p, backend="onnx" if backend == "auto" else backend)
    if p.is_dir():
        return FaceRecognizer.from_run(p)
    raise ConfigError(f"embedder: {spec!r} is neither 'dlib_resnet', a training run folder nor a bundle .zip")
