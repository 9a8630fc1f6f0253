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


def open_bundle(path: str | os.PathLike, need: tuple = ()) -> tuple[dict, dict[str, bytes]]:
    """(recface.json, {member: bytes}) of a bundle; a clear error for a corrupt or partial zip.
    SavedModel files are not read into memory."""
    p = Path(path)
    if not p.is_file():
        raise FormatError(f"{p}: no such bundle file")
    try:
        with zipfile.ZipFile(p) as z:
            bad = z.testzip()
            if bad:
                raise FormatError(f"{p}: member {bad} is corrupt (CRC mismatch)")
            names = set(z.namelist())
            if SPEC not in names:
                raise FormatError(f"{p}: no {SPEC} (not a recface bundle)")
            spec = json.loads(z.read(SPEC))
            missing = [m for m in need if m not in names]
            if missing:
                raise FormatError(f"{p}: bundle lacks {', '.join(missing)} (has {', '.join(sorted(names))})")
            files = {n: z.read(n) for n in names if not n.startswith("saved_model/")}
    except zipfile.BadZipFile as e:
        raise FormatError(f"{p}: not a valid zip file ({e}); the bundle is truncated or damaged") from e
    except (OSError, EOFError, zlib.error) as e:
        raise FormatError(f"{p}: cannot read the bundle ({e}); it is damaged") from e
    except json.JSONDecodeError as e:
        raise FormatError(f"{p}: {SPEC} is not valid JSON ({e})") from e
    return spec, files


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
