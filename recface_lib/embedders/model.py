"""Trained models as embedders: a training run (Keras) or an export bundle (onnxruntime or Keras),
fed exactly as the model's preprocessing contract says.

``ModelEmbedder.prepare`` takes an image that already has the contract's crop size (or the
model's input size) as aligned; any other image is detected and aligned with the contract's
detector, method and template (``align_unaligned=False`` resizes it instead: the trainer's
validation on pre-aligned pair sets). A model without a contract can only embed aligned crops."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..bundle import open_bundle
from ..data.input_pipeline import NORMALIZATIONS, normalize
from ..errors import ConfigError, FormatError
from ..manifest import check_contract
from .base import Embedder


# bundle member of each TFLite format (export writes them, load_bundle reads them)
TFLITE_MEMBERS = {"tflite": "model.tflite", "tflite_fp16": "model_fp16.tflite", "tflite_int8": "model_int8.tflite"}


def preprocess(images, input_size: int, normalization: str) -> np.ndarray:
    """RGB uint8 images -> float32 batch in the model's input range (numpy twin of the tf.data path)."""
    import cv2

    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"normalization: unknown {normalization!r}; valid: {', '.join(NORMALIZATIONS)}")
    out = np.empty((len(images), input_size, input_size, 3), np.float32)
    for i, im in enumerate(images):
        if im.ndim == 2:
            im = np.repeat(im[:, :, None], 3, axis=2)
        if im.shape[:2] != (input_size, input_size):
            im = cv2.resize(im, (input_size, input_size), interpolation=cv2.INTER_AREA)
        out[i] = im
    return normalize(out / 255.0, normalization).astype(np.float32)


class KerasBackend:
    """A Keras embedding model: a live model, weights of a run, or a ``.keras`` file."""

    def __init__(self, spec: dict | None = None, weights: str | os.PathLike | None = None,
                 keras_file: str | None = None, model=None):
        if model is not None:
            self.model = model
        elif keras_file:
            import keras

            from ..models import heads  # noqa: F401  (registers custom layers)
            from ..models.backbones import seesaw  # noqa: F401
            self.model = keras.saving.load_model(keras_file, compile=False, safe_mode=True)
        else:
            from ..models.build import build_backbone
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


def tflite_interpreter(model: bytes, threads: int = 0):
    """A TFLite interpreter from the lightest runtime installed: ``ai-edge-litert``, then
    ``tflite-runtime``, then TensorFlow's own ``tf.lite`` (the full TensorFlow)."""
    import importlib

    for name in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        return mod.Interpreter(model_content=model, num_threads=threads or None)
    import tensorflow as tf
    return tf.lite.Interpreter(model_content=model, num_threads=threads or None)


def tensor_types(interp) -> dict:
    """The input and output tensors' types and int8 quantisation (recorded in recface.json)."""
    def one(d):
        scale, zero = d.get("quantization", (0.0, 0))
        return {"dtype": np.dtype(d["dtype"]).name, "scale": float(scale), "zero_point": int(zero)}
    return {"input": one(interp.get_input_details()[0]), "output": one(interp.get_output_details()[0])}


class TfliteBackend:
    """A TFLite model (float32, float16 or full-integer int8): float32 in, float32 out; an integer
    model's input is quantised and its output dequantised with the tensors' own scale and zero point."""

    def __init__(self, model: bytes, threads: int = 0):
        self.interp = tflite_interpreter(model, threads)
        self.inp, self.out = self.interp.get_input_details()[0], self.interp.get_output_details()[0]
        self.shape = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        it = self.interp
        if self.shape != x.shape:
            it.resize_tensor_input(self.inp["index"], list(x.shape))
            it.allocate_tensors()
            self.shape = x.shape
        dt = np.dtype(self.inp["dtype"])
        if dt.kind in "iu":
            scale, zero = self.inp["quantization"]
            info = np.iinfo(dt)
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(dt)
        it.set_tensor(self.inp["index"], np.ascontiguousarray(x, dt))
        it.invoke()
        y = it.get_tensor(self.out["index"])
        if np.dtype(self.out["dtype"]).kind in "iu":
            scale, zero = self.out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return np.asarray(y, np.float32)


