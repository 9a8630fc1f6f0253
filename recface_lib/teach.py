"""Stage 3b, teach: a teacher's embeddings of every record of a built dataset (and of each mirrored
face), computed once, for distillation (``train.teacher``).

The teacher is any embedder recface has: ``dlib_resnet``, ``sface``, a training run, or an export bundle
(onnxruntime). It sees what it was made for: with ``images: auto`` the ORIGINAL photo behind each
aligned face (found through the record's ``source`` key, the align stage's manifest and its log) when
it aligns differently from the data (dlib's own chain, or a model with another contract), else the
aligned face as stored. The dataset is an input and is never modified: the embeddings go to their
own folder (beside the shards), one ``<shard>.npz`` per shard written atomically, so a killed pass
resumes at the next shard; ``teacher.json`` records the teacher's identity (the SHA-256 of its
weights), the dataset's content key and the records per shard. Training refuses embeddings made
for other data."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import StageConfig, choice, param
from .errors import ConfigError, FormatError
from .io_utils import atomic_path, atomic_write_json
from .manifest import begin_output, check_not_input, read_manifest, write_manifest

IMAGE_MODES = ("auto", "original", "aligned")


@dataclass
class TeachConfig(StageConfig):
    dataset: str = param("", "build output folder (metadata.json + shards) the teacher embeds", role="input")
    teacher: str = param("dlib_resnet", "the teacher: a reference (dlib_resnet, sface), a training run folder or an export bundle .zip")
    output: str = param("", "folder for the teacher's embeddings (one .npz per shard + teacher.json); "
                            "never inside the dataset", role="output")
    images: str = choice("auto", IMAGE_MODES, "what the teacher sees: the original photo behind each aligned face "
                         "(through the align manifest), the aligned face as stored, or auto: the original when the "
                         "teacher aligns differently from the data")
    views: int = param(0, "consistent teaching: the teacher embeds this many seeded augmented views of every stored "
                          "face and training replays the same views (0: one target per face and its mirror, for slow "
                          "teachers)", lo=0, hi=64)
    view_seed: int = param(0, "views: the seed of every view (view v of record r is drawn from (seed, r, v))", lo=0)
    view_augmentation: dict = param({}, "views: the augmentation that makes them, checked by "
                                        "data.input_pipeline.Augmentation (flip, train_crop, random_rotate, "
                                        "color_jitter, ...); training takes it from teacher.json")
    workers: int = param(0, "worker processes (0: the usable cores; one below 256 images)", lo=0, hi=256, runtime=True)
    force: bool = param(False, "start fresh: embeddings made for other data or by another teacher are removed "
                               "instead of refused", runtime=True)

    def validate(self, where=""):
        for k in ("dataset", "teacher", "output"):
            if not getattr(self, k):
                raise ConfigError(f"{where}{k}: required")
        self.augmentation()
        if self.view_augmentation and not self.views:
            raise ConfigError(f"{where}view_augmentation: makes the views: give views (N > 0) too")

    def augmentation(self):
        from .data.input_pipeline import Augmentation

        return Augmentation.from_dict(self.view_augmentation, source="view_augmentation")


# -- where the teacher's images come from -------------------------------------------------------
def original_photos(source: Path) -> tuple[dict[str, Path] | None, str]:
    """aligned file (relative to the build input) -> the photo it was aligned from, read from the
    align stage's manifest and log; (None, why) when the build input was not aligned by recface."""
    from .align.pipeline import output_names

    m = read_manifest(source) if source.is_dir() else None
    if m is None or m.get("stage") != "align":
        return None, f"{source} has no align manifest (not aligned by recface)"
    inp = Path((m.get("inputs") or {}).get("input", {}).get("path", ""))
    log = source / ".align_log.jsonl"
    if not inp.is_dir() or not log.is_file():
        return None, f"the align input {inp} or its log {log} is gone"
    keys = {}
    for line in log.read_text().splitlines():
        try:
            keys[json.loads(line)["key"]] = None
        except (ValueError, KeyError, TypeError):
            continue
    ext = ".png" if (m.get("parameters") or {}).get("image_format") == "png" else ".jpg"
    target, _ = output_names(keys, Path("."), ext)
    return {t.as_posix(): inp / k for k, t in target.items()}, ""


