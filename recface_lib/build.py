"""Stage 3, build: identity folder -> shuffled, sharded TFRecords + metadata.json, an optional
test folder split from the end of each class, and a verification ``.bin`` of pairs built from it.

Parallel (one worker per shard), atomic shards (temp + rename), resumable (finished shards with a
matching sidecar are kept), undecodable or empty images reported by path and skipped."""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from .config import StageConfig, param
from .data.image_folder import ImageFolder, scan_folder
from .data.recordio import rec_as_folder
from .data.tfrecord import ShardWriter, example_bytes
from .errors import ConfigError, FormatError, ImageDecodeError
from .io_utils import atomic_path, atomic_write_bytes, atomic_write_json, decode_image, image_kind
from .manifest import begin_output, check_not_input, declared_contract, input_contract, run_key, write_manifest
from .parallel import parallel_map
from .progress import progress


@dataclass
class BuildConfig(StageConfig):
    input: str = param("", "identity folder root/<identity>/<image> (aligned faces), or an InsightFace train.rec (+ .idx)", role="input")
    output: str = param("", "output folder for shards, metadata.json, test/ and the test .bin", role="output")
    shard_size_mb: int = param(150, "target shard size in MB (ignored when shards > 0)", lo=1, hi=100000)
    shards: int = param(0, "number of shards (0: from shard_size_mb)", lo=0, hi=100000)
    binary_img: bool = param(True, "store encoded image bytes (True) or the image path (False)")
    seed: int = param(0, "shuffle / class choice / pair sampling seed", lo=0)
    num_classes: int = param(0, "keep at most this many classes (0: all)", lo=0)
    random_classes: bool = param(False, "choose the kept classes at random (seeded) instead of the first")
    min_images: int = param(0, "drop classes with fewer images", lo=0)
    num_samples: int = param(0, "keep at most this many images per class (0: all)", lo=0)
    test_split: float = param(0.0, "fraction of each class, from the end, moved to the test folder", lo=0.0, hi=1.0)
    test_samples: int = param(0, "or: the last N images of each class to the test folder", lo=0)
    test_max_pairs: int = param(3000, "test .bin: at most this many positive pairs, and as many negatives", lo=0)
    test_name: str = param("test", "name of the test folder and .bin")
    unlabelled: bool = param(False, "the input is a folder of face images without identities (any depth): one "
                                    "pseudo-class; such data trains only by distillation (train.teacher)")
    workers: int = param(1, "worker processes (one shard each at a time)", lo=1, hi=256, runtime=True)
    assume_aligned: int = param(0, "faces aligned outside recface: the ArcFace 5-point template at this size "
                                   "(InsightFace .rec/.bin convention); 0: read the align stage's manifest", lo=0, hi=1024)
    contract_file: str = param("", "faces aligned outside recface: a YAML declaring the preprocessing contract", role="input")
    force: bool = param(False, "start fresh: an output made from other inputs or parameters is removed "
                               "(moved aside if recface did not make it) instead of refused", runtime=True)


    def validate(self, where=""):
        if self.test_split and self.test_samples:
            raise ConfigError(f"{where}test_split and test_samples: give one of them")
        if 0 < self.assume_aligned < 16:
            raise ConfigError(f"{where}assume_aligned: a face size of at least 16 px (or 0), got {self.assume_aligned}")
        if self.assume_aligned and self.contract_file:
            raise ConfigError(f"{where}assume_aligned and contract_file: give one of them")
        if self.unlabelled and (self.test_split or self.test_samples or self.num_classes or self.min_images):
            raise ConfigError(f"{where}unlabelled: a folder without identities has no classes to select, split "
                              "or pair (test_split, test_samples, num_classes, min_images)")


