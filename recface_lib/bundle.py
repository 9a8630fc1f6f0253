"""Export bundle I/O (one ``.zip``): writing (``export``) and reading (``inference``,
``evaluate``) live here together, so neither stage imports the other.

Members: ``recface.json`` (the spec: model, preprocessing contract, checks, metrics),
``embedding.keras``, ``saved_model/``, ``model.onnx``, ``model.tflite``, and optionally
``classifier.json`` + ``classifier.npz``."""
from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path

from .errors import FormatError
from .io_utils import atomic_path

SPEC = "recface.json"


# the members recface reads, with the most each may inflate to (a zip bomb is refused from the
# central directory's sizes, before anything is decompressed); saved_model/ is never read here
MEMBER_LIMITS = {SPEC: 64 << 20, "classifier.json": 64 << 20, "classifier.npz": 2 << 30,
                 "model.onnx": 2 << 30, "model.tflite": 2 << 30, "model_fp16.tflite": 2 << 30,
                 "model_int8.tflite": 2 << 30, "embedding.keras": 2 << 30}


def open_bundle(path: str | os.PathLike, need: tuple = (), read: tuple | None = None) -> tuple[dict, dict[str, bytes]]:
    """(recface.json, {member: bytes}) of a bundle; a clear error for a corrupt, partial or
    oversized zip. Only known members are read (``read``: which of them; default all present),
    each within its size limit and CRC-checked as it is read."""
    p = Path(path)
    if not p.is_file():
        raise FormatError(f"{p}: no such bundle file")
    try:
        with zipfile.ZipFile(p) as z:
            infos = {i.filename: i for i in z.infolist()}
            if SPEC not in infos:
                raise FormatError(f"{p}: no {SPEC} (not a recface bundle)")
            missing = [m for m in need if m not in infos]
            if missing:
                raise FormatError(f"{p}: bundle lacks {', '.join(missing)} (has {', '.join(sorted(infos))})")
            wanted = [n for n in MEMBER_LIMITS if n in infos and (read is None or n in read or n == SPEC or n in need)]
            for n in wanted:
                if infos[n].file_size > MEMBER_LIMITS[n]:
                    raise FormatError(f"{p}: member {n} inflates to {infos[n].file_size} bytes, more than the "
                                      f"{MEMBER_LIMITS[n]} a recface bundle holds (a zip bomb?)")
            files = {n: _read_member(z, n) for n in wanted}
            spec = json.loads(files.pop(SPEC))
            if not isinstance(spec, dict):
                raise FormatError(f"{p}: {SPEC} is not a JSON object")
    except zipfile.BadZipFile as e:
        raise FormatError(f"{p}: not a valid zip file ({e}); the bundle is truncated or damaged") from e
    except (OSError, EOFError, zlib.error, NotImplementedError, RuntimeError) as e:
        raise FormatError(f"{p}: cannot read the bundle ({e}); it is damaged") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{p}: {SPEC} is not valid JSON ({e})") from e
    return spec, files


def _read_member(z: zipfile.ZipFile, name: str) -> bytes:
    """A member, read in blocks and never past its declared size (zipfile checks the CRC at its end)."""
    out = bytearray()
    with z.open(name) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            out += block
            if len(out) > MEMBER_LIMITS[name]:
                raise FormatError(f"{z.filename}: member {name} inflates past {MEMBER_LIMITS[name]} bytes")
    return bytes(out)


def write_bundle(out: str | os.PathLike, spec: dict, files: dict[str, Path]) -> Path:
    """Write the zip atomically: ``files`` maps a member name (a folder name for a whole tree,
    e.g. ``saved_model``) to a path; ``spec`` becomes recface.json."""
    out = Path(out)
    with atomic_path(out, suffix=".zip") as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for name, p in files.items():
            p = Path(p)
            if p.is_dir():
                for f in sorted(p.rglob("*")):
                    if f.is_file():
                        z.write(f, f"{name}/{f.relative_to(p).as_posix()}")
            else:
                z.write(p, name)
        z.writestr(SPEC, json.dumps(spec, indent=1, default=str))
    return out


def is_bundle(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_file() and zipfile.is_zipfile(p)