def choose_images(mode: str, teacher: str, meta: dict) -> str:
    if mode != "auto":
        return mode
    from .embedders.factory import embeds_aligned

    return "aligned" if embeds_aligned(teacher, meta.get("preprocessing")) else "original"


def _teacher_items(path, meta: dict, images: str, originals) -> list:
    """What the teacher embeds for each record of one shard: the stored face, or the photo behind it."""
    from .data.tfrecord import parse_example, read_records

    items = []
    for i, rec in enumerate(read_records(path)):
        ex = parse_example(rec)
        if images == "aligned":
            items.append(bytes(ex["image"]) if meta.get("image_storage") != "path" else bytes(ex["image"]).decode())
            continue
        src = ex.get("source")
        if src is None:
            raise FormatError(f"{path}: record {i} has no 'source' key (built before recface recorded it); "
                              "build the dataset again, or use images: aligned")
        photo = originals.get(bytes(src).decode())
        if photo is None or not photo.is_file():
            raise FormatError(f"{path}: record {i}: the photo behind {bytes(src).decode()} is not in the align "
                              f"log or is gone ({photo})")
        items.append(str(photo))
    return items


def targets_key(teacher_id: str, data_key: str, images: str, views: dict | None) -> str:
    """What a teacher's targets are of: the teacher, the data, what it saw and its views (checked on
    resume here, and part of a distillation run's checkpoint fingerprint)."""
    return f"{teacher_id}:{data_key}:{images}" + (f":{json.dumps(views, sort_keys=True)}" if views else "")


# -- the stage ----------------------------------------------------------------------------------
def teach(cfg: TeachConfig | dict, show_progress: bool = True) -> dict:
    from .data.tfrecord import check_shards, dataset_key, load_metadata
    from .embedders.factory import embed_parallel, model_identity

    if isinstance(cfg, dict):
        cfg = TeachConfig.from_dict(cfg)
    cfg.validate()
    out = Path(cfg.output)
    check_not_input(out, {"dataset": cfg.dataset, "teacher": cfg.teacher}, "teach")
    meta = load_metadata(cfg.dataset)
    shards = check_shards(meta)
    ident = model_identity(cfg.teacher)
    if not ident:
        raise ConfigError(f"teacher: {cfg.teacher!r} is neither a reference (dlib_resnet, sface), a training run "
                          "folder nor a bundle .zip")
    images = choose_images(cfg.images, cfg.teacher, meta)
    originals = None
    if images == "original":
        originals, why = original_photos(Path(meta["source"]))
        if originals is None:
            raise ConfigError(f"teach: images: original needs the photos behind the aligned faces, but {why}; "
                              "use images: aligned (the teacher then sees the aligned faces)")
    if cfg.views and images != "aligned":
        raise ConfigError(f"teach: views are made from the stored faces, but this teacher sees the original photos "
                          f"(images: {images}); use images: aligned, or a teacher that embeds the stored faces "
                          "(sface on 112 px template crops, a run or bundle of this data's contract)")
    key = dataset_key(meta)
    aug = cfg.augmentation()
    params = {**cfg.output_params(), "images": images, "teacher_id": ident, "data_key": key}
    run = begin_output(out, "teach", params, {"dataset": Path(cfg.dataset) / "metadata.json"}, cfg.force)
    views = {"count": cfg.views, "seed": cfg.view_seed, "augmentation": aug.to_dict()} if cfg.views else None
    run_id = targets_key(ident, key, images, views)
    found: dict[str, int] = {}
    parts, dim = [], None
    for si, (sh, path) in enumerate(zip(meta["shards"], shards)):
        part = out / f"{sh['name']}.npz"
        if part.is_file():
            with np.load(part) as z:
                name = "views" if views else "embeddings"
                arr = z[name] if name in z else None
                if str(z["key"]) == run_id and arr is not None and len(arr) == sh["records"]:
                    parts.append({"name": sh["name"], "records": sh["records"], "file": part.name})
                    dim = int(arr.shape[-1])
                    continue
        if views:
            from .data.input_pipeline import teacher_views

            e, _, stats = embed_parallel(cfg.teacher, teacher_views(meta, si, (cfg.views, cfg.view_seed, aug)),
                                         cfg.workers, "auto", desc=f"teach {si + 1}/{len(shards)} x{cfg.views} views",
                                         show_progress=show_progress, total=sh["records"] * cfg.views, flip=False)
            per_record = cfg.views
        else:
            e, ef, stats = embed_parallel(cfg.teacher, _teacher_items(path, meta, images, originals), cfg.workers,
                                          "auto", desc=f"teach {si + 1}/{len(shards)}", show_progress=show_progress)
            per_record = 1
        for k, v in stats.items():
            found[k] = found.get(k, 0) + v
        if len(e) != sh["records"] * per_record:
            raise FormatError(f"{path}: {len(e) // per_record} records read, metadata.json says {sh['records']}")
        arrays = ({"views": e.reshape(sh["records"], cfg.views, -1)} if views
                  else {"embeddings": e, "flipped": ef})
        with atomic_path(part) as tmp, open(tmp, "wb") as f:
            np.savez(f, **{k: v.astype(np.float16) for k, v in arrays.items()}, key=np.asarray(run_id))
        dim = int(e.shape[1])
        parts.append({"name": sh["name"], "records": sh["records"], "file": part.name})
    info = {"teacher": cfg.teacher, "teacher_id": ident, "dim": dim, "images": images, "data_key": key,
            "dataset": str(Path(cfg.dataset).resolve()), "records": sum(p["records"] for p in parts),
            "shards": parts, "found": found, "dtype": "float16 (L2-normalised)", "views": views}
    atomic_write_json(out / "teacher.json", info)
    write_manifest(out, "teach", params, run["inputs"], {"records": info["records"], **found})
    return {"output": str(out), "teacher": cfg.teacher, "teacher_id": ident, "dim": dim, "images": images,
            "records": info["records"], "found": found, "resumed": run["resumed"]}