class ShardBuilder:
    """Writes one shard (worker side): reads files (or records of a ``.rec``), checks they are
    images, writes atomically."""

    def __init__(self, binary_img: bool = True, rec: str | None = None, root: str = ""):
        self.binary_img, self.root = binary_img, root
        self.rec = None
        if rec:
            from .data.recordio import RecordIOReader
            self.rec = RecordIOReader(rec)

    def read(self, path: str) -> bytes:
        if self.rec is not None:
            return self.rec.read_image(int(Path(path).stem))[1]
        return Path(path).read_bytes()

    def source(self, path: str) -> str:
        """Where a record came from, relative to the build input (``rec:<index>`` for a .rec): the
        teach stage finds the original photo behind an aligned face with it."""
        if self.rec is not None:
            return f"rec:{int(Path(path).stem)}"
        return Path(path).relative_to(self.root).as_posix() if self.root else Path(path).name

    def write(self, spec: dict) -> dict:
        out = Path(spec["path"])
        errors, sizes, count = [], {}, 0
        with atomic_path(out) as tmp, open(tmp, "wb") as f:
            w = ShardWriter(f)
            for path, label in spec["samples"]:
                try:
                    data = self.read(path)
                except FormatError as e:
                    errors.append({"path": path, "error": str(e)})
                    continue
                except OSError as e:
                    errors.append({"path": path, "error": f"cannot read ({e.strerror})"})
                    continue
                if not data:
                    errors.append({"path": path, "error": "empty file (0 bytes)"})
                    continue
                try:
                    if not image_kind(data):
                        raise ImageDecodeError(f"{path}: cannot decode image ({len(data)} bytes)")
                    arr = decode_image(data, path)
                except ImageDecodeError as e:
                    errors.append({"path": path, "error": str(e).removeprefix(f"{path}: ")})
                    continue
                key = f"{arr.shape[1]}x{arr.shape[0]}"
                sizes[key] = sizes.get(key, 0) + 1
                w.write(example_bytes({"image": data if self.binary_img else str(Path(path).resolve()).encode(),
                                       "label": int(label), "source": self.source(path).encode()}))
                count += 1
        stats = {"name": out.name, "records": count, "bytes": out.stat().st_size, "errors": errors,
                 "image_sizes": sizes, "inputs": len(spec["samples"]), "key": spec.get("key")}
        atomic_write_json(out.with_name(f".{out.name}.json"), stats)
        return stats


UNLABELLED = "(unlabelled)"


def unlabelled_folder(root: Path) -> ImageFolder:
    """Every image below ``root`` (any depth) as one pseudo-class: distillation data."""
    from .data.image_folder import list_images

    files = list_images(root)
    if not files:
        raise FormatError(f"{root}: no images found")
    return ImageFolder(root, [UNLABELLED], {UNLABELLED: files})


def make_pairs(folder: ImageFolder, max_pairs: int, seed: int) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """All same-class pairs (sampled down to ``max_pairs``) and as many different-class pairs."""
    rng = random.Random(seed)
    pos = [(a, b) for c in folder.classes for a, b in combinations(folder.files[c], 2)]
    if len(pos) > max_pairs:
        pos = sorted(rng.sample(pos, max_pairs))
    if len(folder.classes) < 2:
        return pos, []
    samples = folder.samples()
    neg: set = set()
    limit = 50 * max(len(pos), 1)
    while len(neg) < len(pos) and limit:
        limit -= 1
        (a, la), (b, lb) = rng.sample(samples, 2)
        if la != lb:
            neg.add((min(a, b), max(a, b)))
    return pos, sorted(neg)


def _test_name(p: Path, from_rec: bool) -> str:
    return f"{p.stem}.jpg" if from_rec else p.name


def preprocessing_contract(cfg: BuildConfig, inp: Path, from_rec: bool) -> dict | None:
    """The input's contract: from its align manifest, or declared; both is a conflict."""
    found = None if from_rec else input_contract(inp)
    declared = declared_contract(cfg.assume_aligned, cfg.contract_file)
    if found is not None and declared is not None:
        raise ConfigError(f"build: {inp} was aligned by recface align ({found['detector']}/{found['method']} at "
                          f"{found['size']} px, recorded in its manifest); do not declare another contract")
    return found if found is not None else declared


