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
# keys a contract may have (older contracts lack them; readers take the default)
OPTIONAL_CONTRACT_KEYS = ("max_side",)
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
        valid = CONTRACT_KEYS + OPTIONAL_CONTRACT_KEYS
        unknown = [k for k in d if k not in valid]
        if unknown:
            raise ConfigError(f"{p}: unknown contract key(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        size = int(d["size"])
        return {**DECLARABLE, "size": size, "template": template_at(size), **d, "source": f"declared in {p}"}
    if assume_aligned:
        return {**DECLARABLE, "size": int(assume_aligned), "template": template_at(int(assume_aligned)),
                "source": f"assumed (assume_aligned: {int(assume_aligned)})"}
    return None


# -- fingerprints ----------------------------------------------------------------------------------
FULL_HASH_LIMIT = 1 << 30   # files up to 1 GiB are hashed whole
SAMPLE_BLOCKS = 64          # larger files: this many evenly spaced 1 MiB blocks (+ size and mtime)
FOLDER_SAMPLES = 64         # folders: every file's path and size, and the first 64 KiB of this many files


def _hash_file(p: Path, size: int) -> tuple[str, str]:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        if size <= FULL_HASH_LIMIT:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            return h.hexdigest()[:32], "full"
        for k in range(SAMPLE_BLOCKS):
            f.seek((size - (1 << 20)) * k // (SAMPLE_BLOCKS - 1))
            h.update(f.read(1 << 20))
    h.update(f"{size}:{p.stat().st_mtime_ns}".encode())
    return h.hexdigest()[:32], "sampled"


def fingerprint(path: str | os.PathLike) -> dict:
    """The content fingerprint reruns are keyed on. A file: SHA-256 of its whole content (above
    1 GiB: of 64 evenly spaced 1 MiB blocks, its size and mtime). A folder: SHA-256 of every
    visible file's relative path and size, of the first 64 KiB of 64 files spread over the sorted
    list, and of a manifest at its top (whose own fingerprints cover the folder's sources).
    Folder mtimes are left out on purpose: copying a dataset to another disk (Colab: Drive to the
    local SSD) must not make a resume refuse the same data."""
    p = Path(path)
    if p.is_file():
        size = p.stat().st_size
        digest, how = _hash_file(p, size)
        return {"path": str(p.resolve()), "kind": "file", "bytes": size, "sha256": digest, "hash": how}
    if p.is_dir():
        h = hashlib.sha256()
        listing = []
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if not name.startswith("."):
                    listing.append(Path(root) / name)
        total = 0
        for q in listing:
            size = q.stat().st_size
            total += size
            h.update(f"{q.relative_to(p).as_posix()}\0{size}\n".encode())
            if q.name == MANIFEST and q.parent == p:
                h.update(_stable_manifest_bytes(q))
        step = max(1, len(listing) // FOLDER_SAMPLES)
        for q in listing[::step][:FOLDER_SAMPLES]:
            if q.name != MANIFEST:
                with open(q, "rb") as f:
                    h.update(f.read(1 << 16))
        return {"path": str(p.resolve()), "kind": "folder", "files": len(listing), "bytes": total,
                "sha256": h.hexdigest()[:32]}
    return {"path": str(p), "kind": "missing"}


def _stable_manifest_bytes(q: Path) -> bytes:
    """A manifest's lineage (stage, inputs' hashes, parameters, counts), not its paths: the same
    data moved or re-described keeps its fingerprint."""
    try:
        m = json.loads(q.read_text())
    except (OSError, ValueError):
        return q.read_bytes()
    ins = {k: (v.get("sha256") if isinstance(v, dict) else v) for k, v in (m.get("inputs") or {}).items()}
    return json.dumps([m.get("stage"), ins, m.get("parameters"), m.get("counts")], sort_keys=True, default=str).encode()


def fingerprints(inputs: dict) -> dict:
    """role -> fingerprint (a list of them for a list of paths); values that name no file or folder
    (``dlib_resnet``) are kept as given."""
    out = {}
    for k, v in inputs.items():
        if not v:
            continue
        if isinstance(v, dict):
            out[k] = v
        elif isinstance(v, (list, tuple)):
            out[k] = [fingerprint(x) if Path(str(x)).exists() else {"name": str(x)} for x in v]
        else:
            out[k] = fingerprint(v) if Path(str(v)).exists() else {"name": str(v)}
    return out


def _content(fp):
    if isinstance(fp, list):
        return [_content(x) for x in fp]
    return fp.get("sha256", fp.get("name")) if isinstance(fp, dict) else fp


# -- reruns: one rule for every stage ----------------------------------------------------------------
def check_not_input(output: str | os.PathLike, inputs: dict, stage: str) -> None:
    """Outputs never replace inputs: ``output`` (symlinks resolved) must not be an input, lie inside
    an input folder (a run or dataset another stage reads), or contain an input (a fresh start
    would remove it)."""
    if not output:
        return
    ro = Path(output).resolve()
    for role, v in inputs.items():
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            if not x or not Path(str(x)).exists():
                continue
            ri = Path(str(x)).resolve()
            if ri == ro:
                raise ConfigError(f"{stage}: output {output} is the input {role} ({x}); inputs are never replaced")
            if ri.is_dir() and ri in ro.parents:
                raise ConfigError(f"{stage}: output {output} lies inside the input {role} folder {x}; "
                                  "write it elsewhere (inputs are never changed)")
            if ro in ri.parents:
                raise ConfigError(f"{stage}: the input {role} {x} lies inside the output {output}; choose another output")


def _changes(m: dict, stage: str, parameters: dict, fps: dict) -> list[str]:
    out = []
    if m.get("stage") != stage:
        out.append(f"made by the {m.get('stage')} stage, not {stage}")
    old_in = m.get("inputs") or {}
    for role in sorted(set(old_in) | set(fps)):
        a, b = old_in.get(role), fps.get(role)
        if _content(a) != _content(b):
            where = lambda f: (f[0] if isinstance(f, list) and f else f or {}).get("path", (f or {}).get("name", "none")) \
                if isinstance(f, (dict, list)) else "none"
            out.append(f"input {role}: {where(a)} -> {where(b)}" + (" (same path, content changed)" if where(a) == where(b) else ""))
    old_p = m.get("parameters") or {}
    for k in sorted(set(old_p) | set(parameters)):
        if old_p.get(k) != parameters.get(k):
            out.append(f"{k}: {old_p.get(k)!r} -> {parameters.get(k)!r}")
    return out


def clean_stale(folder: str | os.PathLike) -> int:
    """Remove the temporaries a killed run leaves (``.<name>.tmp-*`` files of atomic writes,
    ``.tmp-*`` checkpoint folders, ``.<class>.partial`` folders); returns how many."""
    import shutil

    root = Path(folder)
    if not root.is_dir():
        return 0
    n = 0
    for dirpath, dirs, files in os.walk(root):
        for name in list(dirs) + files:
            if name.startswith(".") and (".tmp-" in name or name.startswith(".tmp-") or name.endswith(".partial")):
                q = Path(dirpath) / name
                shutil.rmtree(q, ignore_errors=True) if q.is_dir() else q.unlink(missing_ok=True)
                if name in dirs:
                    dirs.remove(name)
                n += 1
    return n


def run_key(fps: dict, parameters: dict) -> str:
    """A short key of (input content, parameters): the parts of an output (shards, checkpoints)
    carry it, so a part made under another key is never counted as done."""
    return hashlib.sha256(json.dumps([_content(v) for _, v in sorted(fps.items())] + [parameters], sort_keys=True,
                                     default=str).encode()).hexdigest()[:16]


def begin_output(output: str | os.PathLike, stage: str, parameters: dict, inputs: dict, force: bool = False,
                 contract: dict | None = None) -> dict:
    """The rerun rule of every stage whose output is reused or resumed. An empty or absent output
    starts fresh; one whose manifest has the same stage, input content and parameters resumes; any
    other is refused naming what changed, or with ``force`` removed (moved aside to
    ``<output>.old-<time>`` when recface did not make it: no manifest). Stale temporaries are
    cleaned and a ``running`` manifest is written before any work, so a killed run is recognised
    too. Returns ``{"inputs": fingerprints, "resumed": bool, "replaced": what was done or None}``."""
    import shutil
    import time

    out = Path(output)
    fps = fingerprints(inputs)
    exists = out.is_file() or (out.is_dir() and any(out.iterdir()))
    resumed, replaced = False, None
    if exists:
        try:
            m = read_manifest(out)
        except FormatError:
            m = {"stage": "unreadable"}
        changes = ["it has no recface manifest (not made by recface, or before it kept one)"] if m is None \
            else _changes(m, stage, parameters, fps)
        if changes and not force:
            raise ConfigError(f"{stage}: {out} exists and was made differently: {'; '.join(changes)}. Choose a new "
                              "output, or start fresh with force (--force): it is then removed, never mixed")
        if changes:
            if m is None:
                replaced = f"{out}.old-{time.strftime('%Y%m%d-%H%M%S')}"
                os.replace(out, replaced)
                replaced = f"moved aside to {replaced}"
            else:
                shutil.rmtree(out) if out.is_dir() else out.unlink()
                manifest_path(out).unlink(missing_ok=True)
                replaced = "removed (force)"
        else:
            resumed = True
    if out.is_dir():
        clean_stale(out)
    elif out.parent.is_dir():
        for q in out.parent.glob(f".{out.name}.tmp-*"):
            q.unlink(missing_ok=True)
    write_manifest(out, stage, parameters, fps, {"status": "running"}, contract)
    return {"inputs": fps, "resumed": resumed, "replaced": replaced}


# -- manifests -------------------------------------------------------------------------------------
def manifest_path(output: str | os.PathLike) -> Path:
    """A folder's manifest is inside it; a file's (``x.bin``, ``x.zip``) is ``x.manifest.json`` beside it."""
    out = Path(output)
    if out.suffix in (".bin", ".zip", ".rec") or (out.exists() and out.is_file()):
        return out.with_name(out.stem + ".manifest.json")
    return out / MANIFEST


_COMMIT: list = []


def source_commit() -> str | None:
    """The git commit recface runs from (a source checkout), None for an installed wheel."""
    if not _COMMIT:
        import subprocess

        root = Path(__file__).resolve().parents[1]
        commit = None
        if (root / ".git").exists():
            try:
                commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                        timeout=10).stdout.strip() or None
            except (OSError, subprocess.SubprocessError):
                commit = None
        _COMMIT.append(commit)
    return _COMMIT[0]


def write_manifest(output: str | os.PathLike, stage: str, parameters: dict, inputs: dict | None = None,
                   counts: dict | None = None, contract: dict | None = None, **extra) -> Path:
    """Write (atomically) the manifest of ``stage`` for ``output``; ``inputs`` maps a role to a path
    (fingerprinted here) or to an already computed fingerprint."""
    from . import __version__
    from .io_utils import atomic_write_json

    fps = fingerprints(inputs or {})
    m = {"stage": stage, "recface_version": __version__, "git_commit": source_commit(), "output": str(output), "inputs": fps,
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


__all__ = ["CONTRACT_KEYS", "MODEL_CONTRACT_KEYS", "begin_output", "check_contract", "check_not_input",
           "clean_stale", "declared_contract", "run_key", "fingerprint", "fingerprints", "input_contract", "manifest_path", "read_manifest", "template_at", "write_manifest"]
