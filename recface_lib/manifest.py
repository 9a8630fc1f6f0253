"""Lineage: the one place where stage manifests are written and read, and where the
**preprocessing contract** is defined.

Every stage writes ``manifest.json`` beside (or inside) its output: the stage, its inputs with a
content fingerprint, its parameters, counts, the library version and, where the output is face
data or a model, the preprocessing contract. The next stage reads it.

The preprocessing contract is what production must repeat to feed a model what it was trained
on. It is born in the align stage (``AlignConfig.contract()``) or declared for data aligned
elsewhere (``declared_contract``), copied by build into ``metadata.json``, by train (plus the
model's normalisation and input size) into ``model.json`` and by export into ``recface.json``.
``FaceRecognizer`` aligns exactly as it says and refuses a model without one."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError, FormatError

MANIFEST = "manifest.json"

# the alignment keys every contract has (template: the 5 points at ``size``)
CONTRACT_KEYS = ("detector", "landmark_model", "method", "size", "template", "square", "margin", "select",
                 "min_prob", "min_face_size", "upsample", "color_order", "source")
# what a model adds: the numbers fed to the network
MODEL_CONTRACT_KEYS = ("input_size", "normalization")
ARCFACE_TEMPLATE_112 = ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655),
                        (70.7299, 92.2041))
DECLARABLE = {"detector": "mtcnn", "landmark_model": "mtcnn", "method": "landmarks", "square": False, "margin": 0,
              "select": "center", "min_prob": 0.4, "min_face_size": 20, "upsample": 1, "color_order": "RGB"}


def template_at(size: int) -> list[list[float]]:
    """The InsightFace five points scaled to a ``size`` x ``size`` crop (rounded to 1e-4 px)."""
    return [[round(x * size / 112.0, 4), round(y * size / 112.0, 4)] for x, y in ARCFACE_TEMPLATE_112]


def check_contract(c: Any, where: str, model: bool = False) -> dict:
    """The contract ``c`` if complete; else an error saying which keys are missing and how to get one."""
    need = CONTRACT_KEYS + (MODEL_CONTRACT_KEYS if model else ())
    if not isinstance(c, dict):
        raise FormatError(f"{where}: no preprocessing contract (how faces were detected and aligned: "
                          f"{', '.join(need)}); the data was not aligned by recface align and declared none "
                          "(build with assume_aligned: SIZE or contract_file: FILE.yaml)")
    missing = [k for k in need if k not in c]
    if missing:
        raise FormatError(f"{where}: preprocessing contract lacks {', '.join(missing)}")
    return c


def declared_contract(assume_aligned: int = 0, contract_file: str = "") -> dict | None:
    """A contract for faces aligned outside recface: ``assume_aligned: SIZE`` (InsightFace's
    convention: the 5-point ArcFace template at SIZE px, MTCNN-style landmarks) or a YAML file with
    any of the contract's keys (the others take those defaults). None when neither is given."""
    if contract_file:
        import yaml

        p = Path(contract_file)
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{p}: cannot read the contract file ({e})") from e
        if not isinstance(d, dict) or "size" not in d:
            raise ConfigError(f"{p}: a contract file is a mapping with at least size (and detector, method, ...)")
        unknown = [k for k in d if k not in CONTRACT_KEYS]
        if unknown:
            raise ConfigError(f"{p}: unknown contract key(s) {', '.join(unknown)}; valid: {', '.join(CONTRACT_KEYS)}")
        size = int(d["size"])
        return {**DECLARABLE, "size": size, "template": template_at(size), **d, "source": f"declared in {p}"}
    if assume_aligned:
        return {**DECLARABLE, "size": int(assume_aligned), "template": template_at(int(assume_aligned)),
                "source": f"assumed (assume_aligned: {int(assume_aligned)})"}
    return None


# -- fingerprints ----------------------------------------------------------------------------------
def fingerprint(path: str | os.PathLike) -> dict:
    """A cheap content fingerprint: for a file its size and the SHA-256 of its first and last MiB
    (whole content when smaller); for a folder the SHA-256 of every file's relative path and size
    (and of a manifest inside it, whose own fingerprints cover its inputs)."""
    p = Path(path)
    if p.is_file():
        h = hashlib.sha256()
        size = p.stat().st_size
        with open(p, "rb") as f:
            h.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(size - (1 << 20))
                h.update(f.read())
            elif size > 1 << 20:
                h.update(f.read())
        return {"path": str(p.resolve()), "kind": "file", "bytes": size, "sha256": h.hexdigest()[:32]}
    if p.is_dir():
        h = hashlib.sha256()
        n = total = 0
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                q = Path(root) / name
                rel = q.relative_to(p).as_posix()
                size = q.stat().st_size
                h.update(f"{rel}\0{size}\n".encode())
                if name == MANIFEST and q.parent == p:
                    h.update(q.read_bytes())
                n += 1
                total += size
        return {"path": str(p.resolve()), "kind": "folder", "files": n, "bytes": total, "sha256": h.hexdigest()[:32]}
    return {"path": str(p), "kind": "missing"}


# -- manifests -------------------------------------------------------------------------------------
def manifest_path(output: str | os.PathLike) -> Path:
    """A folder's manifest is inside it; a file's (``x.bin``, ``x.zip``) is ``x.manifest.json`` beside it."""
    out = Path(output)
    if out.suffix in (".bin", ".zip", ".rec") or (out.exists() and out.is_file()):
        return out.with_name(out.stem + ".manifest.json")
    return out / MANIFEST


def write_manifest(output: str | os.PathLike, stage: str, parameters: dict, inputs: dict | None = None,
                   counts: dict | None = None, contract: dict | None = None, **extra) -> Path:
    """Write (atomically) the manifest of ``stage`` for ``output``; ``inputs`` maps a role to a path
    (fingerprinted here) or to an already computed fingerprint."""
    from . import __version__
    from .io_utils import atomic_write_json

    fps = {k: (v if isinstance(v, dict) else fingerprint(v)) for k, v in (inputs or {}).items() if v}
    m = {"stage": stage, "recface_version": __version__, "output": str(output), "inputs": fps,
         "parameters": parameters, "counts": counts or {}, "preprocessing": contract, **extra}
    return atomic_write_json(manifest_path(output), m)


def read_manifest(output: str | os.PathLike) -> dict | None:
    """The manifest written for ``output``, None when there is none; a damaged one is an error."""
    p = manifest_path(output)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise FormatError(f"{p}: unreadable manifest ({e})") from e


def input_contract(path: str | os.PathLike) -> dict | None:
    """The preprocessing contract recorded with an earlier stage's output ``path`` (None if none)."""
    m = read_manifest(path)
    return None if m is None else m.get("preprocessing")


__all__ = ["CONTRACT_KEYS", "MODEL_CONTRACT_KEYS", "check_contract", "declared_contract", "fingerprint",
           "input_contract", "manifest_path", "read_manifest", "template_at", "write_manifest"]