def build(cfg: BuildConfig | dict, show_progress: bool = True) -> dict:
    from .data.verification_bin import write_bin

    if isinstance(cfg, dict):
        cfg = BuildConfig.from_dict(cfg)
    if not cfg.input or not cfg.output:
        raise ConfigError("build: input and output are required")
    inp, out = Path(cfg.input), Path(cfg.output)
    check_not_input(out, cfg.input_paths(), "build")
    if not inp.exists():
        raise FormatError(f"{inp}: no such file or folder")
    from_rec = inp.suffix == ".rec" and inp.is_file()
    contract = preprocessing_contract(cfg, inp, from_rec)
    if from_rec and not cfg.binary_img:
        raise ConfigError(f"build: {inp}: records of a .rec have no path of their own; use binary_img: true")
    if cfg.unlabelled and from_rec:
        raise ConfigError(f"build: {inp}: a .rec has identities; unlabelled is for plain image folders")
    source = rec_as_folder(inp) if from_rec else unlabelled_folder(inp) if cfg.unlabelled else scan_folder(inp)
    reader = ShardBuilder(True, str(inp) if from_rec else None)
    folder = source.select(cfg.min_images, cfg.num_samples, cfg.num_classes, cfg.random_classes, cfg.seed)
    if not folder.classes:
        raise FormatError(f"{inp}: no class has at least {cfg.min_images} images")
    if cfg.test_split or cfg.test_samples:
        train, test = folder.split(cfg.test_split, cfg.test_samples)
    else:
        train, test = folder, None
    classes = folder.classes
    label_of = {c: i for i, c in enumerate(classes)}
    samples = [(str(p), label_of[c]) for c in train.classes for p in train.files[c]]
    random.Random(cfg.seed).shuffle(samples)
    run = begin_output(out, "build", cfg.output_params(), cfg.input_paths(), cfg.force, contract)
    key = run_key(run["inputs"], cfg.output_params())

    shards_meta, errors, sizes = [], [], {}
    if samples:
        total_bytes = (inp.stat().st_size * len(samples) // max(source.num_images, 1) if from_rec
                       else sum(Path(p).stat().st_size for p, _ in samples))
        n = cfg.shards or max(1, math.ceil(total_bytes / (cfg.shard_size_mb * 1e6)))
        n = min(n, len(samples))
        per = math.ceil(len(samples) / n)
        specs = [{"path": str(out / f"train-{k:05d}-of-{n:05d}.tfrecord"), "samples": samples[k * per:(k + 1) * per],
                  "key": key} for k in range(n)]
        todo, done = [], []
        for s in specs:
            side = Path(s["path"]).with_name(f".{Path(s['path']).name}.json")
            if Path(s["path"]).is_file() and side.is_file():
                st = json.loads(side.read_text())
                if (st.get("key") == key and st.get("inputs") == len(s["samples"])
                        and st.get("bytes") == Path(s["path"]).stat().st_size):
                    done.append(st)
                    continue
            todo.append(s)
        bar = progress(total=len(samples), desc=f"build {out.name}", unit="img", disable=not show_progress)
        bar.update(sum(d["inputs"] for d in done))
        results = {d["name"]: d for d in done}
        for st in parallel_map(ShardBuilder, {"binary_img": cfg.binary_img, "rec": str(inp) if from_rec else None,
                                              "root": str(inp)},
                               "write", todo, cfg.workers,
                               on_result=lambda r: bar.update(r["inputs"])):
            results[st["name"]] = st
        bar.close()
        for s in specs:
            st = results[Path(s["path"]).name]
            shards_meta.append({"name": st["name"], "records": st["records"], "bytes": st["bytes"]})
            errors += st["errors"]
            for k, v in st["image_sizes"].items():
                sizes[k] = sizes.get(k, 0) + v
    bad = {e["path"] for e in errors}
    counts = {c: 0 for c in classes}
    for p, lab in samples:
        if p not in bad:
            counts[classes[lab]] += 1
    image_size = None
    if len(sizes) == 1:
        w, h = map(int, next(iter(sizes)).split("x"))
        image_size = [h, w]
    meta = {"num_samples": sum(s["records"] for s in shards_meta), "num_classes": len(classes),
            "class_names": classes, "class_counts": counts, "shards": shards_meta, "image_size": image_size,
            "image_sizes": sizes, "colour_order": "RGB (encoded files; decoders return RGB)",
            "image_storage": "bytes" if cfg.binary_img else "path", "source": str(inp.resolve()),
            "labelled": not cfg.unlabelled, "record_keys": ["image", "label", "source"],
            "parameters": cfg.output_params(), "skipped": errors, "preprocessing": contract}

    report = {"output": str(out), "num_samples": meta["num_samples"], "num_classes": len(classes),
              "shards": len(shards_meta), "skipped": len(errors), "skipped_items": errors[:20],
              "preprocessing": (f"{contract['detector']}/{contract['method']} at {contract['size']} px ({contract['source']})"
                                if contract else "none: not aligned by recface and none declared (assume_aligned, "
                                "contract_file); models trained on it cannot be exported")}
    if test is not None and test.classes:
        tdir = out / cfg.test_name
        for c in test.classes:
            for p in test.files[c]:
                target = tdir / c / _test_name(p, from_rec)
                if not target.is_file():
                    atomic_write_bytes(target, reader.read(str(p)))
        tfold = ImageFolder(tdir, test.classes, {c: [tdir / c / _test_name(p, from_rec) for p in test.files[c]]
                                                 for c in test.classes})
        pos, neg = make_pairs(tfold, cfg.test_max_pairs, cfg.seed)
        pairs = [(a, b, True) for a, b in pos] + [(a, b, False) for a, b in neg]
        write_bin(out / f"{cfg.test_name}.bin", [q.read_bytes() for a, b, _ in pairs for q in (a, b)],
                  [s for _, _, s in pairs])
        meta["test"] = {"folder": cfg.test_name, "images": tfold.num_images, "bin": f"{cfg.test_name}.bin",
                        "positives": len(pos), "negatives": len(neg)}
        report.update(test_images=tfold.num_images, test_bin=str(out / f"{cfg.test_name}.bin"),
                      test_positives=len(pos), test_negatives=len(neg))
    atomic_write_json(out / "metadata.json", meta)
    write_manifest(out, "build", cfg.output_params(), run["inputs"],
                   {"num_samples": meta["num_samples"], "num_classes": len(classes), "skipped": len(errors)}, contract)
    return report
