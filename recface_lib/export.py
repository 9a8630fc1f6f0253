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

FORMATS = ("keras", "saved_model", "onnx", "tflite", "tflite_fp16", "tflite_int8")
FLOAT_FORMATS = ("keras", "saved_model", "onnx", "tflite")
MIN_COSINE = 0.9999  # float formats on the check faces; quantised ones are gated on pair-set accuracy


@dataclass
class ExportConfig(StageConfig):
    run: str = param("", "training run folder (model.json, final/, best/)", role="input")
    output: str = param("", "bundle path (.zip), never inside the run folder or any input", role="output")
    check_images: str = param("", "face photos the exported formats are checked on (aligned crops or photos)", role="input")
    classifier: str = param("", "classifier folder fitted with this model ('' : none)", role="input")
    weights: str = param("final", "final, or a validation set's best weights")
    formats: list = param(list(FLOAT_FORMATS), "formats in the bundle: keras, saved_model, onnx (dynamic batch), "
                          "tflite (float32), tflite_fp16, tflite_int8 (full-integer)")
    pair_set: str = param("", "a .bin pair set every format is scored on next to Keras (accuracy, TAR@FAR 1e-3); "
                              "'' : the run's first validation set; needed for the quantised formats", role="input")
    max_accuracy_drop: float = param(0.5, "refuse a format whose pair-set accuracy is more than this many points "
                                          "below Keras'", lo=0.0, hi=100.0)
    keep_failing: bool = param(False, "keep a format that fails the accuracy gate (recorded, with a warning)")
    representative: str = param("", "int8 calibration: a folder of aligned faces ('' : the run's training faces)",
                                role="input")
    representative_count: int = param(200, "faces the int8 conversion is calibrated on", lo=1, hi=100000)
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
    res = export(cfg.run, cfg.output, cfg.check_images, cfg.classifier or None, cfg.weights, tuple(cfg.formats),
                 pair_set=cfg.pair_set or None, max_accuracy_drop=cfg.max_accuracy_drop, keep_failing=cfg.keep_failing,
                 representative=cfg.representative or None, representative_count=cfg.representative_count)
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


def default_pair_set(run: Path) -> str | None:
    """The run's first validation pair set (train_config.json), if it still exists."""
    try:
        vs = json.loads((run / "train_config.json").read_text()).get("val_sets") or []
    except (OSError, ValueError):
        return None
    return next((str(v) for v in vs if str(v).endswith(".bin") and Path(v).is_file()), None)


