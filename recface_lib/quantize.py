"""TFLite conversions (float32, float16, full-integer int8) and the parity measurement export gates
them with.

int8 is calibrated on a representative set of REAL aligned faces: by default the run's own
training faces, read from its dataset's shards (``representative_faces``). Parity compares every
format with the Keras model on the same inputs: the cosine of each face's embedding to Keras'
(median, minimum) and, on a pair set, the 10-fold accuracy and TAR@FAR 1e-3 of each format next to
Keras' (the same protocol as ``recface evaluate``, flip TTA)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ConfigError, FormatError


def convert_tflite(saved_model: str | Path, kind: str = "float32", representative: np.ndarray | None = None) -> bytes:
    """A SavedModel -> TFLite bytes: ``float32``, ``float16`` (weights), or ``int8`` (weights and
    activations, int8 input and output; ``representative``: preprocessed faces, float32 NHWC)."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if kind == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif kind == "int8":
        if representative is None or not len(representative):
            raise ConfigError("int8: a representative set of faces is needed to calibrate the activations")

        def gen():
            for i in range(len(representative)):
                yield [representative[i:i + 1]]
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = gen
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    elif kind != "float32":
        raise ConfigError(f"tflite kind: unknown {kind!r}; valid: float32, float16, int8")
    return conv.convert()


def representative_faces(run: Path, spec: dict, folder: str | Path | None, count: int) -> tuple[list[np.ndarray], str]:
    """Aligned faces to calibrate int8 on: the images of ``folder`` (any depth), or the run's
    training faces from its dataset's shards (spread over the shards). Returns (faces, source)."""
    from .io_utils import decode_image

    if folder:
        from .data.image_folder import list_images
        from .io_utils import read_image

        paths = list_images(folder)
        if not paths:
            raise ConfigError(f"representative: {folder}: no images")
        step = max(1, len(paths) // count)
        return [read_image(p) for p in paths[::step][:count]], str(folder)
    from .data.tfrecord import check_shards, load_metadata, parse_example, read_records

    ds = spec.get("dataset")
    parts = ds if isinstance(ds, list) else [ds]  # several build outputs trained as one: their union
    if not ds or not all((Path(d) / "metadata.json").is_file() for d in parts):
        raise ConfigError(f"representative: the run's dataset {ds} is gone; give a folder of aligned faces "
                          "(representative) to calibrate int8 on")
    meta = load_metadata(ds)
    shards = check_shards(meta)
    per = max(1, -(-count // len(shards)))
    faces = []
    for sh, info in zip(shards, meta["shards"]):
        for i, rec in enumerate(read_records(sh)):
            if i >= per:
                break
            data = bytes(parse_example(rec)["image"])
            if info.get("by_path", meta.get("image_storage") == "path"):
                data = Path(data.decode()).read_bytes()
            faces.append(decode_image(data, f"{sh} record {i}"))
    return faces[:count], f"{ds} (training shards)"


def cosine_stats(e: np.ndarray, ref: np.ndarray) -> dict:
    e, ref = np.asarray(e, np.float64), np.asarray(ref, np.float64)
    cos = (e * ref).sum(1) / np.maximum(np.linalg.norm(e, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
    return {"median_cosine": float(np.median(cos)), "min_cosine": float(cos.min())}


class PairParity:
    """A pair set prepared once (aligned as the model's contract says, preprocessed, and mirrored),
    scored with any format's runner."""

    def __init__(self, path: str | Path, embedder):
        from .data.verification_bin import read_bin
        from .embedders.model import preprocess
        from .io_utils import load_item
        from .protocol.pair_sets import distinct_items

        p = Path(path)
        if p.suffix != ".bin" or not p.is_file():
            raise ConfigError(f"pair_set: {p} is not a .bin pair set")
        ps = read_bin(p)
        images, self.index, first = distinct_items(ps.images)  # each distinct image aligned and run once
        crops = embedder.prepare_many([load_item(b, f"{p} image {i}") for i, b in zip(first, images)])
        self.x = preprocess(crops, embedder.size, embedder.normalization)
        self.xf = np.ascontiguousarray(self.x[:, :, ::-1])
        self.issame, self.path = ps.issame, str(p)

    def embed(self, runner, batch: int = 64) -> np.ndarray:
        """Per image of the set (pair i = rows 2i, 2i+1): the flip-summed embedding."""
        from .protocol.verification import flip_sum, l2_normalize

        def run(x):
            return np.concatenate([runner(x[i:i + batch]) for i in range(0, len(x), batch)])
        return flip_sum(l2_normalize(run(self.x)), l2_normalize(run(self.xf)))[self.index]

    def score(self, emb: np.ndarray) -> dict:
        from .protocol.verification import evaluate_embeddings

        r = evaluate_embeddings(emb[0::2], emb[1::2], self.issame)
        return {"accuracy": r.accuracy, "tar_at_far_1e-3": r.val_far.get("1e-03", {}).get("tar"), "auc": r.auc}


def gate(table: dict, max_drop: float, keep_failing: bool) -> list[str]:
    """Marks each format of ``table`` passed or not (accuracy drop in points vs Keras <= max_drop);
    returns the warnings for formats kept although they failed; raises for the others."""
    ref = table.get("keras", {}).get("accuracy")
    failing = []
    for name, row in table.items():
        if name == "keras" or ref is None or row.get("accuracy") is None:
            continue
        row["accuracy_drop_points"] = round(100 * (ref - row["accuracy"]), 3)
        row["passed"] = row["accuracy_drop_points"] <= max_drop
        if not row["passed"]:
            failing.append(f"{name}: accuracy {100 * row['accuracy']:.2f}% vs Keras {100 * ref:.2f}% "
                           f"(-{row['accuracy_drop_points']:.2f} points > {max_drop})")
    if failing and not keep_failing:
        raise FormatError("export: refused, the conversion lost accuracy: " + "; ".join(failing)
                          + ". Calibrate on other faces (representative), leave the format out, or keep it "
                          "anyway with keep_failing (--keep-failing)")
    for name, row in table.items():
        if row.get("passed") is False:
            row["kept_with_warning"] = True
    return [f"kept although it failed the parity gate: {f}" for f in failing]


def parity_markdown(table: dict, faces: int, pair_set: str | None) -> str:
    head = ("| format | median cosine | min cosine | accuracy | TAR@FAR 1e-3 | drop (points) | gate |\n"
            "|---|---|---|---|---|---|---|\n")
    rows = []
    for name, r in table.items():
        acc = "" if r.get("accuracy") is None else f"{100 * r['accuracy']:.2f}%"
        tar = "" if r.get("tar_at_far_1e-3") is None else f"{100 * r['tar_at_far_1e-3']:.2f}%"
        drop = "" if "accuracy_drop_points" not in r else f"{r['accuracy_drop_points']:.2f}"
        g = "reference" if name == "keras" else ("" if "passed" not in r else ("pass" if r["passed"] else "FAIL (kept)"))
        rows.append(f"| {name} | {r.get('median_cosine', 1.0):.6f} | {r.get('min_cosine', 1.0):.6f} | {acc} | {tar} | {drop} | {g} |")
    where = f"; accuracy on {pair_set}" if pair_set else "; no pair set given: accuracy not measured"
    return f"Parity with the Keras model (cosines on {faces} faces{where}):\n\n" + head + "\n".join(rows) + "\n"


__all__ = ["PairParity", "convert_tflite", "cosine_stats", "gate", "parity_markdown", "representative_faces"]
