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
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import ConfigError, FormatError
from .io_utils import atomic_path

FORMATS = ("keras", "saved_model", "onnx", "tflite")
MIN_COSINE = 0.9999


def open_bundle(path: str | os.PathLike, need: tuple = ()) -> tuple[dict, dict[str, bytes]]:
    """(recface.json, {member: bytes}) of a bundle; a clear error for a corrupt or partial zip."""
    p = Path(path)
    try:
        with zipfile.ZipFile(p) as z:
            bad = z.testzip()
            if bad:
                raise FormatError(f"{p}: member {bad} is corrupt (CRC mismatch)")
            names = set(z.namelist())
            if "recface.json" not in names:
                raise FormatError(f"{p}: no recface.json (not a recface bundle)")
            spec = json.loads(z.read("recface.json"))
            missing = [m for m in need if m not in names]
            if missing:
                raise FormatError(f"{p}: bundle lacks {', '.join(missing)} (has {', '.join(sorted(names))})")
            files = {n: z.read(n) for n in names if not n.startswith("saved_model/")}
    except zipfile.BadZipFile as e:
        raise FormatError(f"{p}: not a valid zip file ({e}); the bundle is truncated or damaged") from e
    except (OSError, EOFError, zlib.error) as e:
        raise FormatError(f"{p}: cannot read the bundle ({e}); it is damaged") from e
    except json.JSONDecodeError as e:
        raise FormatError(f"{p}: recface.json is not valid JSON ({e})") from e
    return spec, files


def _check_faces(rec, folder: str | os.PathLike | None, n: int) -> list[np.ndarray]:
    from .data.image_folder import list_images
    from .io_utils import read_image

    if folder is None:
        raise ConfigError("check_images: give a folder of face photos (aligned or not) to check the formats on")
    paths = list_images(folder)[:n]
    if not paths:
        raise ConfigError(f"{folder}: no images to check the exported formats on")
    return [rec.align_one(read_image(p))[0] for p in paths]


def export(run: str | os.PathLike, out: str | os.PathLike, check_images: str | os.PathLike | None = None,
           classifier: str | os.PathLike | None = None, weights: str = "final", formats=FORMATS,
           check_count: int = 32) -> dict:
    import recface_lib  # noqa: F401
    import tensorflow as tf

    from . import __version__
    from .inference import FaceRecognizer, OnnxBackend
    from .models.embedder import preprocess

    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(f"formats: unknown {', '.join(unknown)}; valid: {', '.join(FORMATS)}")
    run = Path(run)
    rec = FaceRecognizer.from_run(run, weights)
    model, spec = rec.backend.model, dict(rec.spec)
    faces = _check_faces(rec, check_images, check_count)
    x = preprocess(faces, rec.size, rec.normalization)
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
            from .inference import KerasBackend
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
        manifest = _read_json(run / "manifest.json")
        best = manifest.get("summary", {}).get("best", {})
        thr = next((b.get("threshold") for b in best.values() if b.get("threshold") is not None), None)
        from .align.template import ARCFACE_TEMPLATE_112
        meta = {**spec, "format_version": 1, "recface_version": __version__,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "input": {"size": rec.size, "color_order": "RGB", "layout": "NHWC float32",
                          "normalization": rec.normalization},
                "alignment": {**rec.alignment, "size": rec.size,
                              "template": (np.asarray(ARCFACE_TEMPLATE_112) * rec.size / 112).round(4).tolist()},
                "verification_threshold": thr, "flip_tta": True,
                "training": {"run": str(run), "weights": weights, "dataset": spec.get("dataset"),
                             "metrics": {k: manifest.get("summary", {}).get(k) for k in ("loss", "accuracy", "validation", "best", "global_step")}},
                "formats": {k: {"checked_min_cosine": round(v, 7)} for k, v in checks.items()},
                "check": {"faces": len(faces), "source": str(check_images), "min_cosine_required": MIN_COSINE},
                "classifier": None}
        out = Path(out)
        with atomic_path(out, suffix=".zip") as tmpzip:
            with zipfile.ZipFile(tmpzip, "w", zipfile.ZIP_DEFLATED) as z:
                for name, p in members.items():
                    z.write(p, name)
                if "saved_model" in formats:
                    for f in sorted((t / "saved_model").rglob("*")):
                        if f.is_file():
                            z.write(f, f"saved_model/{f.relative_to(t / 'saved_model')}")
                if classifier:
                    c = Path(classifier)
                    for k in ("classifier.json", "classifier.npz"):
                        if not (c / k).is_file():
                            raise ConfigError(f"classifier: {c / k} not found (a `recface classify --out` folder's classifier/)")
                        z.write(c / k, k)
                    cmeta = json.loads((c / "classifier.json").read_text())
                    emb_src = cmeta.get("embedder") or ""
                    same_model = emb_src and (emb_src != "dlib_resnet" and Path(emb_src).resolve() == run.resolve())
                    if not same_model or int(cmeta.get("dim", -1)) != int(spec["embd_shape"]):
                        raise ConfigError(f"classifier: {c} was fitted on {cmeta.get('dim')}-d embeddings of "
                                          f"{cmeta.get('embedder') or 'another embedder'}; this model gives "
                                          f"{spec['embd_shape']}-d. Fit it with --embedder {run}")
                    meta["classifier"] = {k: v for k, v in cmeta.items() if k != "params"}
                z.writestr("recface.json", json.dumps(meta, indent=1, default=str))
    return {"bundle": str(out), "bytes": out.stat().st_size, "checks": checks, "formats": list(checks),
            "classifier": bool(classifier), "verification_threshold": thr}


def _read_json(p: Path) -> dict:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


__all__ = ["export", "open_bundle", "FORMATS"]