def export(run: str | os.PathLike, out: str | os.PathLike, check_images: str | os.PathLike | None = None,
           classifier: str | os.PathLike | None = None, weights: str = "final", formats=FLOAT_FORMATS,
           check_count: int = 32, pair_set: str | None = None, max_accuracy_drop: float = 0.5,
           keep_failing: bool = False, representative: str | None = None, representative_count: int = 200) -> dict:
    import tensorflow as tf

    from . import __version__
    from .embedders.factory import model_identity
    from .embedders.model import (TFLITE_MEMBERS, KerasBackend, OnnxBackend, TfliteBackend, load_run, preprocess,
                                  run_weights, tensor_types, weights_threshold)
    from .quantize import PairParity, convert_tflite, cosine_stats, gate, parity_markdown, representative_faces

    check_formats(formats)
    run = Path(run)
    check_not_input(out, {"run": run, "check_images": check_images, "classifier": classifier, "pair_set": pair_set,
                          "representative": representative}, "export")
    emb = load_run(run, weights)
    contract = check_contract(emb.contract, f"{run}/model.json", model=True)
    model, spec = emb.backend.model, dict(emb.spec)
    ident = model_identity(str(run), weights)
    cmeta = check_classifier(classifier, ident, int(spec["embd_shape"]), run, weights) if classifier else None
    pair_set = pair_set or default_pair_set(run)
    quantised = [f for f in formats if f not in FLOAT_FORMATS]
    if quantised and not pair_set:
        raise ConfigError(f"export: {', '.join(quantised)} must be checked on a pair set (pair_set: a .bin); "
                          "this run has no validation set to default to")
    faces = _check_faces(emb, check_images, check_count)
    x = preprocess(faces, emb.size, emb.normalization)
    keras_run = KerasBackend(model=model)
    ref = keras_run(x)
    pairs = PairParity(pair_set, emb) if pair_set else None

    checks, members, table, types = {}, {}, {}, {}

    def measure(name, runner):
        row = cosine_stats(runner(x), ref)
        if pairs is not None:
            row.update(pairs.score(pairs.embed(runner)))
        table[name] = row
        checks[name] = row["min_cosine"]

    measure("keras", keras_run)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        if "keras" in formats:
            model.save(t / "embedding.keras")
            checks["keras"] = cosine_stats(KerasBackend(spec, keras_file=str(t / "embedding.keras"))(x), ref)["min_cosine"]
            members["embedding.keras"] = t / "embedding.keras"
        else:
            checks.pop("keras")
        if "saved_model" in formats or any(f.startswith("tflite") for f in formats):
            model.export(str(t / "saved_model"), format="tf_saved_model", verbose=False)
            sm = tf.saved_model.load(str(t / "saved_model"))
            sm_run = lambda b: sm.serve(tf.constant(b)).numpy()  # noqa: E731
            if "saved_model" in formats:
                measure("saved_model", sm_run)
        if "onnx" in formats:
            model.export(str(t / "model.onnx"), format="onnx", verbose=False)
            onnx_run = OnnxBackend((t / "model.onnx").read_bytes())
            measure("onnx", onnx_run)
            one = np.concatenate([onnx_run(x[i:i + 1]) for i in range(len(x))])  # the batch axis is dynamic
            table["onnx"]["batch_1_vs_n_max_abs"] = float(np.abs(one - onnx_run(x)).max())
            members["model.onnx"] = t / "model.onnx"
        rep_source = None
        for name in [f for f in formats if f.startswith("tflite")]:
            kind = {"tflite": "float32", "tflite_fp16": "float16", "tflite_int8": "int8"}[name]
            rep = None
            if kind == "int8":
                rep_faces, rep_source = representative_faces(run, spec, representative, representative_count)
                rep = preprocess(rep_faces, emb.size, emb.normalization)
            path = t / TFLITE_MEMBERS[name]
            path.write_bytes(convert_tflite(t / "saved_model", kind, rep))
            runner = TfliteBackend(path.read_bytes())
            measure(name, runner)
            types[name] = tensor_types(runner.interp)
            members[TFLITE_MEMBERS[name]] = path
        failed = {k: v for k, v in checks.items() if k in FLOAT_FORMATS and v < MIN_COSINE}
        if failed:
            raise FormatError(f"{run}: exported formats disagree with the Keras model on {len(faces)} faces: "
                              + ", ".join(f"{k} min cosine {v:.6f}" for k, v in failed.items()))
        warnings = gate(table, max_accuracy_drop, keep_failing)
        manifest = read_manifest(run) or {}
        thr = weights_threshold(spec, weights)  # the threshold of the weights exported
        meta = {**spec, "format_version": 2, "recface_version": __version__,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "input": {"size": emb.size, "color_order": "RGB", "layout": "NHWC float32",
                          "normalization": emb.normalization},
                "preprocessing": contract,
                "verification_threshold": thr, "flip_tta": True, "weights_sha256": ident,
                "training": {"run": str(run), "weights": weights, "dataset": spec.get("dataset"),
                             "metrics": {k: manifest.get("summary", {}).get(k) for k in ("loss", "accuracy", "validation", "best", "global_step")}},
                "formats": {k: {"checked_min_cosine": round(v, 7), **({"tensors": types[k]} if k in types else {})}
                            for k, v in checks.items()},
                "check": {"faces": len(faces), "source": str(check_images), "min_cosine_required": MIN_COSINE},
                "parity": {"pair_set": pair_set, "pairs": len(pairs.issame) if pairs else 0, "faces": len(faces),
                           "max_accuracy_drop_points": max_accuracy_drop, "representative": rep_source,
                           "table": table, "warnings": warnings},
                "classifier": None}
        out = Path(out)
        if "saved_model" in formats:
            members["saved_model"] = t / "saved_model"
        if classifier:
            members.update({k: Path(classifier) / k for k in ("classifier.json", "classifier.npz")})
            meta["classifier"] = {k: v for k, v in cmeta.items() if k != "params"}
        write_bundle(out, meta, members)
    md = parity_markdown(table, len(faces), pair_set)
    from .io_utils import atomic_write_bytes
    table_path = out.with_name(out.stem + ".parity.md")
    atomic_write_bytes(table_path, md.encode())
    write_manifest(out, "export", {"weights": weights, "formats": list(formats)},
                   {"run": fingerprint(run / "model.json"), "weights": {"path": str(run_weights(run, weights)),
                                                                       "kind": "file", "sha256": ident.removeprefix("sha256:")},
                    "classifier": classifier or None, "pair_set": pair_set}, {"formats": len(checks)}, contract)
    return {"bundle": str(out), "bytes": out.stat().st_size, "checks": checks, "formats": list(checks),
            "classifier": bool(classifier), "verification_threshold": thr, "parity": table, "warnings": warnings,
            "table": str(table_path)}


__all__ = ["ExportConfig", "run", "export", "FORMATS", "FLOAT_FORMATS"]
