"""Stage 1, convert: InsightFace ``.rec/.idx`` and ``.bin`` files to image folders and pair sets.

No mxnet: the formats are read by :mod:`recface_lib.data.recordio` and
:mod:`recface_lib.data.verification_bin`. Every output is written atomically, and reruns skip
finished work.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from .data.lfw_pairs import read_pairs
from .data.recordio import RecordIOReader, label_of, unpack_record
from .data.verification_bin import PairSet, read_bin, write_bin
from .errors import FormatError
from .io_utils import atomic_write_bytes, atomic_write_json, decode_image, encode_image, image_kind
from .progress import progress


def _ext_for(data: bytes, where: str) -> str:
    kind = image_kind(data)
    if kind is None:
        raise FormatError(f"{where}: payload is not a JPEG/PNG/PNM/BMP image ({len(data)} bytes)")
    return {"jpg": ".jpg", "png": ".png", "pnm": ".pgm", "bmp": ".bmp"}[kind]


def rec2jpg(rec: str | os.PathLike, out: str | os.PathLike, idx: str | os.PathLike | None = None,
            limit_classes: int = 0, show_progress: bool = True) -> dict:
    """Dump an InsightFace ``.rec`` to ``out/<label>/<n>.jpg`` (raw bytes, no re-encode).

    With identity ranges (record 0 header + ``.idx``) each identity is written to a hidden temporary
    folder then renamed, so a rerun skips finished identities. Without them the file is scanned
    sequentially and each image is written atomically and skipped when it exists."""
    rec, out = Path(rec), Path(out)
    out.mkdir(parents=True, exist_ok=True)
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
                    (tmp / f"{n}{_ext_for(img, where)}").write_bytes(img)
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
                target = out / str(cls) / f"{n}{_ext_for(img, where)}"
                if target.exists():
                    skipped += 1
                    continue
                atomic_write_bytes(target, img)
                written += 1
            bar.close()
            num_classes = len(counters)
    return {"rec": str(rec), "out": str(out), "classes": num_classes, "images_written": written,
            "images_skipped": skipped, "classes_written": classes_done, "classes_skipped": classes_skipped}


def bin_info(path: str | os.PathLike) -> dict:
    return read_bin(path).info()


def bin2jpg(path: str | os.PathLike, out: str | os.PathLike, show_progress: bool = True) -> dict:
    """Dump a ``.bin`` to ``out/same/<pair>_{a,b}.jpg`` and ``out/diff/...`` plus ``pairs.csv``."""
    ps = read_bin(path)
    out = Path(out)
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
    return {"bin": str(path), "out": str(out), "pairs": info["pairs"], "positives": info["positives"],
            "negatives": info["negatives"], "images": info["images"]}


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
              size: int | None = None, folds: list[int] | None = None, show_progress: bool = True) -> dict:
    """Build an InsightFace-style ``.bin`` from an image folder and a pairs file.

    Image bytes are copied as they are (each referenced file checked to decode); with ``size`` an
    image of another size is centre-cropped to a square and resized, then re-encoded (JPEG q95).
    ``folds`` (0-based) keeps only those folds of the pairs file."""
    plist = read_pairs(pairs, images)
    if folds is not None:
        plist = [p for p in plist if p.fold in set(folds)]
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
    return {"out": str(out), "pairs": len(plist), "images": len(imgs), "distinct_images": len(cache),
            "positives": pos, "negatives": len(plist) - pos}


def write_manifest(out_dir: str | os.PathLike, stage: str, inputs: dict, params: dict, counts: dict) -> Path:
    """The ``manifest.json`` every stage writes beside its output (DESIGN.md)."""
    import platform

    from . import __version__

    return atomic_write_json(Path(out_dir) / "manifest.json", {
        "stage": stage, "inputs": inputs, "parameters": params, "counts": counts,
        "versions": {"recface": __version__, "python": platform.python_version(), "numpy": np.__version__},
    })


__all__ = ["rec2jpg", "bin_info", "bin2jpg", "pairs2bin", "write_manifest", "PairSet"]
