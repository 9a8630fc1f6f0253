"""``recface export``: a self-describing production bundle (one .zip) from a training run.

Contents: ``embedding.keras`` (Keras 3), ``saved_model/`` (TF SavedModel, serving signature),
``model.onnx`` (Keras' ONNX export via tf2onnx), ``model.tflite`` (float32), ``recface.json``
and, when given, ``classifier.json`` + ``classifier.npz``. recface.json records what inference
needs to reproduce training exactly (input size, RGB colour order, normalisation, embedding size,
alignment method, template, detector settings, verification threshold) plus the training data,
metrics, and the result of checking every format against the Keras model on real aligned faces
(cosine >= 0.9999 for float formats, else the export fails). The zip is written to a temporary
name and renamed."""
from __future__ import annotations

import datetime
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bundle import write_bundle
from .config import StageConfig, param
from .errors import ConfigError, FormatError
from .manifest import check_contract, check_not_input, fingerprint, read_manifest, write_manifest

FORMATS = ("keras", "saved_model", "onnx", "tflite")
MIN_COSINE = 0.9999


@dataclass
class ExportConfig(StageConfig):
    run: str = param("", "training run folder (model.json, final/, best/)", role="input")
    output: str = param("", "bundle path (.zip), never inside the run folder or any input", role="output")
    check_images: str = param("", "face photos the exported formats are checked on (aligned crops or photos)", role="input")
    classifier: str = param("", "classifier folder fitted with this model ('' : none)", role="input")
    weights: str = param("final", "final, or a validation set's best weights")
    formats: list = param(list(FORMATS), "formats in the bundle: keras, saved_model, onnx, tflite")
    identify: list = param([], "photos to identify with the bundle (onnxruntime) after export")

    def validate(self, where=""):
        for k in ("run", "output", "check_images"):
            if not getattr(self, k):
                raise ConfigError(f"{where}{k}: required")
        check_formats(self.formats, where)


def check_formats(formats, where: str = "") -> None:
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(f"{where}formats: unknown {', '.join(map(str, unknown))}; valid: {', '.join(FORMATS)}")


def run(cfg: ExportConfig | dict, show_progress: bool = True) -> dict:
    """The export stage: the bundle, then (optionally) photos identified with it via onnxruntime."""
    if isinstance(cfg, dict):
        cfg = ExportConfig.from_dict(cfg)
    res = export(cfg.run, cfg.output, cfg.check_images, cfg.classifier or None, cfg.weights, tuple(cfg.formats))
    if cfg.identify:
        from .inference import FaceRecognizer
        rec = FaceRecognizer.from_bundle(cfg.output, "onnx")
        res["identified"] = {p: [f.to_json() for f in rec.identify(p)] for p in cfg.identify}
    return res


def _check_faces(embedder, folder: str | os.PathLike | None, n: int) -> list[np.ndarray]:
    from .data.image_folder import list_images
    from .io_utils import read_image

    if folder is None:
        raise ConfigError("check_images: give a folder of face photos (aligned or not) to check the formats on")
    paths = list_images(folder)[:n]
    if not paths:
        raise ConfigError(f"{folder}: no images to check the exported formats on")
    return [embedder.prepare(read_image(p))[0] for p in paths]


def check_classifier(classifier, ident: str, dim: int, run: Path, weights: str) -> dict:
    """The classifier's metadata if it was fitted with exactly these weights (content hash) and
    embedding size; else an error saying how to fit the right one."""
    c = Path(classifier)
    for k in ("classifier.json", "classifier.npz"):
        if not (c / k).is_file():
            raise ConfigError(f"classifier: {c / k} not found (a `recface classify --output` folder's classifier/)")
    try:
        cmeta = json.loads((c / "classifier.json").read_text())
    except (OSError, ValueError) as e:
        raise FormatError(f"{c / 'classifier.json'}: unreadable ({e})") from e
    if not isinstance(cmeta, dict) or cmeta.get("embedder_id") != ident or int(cmeta.get("dim", -1)) != dim:
        cmeta = cmeta if isinstance(cmeta, dict) else {}
        raise ConfigError(f"classifier: {c} was fitted on {cmeta.get('dim')}-d embeddings of "
                          f"{cmeta.get('embedder') or 'another embedder'} (weights {cmeta.get('embedder_id') or 'unknown'}); "
                          f"this model's {weights} weights are {ident} ({dim}-d). Fit it again with embedder: {run}")
    return cmeta


