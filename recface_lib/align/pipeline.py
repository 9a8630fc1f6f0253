"""The align stage over identity folders and ``.bin`` sets: detection, alignment, failure
policies, parallel workers, resumable atomic output, manifest and report (counts, failure list,
PNG grids of aligned faces and of failures). Inputs are never modified."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, FormatError, ImageDecodeError
from ..io_utils import atomic_write_bytes, atomic_write_json, decode_image, encode_image, load_item
from ..manifest import begin_output, check_not_input, read_manifest, write_manifest
from ..parallel import chunked, parallel_map
from ..progress import progress
from .config import AlignConfig
from .detectors import Detection, make_detector, select_face
from .template import crop_box, warp_to_template

OK_STATUSES = ("detected", "manual", "kept")


@dataclass
class ItemResult:
    key: str
    status: str  # detected | manual | kept | dropped | failed | unreadable
    data: bytes | None = None
    detection: dict | None = None
    reason: str = ""


class Aligner:
    """Detect + align images; one per worker process. ``process`` takes (key, item, manual_box)
    triples, item being a path, encoded bytes or an RGB array."""

    def __init__(self, **cfg):
        self.cfg = AlignConfig.from_dict(cfg)
        self.detector = make_detector(self.cfg.detector, **self.cfg.detector_params())
        self._lm = None

    def _landmarks_in_box(self, img, box):
        if self._lm is None:
            from .detectors import DlibLandmarks
            self._lm = DlibLandmarks(self.cfg.landmarks)
        return self._lm(np.ascontiguousarray(img), box)

    def align_detection(self, img: np.ndarray, det: Detection) -> np.ndarray:
        c = self.cfg
        if c.method == "landmarks":
            lm = det.landmarks5 if det.landmarks5 is not None else self._landmarks_in_box(img, det.box)
            return warp_to_template(img, lm, c.size)
        if c.method == "box":
            return crop_box(img, det.box, c.size, square=c.square)
        return crop_box(img, det.box, c.size, square=c.square, margin=c.margin)

    def keep_whole(self, img: np.ndarray) -> np.ndarray:
        import cv2

        return cv2.resize(img, (self.cfg.size, self.cfg.size), interpolation=cv2.INTER_AREA)

    def encode(self, img: np.ndarray) -> bytes:
        ext = ".png" if self.cfg.image_format == "png" else ".jpg"
        return encode_image(img, ext, self.cfg.jpeg_quality)

    def align_images(self, imgs: list[np.ndarray], manual: list | None = None) -> list[tuple[np.ndarray | None, str, Detection | None]]:
        """In-memory alignment: (aligned image or None, status, detection) per image."""
        manual = manual or [None] * len(imgs)
        todo = [i for i, m in enumerate(manual) if m is None]
        found = self.detector.detect_batch([imgs[i] for i in todo]) if todo else []
        dets: dict[int, list[Detection]] = dict(zip(todo, found))
        out = []
        for i, img in enumerate(imgs):
            if manual[i] is not None:
                d = Detection(np.asarray(manual[i], dtype=np.float64), 1.0, None)
                out.append((self.align_detection(img, d), "manual", d))
                continue
            d = select_face(dets[i], img.shape, self.cfg.select)
            if d is not None:
                out.append((self.align_detection(img, d), "detected", d))
            elif self.cfg.on_failure == "keep":
                out.append((self.keep_whole(img), "kept", None))
            else:
                out.append((None, "dropped" if self.cfg.on_failure == "drop" else "failed", None))
        return out

    def process(self, chunk: list[tuple[str, object, list | None]]) -> list[ItemResult]:
        results: dict[int, ItemResult] = {}
        imgs, where, manual = [], [], []
        for j, (key, item, box) in enumerate(chunk):
            try:
                img = load_item(item, key)
            except ImageDecodeError as e:
                results[j] = ItemResult(key, "unreadable", reason=str(e))
                continue
            imgs.append(img)
            where.append(j)
            manual.append(box)
        for j, img, (aligned, status, det) in zip(where, imgs, self.align_images(imgs, manual)):
            key = chunk[j][0]
            reason = "" if status in ("detected", "manual") else f"no face found by {self.cfg.detector}"
            results[j] = ItemResult(key, status, self.encode(aligned) if aligned is not None else None,
                                    det.to_json() if det is not None else None, reason)
        return [results[j] for j in range(len(chunk))]


# -- helpers -----------------------------------------------------------------------------------------
def output_names(keys: dict[str, Path], out: Path, ext: str) -> tuple[dict[str, Path], list[dict]]:
    """Output path per input key: the same relative path with the output extension; inputs whose
    names would collide (``P/a.jpg`` and ``P/a.png``) keep their own extension in the name
    (``P/a.jpg.jpg``, ``P/a.png.jpg``), listed in the report, so no face overwrites another."""
    by_target: dict[Path, list[str]] = {}
    for k in keys:
        by_target.setdefault(out / Path(k).with_suffix(ext), []).append(k)
    target, renamed = {}, []
    for t, ks in by_target.items():
        for k in ks:
            if len(ks) == 1:
                target[k] = t
            else:
                target[k] = out / (k + ext)
                renamed.append({"input": k, "output": Path(k + ext).as_posix(), "collides_with": [x for x in ks if x != k]})
    return target, renamed


def report_dir_for(output: str | os.PathLike) -> Path:
    out = Path(output)
    return out.with_name((out.stem if out.suffix == ".bin" else out.name) + "_report")


def _check_stop(cfg: AlignConfig, r: ItemResult, key: str, source_prefix: str = "") -> None:
    """on_failure='error' stops at the first item without a face or that cannot be decoded,
    naming it (an unreadable item's reason starts with its path, or with its index in a .bin,
    which ``source_prefix`` completes with the .bin's path)."""
    if r.status == "failed":
        raise FormatError(f"{key}: {r.reason} (on_failure='error'; use 'keep' or 'drop', or give a manual box)")
    if r.status == "unreadable" and cfg.on_failure == "error":
        raise FormatError(f"{source_prefix}{r.reason} (on_failure='error'; use 'drop' to skip it)")


def _write_report(cfg: AlignConfig, results: dict[str, dict], samples: list[tuple[str, np.ndarray]],
                  failures: list[tuple[str, object]], extra: dict) -> dict:
    from ..plots import plot_face_grid

    rdir = report_dir_for(cfg.output)
    counts: dict[str, int] = {}
    for r in results.values():
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    fail_list = [{"item": k, "status": r["status"], "reason": r["reason"]} for k, r in sorted(results.items())
                 if r["status"] not in ("detected", "manual")]
    report = {"input": cfg.input, "output": cfg.output, "detector": cfg.detector, "method": cfg.method,
              "on_failure": cfg.on_failure, "items": len(results), "counts": counts,
              "written": sum(counts.get(s, 0) for s in OK_STATUSES), "failures": fail_list, **extra,
              "report_dir": str(rdir)}
    if samples:
        plot_face_grid([im for _, im in samples], ["/".join(k.split("/")[-2:]) for k, _ in samples],
                       rdir / "aligned_grid.png", title=f"aligned by {cfg.detector}/{cfg.method}")
        report["aligned_grid"] = str(rdir / "aligned_grid.png")
    if failures:
        thumbs = []
        for k, item in failures[:32]:
            try:
                thumbs.append(load_item(item))
            except ImageDecodeError:
                thumbs.append(np.zeros((8, 8, 3), np.uint8))
        plot_face_grid(thumbs, ["/".join(k.split("/")[-2:]) for k, _ in failures[:32]], rdir / "failures_grid.png",
                       title=f"{len(fail_list)} not aligned ({cfg.on_failure})")
        report["failures_grid"] = str(rdir / "failures_grid.png")
    atomic_write_json(rdir / "report.json", report)
    return report


def _run(cfg: AlignConfig, triples: list, on_result, show_progress: bool, desc: str) -> None:
    bar = progress(total=len(triples), desc=desc, unit="img", disable=not show_progress)
    for res in parallel_map(Aligner, cfg.to_dict(), "process", chunked(triples, cfg.batch_size), cfg.workers):
        for r in res:
            on_result(r)
        bar.update(len(res))
    bar.close()


# -- folders ------------------------------------------------------------------------------------------
def select_people(files: list[Path], root: Path, cfg: AlignConfig) -> list[Path]:
    """Identity selection for training sets: min/max images per person, and people to keep out
    (those of evaluation pairs, or of a friends folder) so that evaluation stays honest."""
    if not (cfg.min_images or cfg.max_images or cfg.exclude_pairs or cfg.exclude_people_of):
        return files
    excluded: set[str] = set()
    if cfg.exclude_pairs:
        from ..data.lfw_pairs import fold_set, read_pairs
        folds = fold_set(cfg.exclude_folds, "exclude_folds")
        for q in read_pairs(cfg.exclude_pairs, root):
            if folds is None or q.fold in folds:
                excluded.update({Path(q.path1).parent.name, Path(q.path2).parent.name})
    if cfg.exclude_people_of:
        ex = Path(cfg.exclude_people_of)
        if not ex.is_dir():
            raise ConfigError(f"exclude_people_of: {ex} is not a folder")
        excluded.update(p.name for p in ex.iterdir() if p.is_dir())
    by: dict[str, list[Path]] = {}
    for f in files:
        rel = f.relative_to(root).parts
        if len(rel) > 1:
            by.setdefault(rel[0], []).append(f)
    keep = []
    for person, fs in sorted(by.items()):
        if person in excluded or len(fs) < cfg.min_images:
            continue
        keep += fs[:cfg.max_images] if cfg.max_images else fs
    return keep


def align_folder(cfg: AlignConfig, show_progress: bool = True) -> dict:
    from ..data.image_folder import list_images

    inp, out = Path(cfg.input), Path(cfg.output)
    files = select_people(list_images(inp), inp, cfg)
    if not files:
        raise FormatError(f"{inp}: no images found (after the identity selection)")
    run = begin_output(out, "align", cfg.output_params(), cfg.input_paths(), cfg.force, cfg.contract())
    ext = ".png" if cfg.image_format == "png" else ".jpg"
    keys = {f.relative_to(inp).as_posix(): f for f in files}
    target, renamed = output_names(keys, out, ext)
    log_path = out / ".align_log.jsonl"
    done: dict[str, dict] = {}
    if log_path.is_file():
        for line in log_path.read_text().splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if e["key"] in keys and (e["status"] not in OK_STATUSES or target[e["key"]].is_file()):
                done[e["key"]] = e
    todo = [(k, str(keys[k]), cfg.manual_boxes.get(k)) for k in keys if k not in done]
    results = dict(done)
    with open(log_path, "a") as log:
        def on_result(r: ItemResult):
            _check_stop(cfg, r, str(keys[r.key]))
            if r.data is not None:
                atomic_write_bytes(target[r.key], r.data)
            e = {"key": r.key, "status": r.status, "detection": r.detection, "reason": r.reason}
            log.write(json.dumps(e) + "\n")
            log.flush()
            results[r.key] = e
        _run(cfg, todo, on_result, show_progress, f"align {inp.name} ({cfg.detector})")
    ok_keys = [k for k in sorted(results) if results[k]["status"] in OK_STATUSES]
    samples = [(k, decode_image(target[k].read_bytes())) for k in ok_keys[:cfg.grid_samples]]
    failures = [(k, str(keys[k])) for k in sorted(results) if results[k]["status"] not in ("detected", "manual")]
    report = _write_report(cfg, results, samples, failures, {"resumed": len(done), "renamed": renamed})
    write_manifest(out, "align", cfg.output_params(), run["inputs"], report["counts"], cfg.contract())
    return report


# -- .bin sets ------------------------------------------------------------------------------------
def align_bin(cfg: AlignConfig, show_progress: bool = True) -> dict:
    from ..data.verification_bin import read_bin, write_bin

    inp, out = Path(cfg.input), Path(cfg.output)
    rdir = report_dir_for(out)
    done_before = out.is_file() and (read_manifest(out) or {}).get("counts", {}).get("status") != "running"
    run = begin_output(out, "align", cfg.output_params(), cfg.input_paths(), cfg.force, cfg.contract())
    if run["resumed"] and done_before and (rdir / "report.json").is_file():
        report = json.loads((rdir / "report.json").read_text())
        write_manifest(out, "align", cfg.output_params(), run["inputs"], report["counts"], cfg.contract())
        return {**report, "skipped": "output exists, made from the same input with the same parameters"}
    ps = read_bin(inp)
    triples = [(str(i), b, cfg.manual_boxes.get(str(i), cfg.manual_boxes.get(i))) for i, b in enumerate(ps.images)]
    aligned: dict[int, bytes] = {}
    results: dict[str, dict] = {}

    def on_result(r: ItemResult):
        _check_stop(cfg, r, f"{inp} image {r.key} (pair {int(r.key) // 2})", f"{inp} image ")
        if r.data is not None:
            aligned[int(r.key)] = r.data
        results[r.key] = {"status": r.status, "detection": r.detection, "reason": r.reason}

    _run(cfg, triples, on_result, show_progress, f"align {inp.name} ({cfg.detector})")
    keep_pairs = [i for i in range(ps.num_pairs) if 2 * i in aligned and 2 * i + 1 in aligned]
    images = [aligned[j] for i in keep_pairs for j in (2 * i, 2 * i + 1)]
    write_bin(out, images, [ps.issame[i] for i in keep_pairs])
    ok = sorted(aligned)[:cfg.grid_samples]
    samples = [(f"{i}", decode_image(aligned[i])) for i in ok]
    failures = [(k, ps.images[int(k)]) for k in sorted(results, key=int) if results[k]["status"] not in ("detected", "manual")]
    extra = {"pairs_in": ps.num_pairs, "pairs_out": len(keep_pairs), "pairs_removed": ps.num_pairs - len(keep_pairs)}
    # keys as strings sort lexicographically in the failure list; keep numeric order for .bin
    report = _write_report(cfg, {f"{int(k):06d}": v for k, v in results.items()}, samples, failures, extra)
    write_manifest(out, "align", cfg.output_params(), run["inputs"], report["counts"], cfg.contract())
    return report


def preview(cfg: AlignConfig, n: int = 8) -> np.ndarray:
    """The first ``n`` images of the input aligned with ``cfg``, as one face grid (RGB array):
    what the align panel shows before anything is written. Nothing is written."""
    from ..plots import face_grid

    inp = Path(cfg.input)
    if inp.suffix == ".bin" and inp.is_file():
        from ..data.verification_bin import read_bin
        items = [(f"{inp.name} image {i}", b) for i, b in enumerate(read_bin(inp).images[:n])]
    elif inp.is_dir():
        from ..data.image_folder import list_images
        items = [("/".join(p.parts[-2:]), str(p)) for p in list_images(inp)[:n]]
    else:
        raise FormatError(f"{inp}: no such folder or .bin to preview")
    results = Aligner(**cfg.to_dict()).process([(k, item, None) for k, item in items])
    faces = [decode_image(r.data) if r.data is not None else np.zeros((cfg.size, cfg.size, 3), np.uint8) for r in results]
    return face_grid(faces, [f"{i + 1}: {r.status}" for i, r in enumerate(results)], cols=4,
                     title=f"{cfg.detector}/{cfg.method} at {cfg.size} px")


def align(cfg: AlignConfig | dict, show_progress: bool = True) -> dict:
    """Align a folder or a ``.bin`` according to ``cfg`` (an AlignConfig or a dict of its fields)."""
    if isinstance(cfg, dict):
        cfg = AlignConfig.from_dict(cfg)
    if not cfg.input or not cfg.output:
        raise ConfigError("align: both input and output are required")
    inp = Path(cfg.input)
    if not inp.exists():
        raise FormatError(f"{inp}: no such file or folder")
    check_not_input(cfg.output, cfg.input_paths(), "align")
    if inp.suffix == ".bin":
        if Path(cfg.output).suffix != ".bin":
            raise ConfigError(f"align: a .bin input needs a .bin output, got {cfg.output}")
        return align_bin(cfg, show_progress)
    return align_folder(cfg, show_progress)