def load_teacher(folder: str | Path, meta: dict):
    """(targets, teacher.json): targets in the dataset's record order (shard by shard), float16:
    (embeddings, mirrored embeddings), or ``data.input_pipeline.ViewTargets`` for a teacher of
    views; refused when they were made for other data."""
    from .data.input_pipeline import Augmentation, ViewTargets
    from .data.tfrecord import dataset_key

    d = Path(folder)
    p = d / "teacher.json"
    if not p.is_file():
        raise FormatError(f"teacher: {p} not found (a `recface teach` output folder)")
    try:
        info = json.loads(p.read_text())
    except ValueError as e:
        raise FormatError(f"{p}: unreadable ({e})") from e
    key = dataset_key(meta)
    names = [s["name"] for s in meta["shards"]]
    if info.get("data_key") != key or [s.get("name") for s in info.get("shards", [])] != names:
        raise ConfigError(f"teacher: {d} holds embeddings of other data ({info.get('dataset')}, key "
                          f"{info.get('data_key')}; this dataset's key is {key}): run `recface teach` on it")
    views = info.get("views")
    es, efs = [], []
    for sh, part in zip(meta["shards"], info["shards"]):
        with np.load(d / part["file"]) as z:
            e, ef = (z["views"], None) if views else (z["embeddings"], z["flipped"])
        if len(e) != sh["records"] or (views and e.shape[1] != int(views["count"])):
            raise FormatError(f"{d / part['file']}: embeddings of shape {e.shape} for {sh['records']} records"
                              + (f" x {views['count']} views" if views else ""))
        es.append(e)
        efs.append(ef)
    if views:
        aug = Augmentation.from_dict(views["augmentation"], source=f"{p}: views.augmentation")
        return ViewTargets(np.concatenate(es), int(views["seed"]), aug), info
    return (np.concatenate(es), np.concatenate(efs)), info


__all__ = ["TeachConfig", "teach", "load_teacher", "original_photos"]