class ModelEmbedder(Embedder):
    def __init__(self, spec: dict, backend, name: str = "model", batch_size: int = 64,
                 align_unaligned: bool = True):
        self.spec, self.backend, self.name, self.batch_size = spec, backend, name, batch_size
        self.size = int(spec["input_size"])
        self.dim = int(spec["embd_shape"])
        self.normalization = spec["normalization"]
        if spec.get("color_order", "RGB") != "RGB":
            raise ConfigError(f"{name}: model expects {spec['color_order']} input; recface models are RGB")
        self.contract = spec.get("preprocessing")
        self.align_unaligned = align_unaligned
        self._aligner = None

    @property
    def crop_size(self) -> int:
        return int(self.contract["size"]) if self.contract else self.size

    @property
    def aligner(self):
        """The align stage's Aligner with the contract's parameters (built on first use)."""
        if self._aligner is None:
            from ..align.config import AlignConfig
            from ..align.pipeline import Aligner

            c = check_contract(self.contract, self.name)
            self._aligner = Aligner(**AlignConfig.from_contract(c, on_failure="keep").to_dict())
        return self._aligner

    def is_aligned(self, image: np.ndarray) -> bool:
        return image.shape[:2] in ((self.crop_size, self.crop_size), (self.size, self.size))

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, str]:
        if self.is_aligned(image):
            return image, "aligned"
        if not self.align_unaligned:
            return image, "resized"
        if self.contract is None:
            raise FormatError(f"{self.name}: a {image.shape[1]}x{image.shape[0]} photo needs aligning, but this "
                              "model has no preprocessing contract (its data was not aligned by recface and declared "
                              f"none); give aligned {self.size}x{self.size} crops")
        (crop, status, _), = self.aligner.align_images([image])
        return crop, "detected" if status in ("detected", "manual") else "fallback"

    def faces(self, image: np.ndarray) -> list:
        a = self.aligner
        return [(a.align_detection(image, d), d) for d in a.detector.detect_batch([image])[0]]

    def prepare_many(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """``prepare`` for many images, the unaligned ones detected in batches (MTCNN batches
        same-size images): crops only."""
        out = list(images)
        todo = [i for i, im in enumerate(images) if not self.is_aligned(im)]
        if todo and self.align_unaligned:
            if self.contract is None:
                self.prepare(images[todo[0]])  # the error naming the missing contract
            for i, (crop, _, _) in zip(todo, self.aligner.align_images([images[i] for i in todo])):
                out[i] = crop
        return out

    def prepare_landmarks(self, image: np.ndarray, landmarks5: np.ndarray) -> tuple[np.ndarray, str]:
        if self.contract is not None and self.contract.get("method") == "landmarks":
            from ..align.template import warp_to_template
            return warp_to_template(image, landmarks5, self.crop_size), "landmarks"
        return self.prepare(image)

    def embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        out = [self.backend(preprocess(crops[s:s + self.batch_size], self.size, self.normalization))
               for s in range(0, len(crops), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


def read_run_spec(run: str | os.PathLike) -> dict:
    p = Path(run) / "model.json"
    if not p.is_file():
        raise FormatError(f"{run}: no model.json (not a finished training run)")
    try:
        return json.loads(p.read_text())
    except ValueError as e:
        raise FormatError(f"{p}: not valid JSON ({e})") from e


def weights_threshold(spec: dict, weights: str = "final") -> float | None:
    """The verification threshold (cosine similarity) a run recorded for these weights
    (``final`` or a pair set's best): its first pair set's, None where it validated none."""
    sets = (spec.get("verification_thresholds") or {}).get(weights) or {}
    first = next(iter(sets.values()), None)
    return None if first is None else float(first["cosine"])


def run_weights(run: str | os.PathLike, weights: str = "final") -> Path:
    d = Path(run)
    w = d / "final" / "backbone.weights.h5" if weights == "final" else d / "best" / f"{weights}.weights.h5"
    if not w.is_file():
        raise FormatError(f"{w}: weights not found")
    return w


def load_run(run: str | os.PathLike, weights: str = "final", **kw) -> ModelEmbedder:
    spec = read_run_spec(run)
    return ModelEmbedder(spec, KerasBackend(spec, run_weights(run, weights)), name=str(run), **kw)


def load_bundle(path: str | os.PathLike, backend: str = "onnx", threads: int = 0) -> tuple[ModelEmbedder, dict]:
    """(embedder, the bundle's member files); a bundle without a complete preprocessing contract is
    refused."""
    need = {"onnx": ("model.onnx",), "keras": ("embedding.keras",), **{k: (v,) for k, v in TFLITE_MEMBERS.items()}}
    if backend not in need:
        raise ConfigError(f"backend: unknown {backend!r}; valid: {', '.join(need)}")
    spec, files = open_bundle(path, need=need[backend])
    check_contract(spec.get("preprocessing"), f"{path} (recface.json)", model=True)
    if backend == "onnx":
        be = OnnxBackend(files["model.onnx"], threads)
    elif backend in TFLITE_MEMBERS:
        be = TfliteBackend(files[TFLITE_MEMBERS[backend]], threads)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "embedding.keras"
            p.write_bytes(files["embedding.keras"])
            be = KerasBackend(keras_file=str(p))
    return ModelEmbedder(spec, be, name=str(path)), files
