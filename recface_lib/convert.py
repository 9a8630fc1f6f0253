"""Stage 1, convert: InsightFace ``.rec/.idx`` and ``.bin`` files to image folders and pair sets.

No mxnet: the formats are read by :mod:`recface_lib.data.recordio` and
:mod:`recface_lib.data.verification_bin`. Every output is written atomically, and reruns skip
finished work.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.lfw_pairs import fold_set, read_pairs
from .data.recordio import RecordIOReader, label_of, unpack_record
from .data.verification_bin import PairSet, read_bin, write_bin
from .config import StageConfig, choice, param
from .errors import ConfigError, FormatError
from .io_utils import atomic_write_bytes, decode_image, encode_image, image_complete, image_kind
from .manifest import begin_output, check_not_input, write_manifest
from .progress import progress


MODES = ("pairs2bin", "rec2jpg", "bin2jpg", "carray2bin")
# the fields each mode needs (the others must stay at their defaults)
NEEDS = {"pairs2bin": ("images", "pairs"), "rec2jpg": ("rec",), "bin2jpg": ("bin",), "carray2bin": ("carray",)}


@dataclass
class ConvertConfig(StageConfig):
    mode: str = choice("pairs2bin", MODES, "pairs2bin: image folder + pairs.txt -> .bin; rec2jpg: .rec/.idx -> "
                       "identity folders; bin2jpg: .bin -> images + pairs.csv; carray2bin: bcolz carray set -> .bin")
    images: str = param("", "pairs2bin: image root the pairs refer to (IMAGES/<Name>/<Name>_<NNNN>.jpg)", role="input")
    pairs: str = param("", "pairs2bin: pairs.txt (LFW View 2 layout)", role="input")
    folds: list | None = param(None, "pairs2bin: only these folds (1-based, LFW's 1..10); None: all")
    size: int = param(0, "pairs2bin: square output size, re-encoding images of another size (0: bytes unchanged)", lo=0, hi=1024)
    rec: str = param("", "rec2jpg: InsightFace train.rec", role="input")
    idx: str = param("", "rec2jpg: its .idx ('' : beside the .rec)", role="input")
    limit_classes: int = param(0, "rec2jpg: first N identities only (0: all)", lo=0)
    bin: str = param("", "bin2jpg: verification .bin", role="input")
    carray: str = param("", "carray2bin: a bcolz carray set folder NAME/ (NAME_list.npy beside it)", role="input")
    output: str = param("", "output .bin (pairs2bin, carray2bin) or folder (rec2jpg, bin2jpg)", role="output")
    force: bool = param(False, "start fresh: an output made from other inputs or parameters is removed "
                               "(moved aside if recface did not make it) instead of refused", runtime=True)


    def validate(self, where=""):
        fold_set(self.folds, f"{where}folds")
        if 0 < self.size < 16:
            raise ConfigError(f"{where}size: at least 16 px (or 0: keep the images), got {self.size}")
        missing = [k for k in NEEDS[self.mode] + ("output",) if not getattr(self, k)]
        if missing:
            raise ConfigError(f"{where}mode {self.mode} needs {', '.join(missing)}")


def run(cfg: ConvertConfig | dict, show_progress: bool = True) -> dict:
    """The convert stage: one of its modes."""
    if isinstance(cfg, dict):
        cfg = ConvertConfig.from_dict(cfg)
    c = cfg
    if c.mode == "pairs2bin":
        return pairs2bin(c.images, c.pairs, c.output, c.size or None, c.folds, show_progress=show_progress, force=c.force)
    if c.mode == "rec2jpg":
        return rec2jpg(c.rec, c.output, c.idx or None, c.limit_classes, show_progress=show_progress, force=c.force)
    if c.mode == "bin2jpg":
        return bin2jpg(c.bin, c.output, show_progress=show_progress, force=c.force)
    return carray2bin(c.carray, c.output, force=c.force)


def _begin(out, params: dict, inputs: dict, force: bool) -> dict:
    """Outputs never replace inputs; a rerun resumes only from the same inputs and parameters."""
    check_not_input(out, inputs, f"convert {params['mode']}")
    return begin_output(out, "convert", params, inputs, force)


def carray2bin(carray: str | os.PathLike, out: str | os.PathLike, force: bool = False) -> dict:
    """A bcolz carray verification set (insightface's ``NAME/`` + ``NAME_list.npy``) -> ``.bin`` (PNG, lossless)."""
    from .data.verification_bin import read_carray

    p = Path(carray)
    params = {"mode": "carray2bin"}
    run = _begin(out, params, {"carray": p}, force)
    imgs, issame = read_carray(p.parent, p.name)
    write_bin(out, [encode_image(x, ".png") for x in imgs], issame.tolist())
    res = {"output": str(out), "pairs": int(len(issame)), "images": int(len(imgs)), "positives": int(issame.sum())}
    write_manifest(out, "convert", params, run["inputs"], {"pairs": res["pairs"]})
    return res


def _ext_for(data: bytes, where: str, check_end: bool = False) -> str:
    kind = image_kind(data)
    if kind is None:
        raise FormatError(f"{where}: payload is not a JPEG/PNG/PNM/BMP image ({len(data)} bytes)")
    if check_end and not image_complete(data, kind):
        raise FormatError(f"{where}: truncated {kind.upper()} payload ({len(data)} bytes, no end marker)")
    return {"jpg": ".jpg", "png": ".png", "pnm": ".pgm", "bmp": ".bmp"}[kind]


def rec2jpg(rec: str | os.PathLike, out: str | os.PathLike, idx: str | os.PathLike | None = None,
            limit_classes: int = 0, show_progress: bool = True, force: bool = False) -> dict:
    """Dump an InsightFace ``.rec`` to ``out/<label>/<n>.jpg`` (raw bytes, no re-encode).

    With identity ranges (record 0 header + ``.idx``) each identity is written to a hidden temporary
    folder then renamed, so a rerun skips finished identities. Without them the file is scanned
    sequentially and each image is written atomically and skipped when it exists."""
    rec, out = Path(rec), Path(out)
    params = {"mode": "rec2jpg"}  # limit_classes only says how many identities: a rerun may extend
    run = _begin(out, params, {"rec": rec, "idx": idx}, force)
    written = skipped = 0
    classes_done = classes_skipped = 0
    with RecordIOReader(rec, idx) as r:
        ranges = r.identity_ranges()
        if ranges is not None:
            items = sorted(ranges.items())
            if limit_classes:
                items = items[:limit_classes]
            total = sum(e - s for _, (s, e) in items)
            bar = progress(total=total, desc=f"rec2jpg {rec.name}", unit="img", disable=not show_progress)
            for cls, (s, e) in items:
                final = out / str(cls)
                if final.is_dir():
                    classes_skipped += 1
                    skipped += e - s
                    bar.update(e - s)
                    continue
                tmp = out / f".{cls}.partial"
                if tmp.exists():
                    shutil.rmtree(tmp)
                tmp.mkdir()
                for n, key in enumerate(range(s, e)):
                    header, img = r.read_image(key)
                    where = f"{rec} record {key}"
                    if label_of(header) != cls:
                        raise FormatError(f"{where}: label {label_of(header)} inside the image range of identity {cls}")
                    (tmp / f"{n}{_ext_for(img, where, check_end=True)}").write_bytes(img)
                    written += 1
                    bar.update(1)
                os.replace(tmp, final)
                classes_done += 1
            bar.close()
            num_classes = len(items)
        else:
            counters: dict[int, int] = {}
            bar = progress(total=r.size, desc=f"rec2jpg {rec.name} (sequential)", unit="B", unit_scale=True,
                           disable=not show_progress)
            last = 0
            for offset, payload in r:
                header, img = unpack_record(payload, f"{rec} offset {offset}")
                bar.update(offset - last)
                last = offset
                if not img:
                    continue  # header-only record
                cls = label_of(header)
                n = counters.get(cls, 0)
                counters[cls] = n + 1
                where = f"{rec} offset {offset}"
                target = out / str(cls) / f"{n}{_ext_for(img, where, check_end=True)}"
                if target.exists():
                    skipped += 1
                    continue
                atomic_write_bytes(target, img)
                written += 1
            bar.close()
            num_classes = len(counters)
    if num_classes == 0:
        raise FormatError(f"{rec}: no images in the file (0 identities); nothing to convert")
    res = {"rec": str(rec), "output": str(out), "classes": num_classes, "images_written": written,
           "images_skipped": skipped, "classes_written": classes_done, "classes_skipped": classes_skipped}
    write_manifest(out, "convert", params, run["inputs"], {"classes": num_classes, "images": written + skipped,
                                                           "limit_classes": limit_classes})
    return res


def bin_info(path: str | os.PathLike) -> dict:
    return read_bin(path).info()


def bin2jpg(path: str | os.PathLike, out: str | os.PathLike, show_progress: bool = True, force: bool = False) -> dict:
    """Dump a ``.bin`` to ``out/same/<pair>_{a,b}.jpg`` and ``out/diff/...`` plus ``pairs.csv``."""
    out = Path(out)
    params = {"mode": "bin2jpg"}
    run = _begin(out, params, {"bin": path}, force)
    ps = read_bin(path)
    rows = ["pair,same,image_a,image_b"]
    for i in progress(range(ps.num_pairs), desc=f"bin2jpg {Path(path).name}", unit="pair", disable=not show_progress):
        sub = "same" if ps.issame[i] else "diff"
        names = []
        for k in (0, 1):
            data = ps.images[2 * i + k]
            ext = _ext_for(data, f"{path} image {2 * i + k}")
            rel = f"{sub}/{i:05d}_{'ab'[k]}{ext}"
            target = out / rel
            if not target.exists():
                atomic_write_bytes(target, data)
            names.append(rel)
        rows.append(f"{i},{int(ps.issame[i])},{names[0]},{names[1]}")
    atomic_write_bytes(out / "pairs.csv", ("\n".join(rows) + "\n").encode())
    info = ps.info()
    res = {"bin": str(path), "output": str(out), "pairs": info["pairs"], "positives": info["positives"],
           "negatives": info["negatives"], "images": info["images"]}
    write_manifest(out, "convert", params, run["inputs"], {k: res[k] for k in ("pairs", "images")})
    return res


def _resize_to(data: bytes, size: int, where: str) -> bytes:
    import cv2

    img = decode_image(data, where)
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return data
    # centre square crop then resize: keeps the face centred as in LFW's layout
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    img = cv2.resize(img[y0:y0 + s, x0:x0 + s], (size, size), interpolation=cv2.INTER_AREA)
    return encode_image(img, ".jpg", 95)


def pairs2bin(images: str | os.PathLike, pairs: str | os.PathLike, out: str | os.PathLike,
              size: int | None = None, folds: list[int] | None = None, show_progress: bool = True,
              force: bool = False) -> dict:
    """Build an InsightFace-style ``.bin`` from an image folder and a pairs file.

    Image bytes are copied as they are (each referenced file checked to decode); with ``size`` an
    image of another size is centre-cropped to a square and resized, then re-encoded (JPEG q95).
    ``folds`` (1-based) keeps only those folds of the pairs file."""
    params = {"mode": "pairs2bin", "size": size, "folds": folds}
    run = _begin(out, params, {"pairs": pairs, "images": images}, force)
    plist = read_pairs(pairs, images)
    wanted = fold_set(folds)
    if wanted is not None:
        plist = [p for p in plist if p.fold in wanted]
    cache: dict[Path, bytes] = {}
    imgs: list[bytes] = []
    for p in progress(plist, desc=f"pairs2bin {Path(pairs).name}", unit="pair", disable=not show_progress):
        for q in (p.path1, p.path2):
            if q not in cache:
                data = q.read_bytes()
                where = f"{q} (pairs line {p.line})"
                if size:
                    data = _resize_to(data, size, where)
                else:
                    decode_image(data, where)
                cache[q] = data
            imgs.append(cache[q])
    issame = [p.same for p in plist]
    write_bin(out, imgs, issame)
    pos = int(np.sum(issame))
    res = {"output": str(out), "pairs": len(plist), "images": len(imgs), "distinct_images": len(cache),
           "positives": pos, "negatives": len(plist) - pos}
    write_manifest(out, "convert", params, run["inputs"], {k: res[k] for k in ("pairs", "images", "positives")})
    return res


__all__ = ["ConvertConfig", "run", "rec2jpg", "bin_info", "bin2jpg", "pairs2bin", "carray2bin", "PairSet"]