def export(run: str | os.PathLike, out: str | os.PathLike, check_images: str | os.PathLike | None = None,
           classifier: str | os.PathLike | None = None, weights: str = "final", formats=FORMATS,
           check_count: int = 32) -> dict:
    import tensorflow as tf

    from . import __version__
    from .embedders.factory import model_identity
    from .embedders.model import KerasBackend, OnnxBackend, load_run, preprocess, run_weights

    check_formats(formats)
    run = Path(run)
    check_not_input(out, {"run": run, "check_images": check_images, "classifier": classifier}, "export")
    emb = load_run(run, weights)
    contract = check_contract(emb.contract, f"{run}/model.json", model=True)
    model, spec = emb.backend.model, dict(emb.spec)
    ident = model_identity(str(run), weights)
    cmeta = check_classifier(classifier, ident, int(spec["embd_shape"]), run, weights) if classifier else None
    faces = _check_faces(emb, check_images, check_count)
    x = preprocess(faces, emb.size, emb.normalization)
    ref = np.asarray(model(x, training=False), np.float64)

    def cos_min(e):
        e = np.asarray(e, np.float64)
        num = (e * ref).sum(1)
        return float((num / (np.linalg.norm(e, axis=1) * np.linalg.norm(ref, axis=1))).min())

    checks, members = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        if "keras" in formats:
            model.save(t / "embedding.keras")
            checks["keras"] = cos_min(KerasBackend(spec, keras_file=str(t / "embedding.keras"))(x))
            members["embedding.keras"] = t / "embedding.keras"
        if "saved_model" in formats or "tflite" in formats:
            model.export(str(t / "saved_model"), format="tf_saved_model", verbose=False)
            sm = tf.saved_model.load(str(t / "saved_model"))
            checks["saved_model"] = cos_min(sm.serve(tf.constant(x)).numpy())
        if "onnx" in formats:
            model.export(str(t / "model.onnx"), format="onnx", verbose=False)
            checks["onnx"] = cos_min(OnnxBackend((t / "model.onnx").read_bytes())(x))
            members["model.onnx"] = t / "model.onnx"
        if "tflite" in formats:
            conv = tf.lite.TFLiteConverter.from_saved_model(str(t / "saved_model"))
            (t / "model.tflite").write_bytes(conv.convert())
            interp = tf.lite.Interpreter(model_path=str(t / "model.tflite"))
            inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
            interp.resize_tensor_input(inp["index"], x.shape)
            interp.allocate_tensors()
            interp.set_tensor(inp["index"], x)
            interp.invoke()
            checks["tflite"] = cos_min(interp.get_tensor(outp["index"]))
            members["model.tflite"] = t / "model.tflite"
        failed = {k: v for k, v in checks.items() if v < MIN_COSINE}
        if failed:
            raise FormatError(f"{run}: exported formats disagree with the Keras model on {len(faces)} faces: "
                              + ", ".join(f"{k} min cosine {v:.6f}" for k, v in failed.items()))
        manifest = read_manifest(run) or {}
        best = manifest.get("summary", {}).get("best", {})
        thr = next((b.get("threshold") for b in best.values() if b.get("threshold") is not None), None)
        meta = {**spec, "format_version": 2, "recface_version": __version__,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "input": {"size": emb.size, "color_order": "RGB", "layout": "NHWC float32",
                          "normalization": emb.normalization},
                "preprocessing": contract,
                "verification_threshold": thr, "flip_tta": True, "weights_sha256": ident,
                "training": {"run": str(run), "weights": weights, "dataset": spec.get("dataset"),
                             "metrics": {k: manifest.get("summary", {}).get(k) for k in ("loss", "accuracy", "validation", "best", "global_step")}},
                "formats": {k: {"checked_min_cosine": round(v, 7)} for k, v in checks.items()},
                "check": {"faces": len(faces), "source": str(check_images), "min_cosine_required": MIN_COSINE},
                "classifier": None}
        out = Path(out)
        if "saved_model" in formats:
            members["saved_model"] = t / "saved_model"
        if classifier:
            members.update({k: Path(classifier) / k for k in ("classifier.json", "classifier.npz")})
            meta["classifier"] = {k: v for k, v in cmeta.items() if k != "params"}
        write_bundle(out, meta, members)
    write_manifest(out, "export", {"weights": weights, "formats": list(formats)},
                   {"run": fingerprint(run / "model.json"), "weights": run_weights(run, weights),
                    "classifier": classifier or None}, {"formats": len(checks)}, contract)
    return {"bundle": str(out), "bytes": out.stat().st_size, "checks": checks, "formats": list(checks),
            "classifier": bool(classifier), "verification_threshold": thr}


__all__ = ["ExportConfig", "run", "export", "FORMATS"]
