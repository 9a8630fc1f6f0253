"""Training checkpoints: ``<run>/checkpoints/ckpt-<step>/`` holding ``model.weights.h5`` (backbone
and head), ``optimizer.npz`` (every optimizer variable: step counter, momenta, weight decay),
``state.json`` (global step, stage, segment, history so far, seed, the run's fingerprint).

A checkpoint is written to a temporary directory and renamed, then ``latest.json`` is replaced
atomically, so a kill at any moment leaves the previous checkpoint intact. ``copy_to`` (a Drive
mount on Colab) receives the same directory after it is complete; ``find_latest`` looks in both
places and takes the newest complete checkpoint."""
from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np

from ..errors import FormatError
from ..io_utils import atomic_write_json
from ..manifest import clean_stale

FILES = ("model.weights.h5", "optimizer.npz", "state.json")


def _name(step: int) -> str:
    return f"ckpt-{step:09d}"


def _publish(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_json(final.parent / "latest.json", {"checkpoint": final.name})


def save_checkpoint(ckpt_dir: str | os.PathLike, model, optimizer, state: dict, keep: int = 2,
                    copy_to: str | None = None) -> Path:
    root = Path(ckpt_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / _name(int(state["global_step"]))
    clean_stale(root)  # temporaries of a killed save
    tmp = root / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    model.save_weights(str(tmp / "model.weights.h5"))
    vals = {f"v{i:04d}": np.asarray(v.numpy() if hasattr(v, "numpy") else v) for i, v in enumerate(optimizer.variables)}
    names = [v.path if hasattr(v, "path") else v.name for v in optimizer.variables]
    with open(tmp / "optimizer.npz", "wb") as f:
        np.savez(f, names=np.asarray(names), **vals)
    (tmp / "state.json").write_text(json.dumps(state, indent=1, default=str))
    _publish(tmp, final)
    for old in sorted(root.glob("ckpt-*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    if copy_to:
        croot = Path(copy_to)
        croot.mkdir(parents=True, exist_ok=True)
        clean_stale(croot)
        ctmp = croot / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
        shutil.copytree(final, ctmp)
        _publish(ctmp, croot / final.name)
        for old in sorted(croot.glob("ckpt-*"))[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _complete(d: Path) -> bool:
    return d.is_dir() and all((d / f).is_file() for f in FILES)


def find_latest(*roots) -> Path | None:
    """The complete checkpoint with the highest step among the given directories (None: none)."""
    best = None
    for r in roots:
        if not r:
            continue
        for d in Path(r).glob("ckpt-*"):
            if _complete(d) and (best is None or d.name > best.name):
                best = d
    return best


def read_state(ckpt: str | os.PathLike) -> dict:
    p = Path(ckpt) / "state.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise FormatError(f"{p}: cannot read checkpoint state ({e})") from e


def load_checkpoint(ckpt: str | os.PathLike, model, optimizer) -> dict:
    """Restore weights and optimizer variables (the optimizer must be built for ``model``)."""
    d = Path(ckpt)
    if not _complete(d):
        raise FormatError(f"{d}: not a complete checkpoint (needs {', '.join(FILES)})")
    try:
        model.load_weights(str(d / "model.weights.h5"))
    except Exception as e:  # h5py/Keras raise many types for a damaged or mismatched file
        msg = " ".join(str(e).split())  # one line
        m = re.search(r"variable\.shape=\((\d+), (\d+)\), Received: value\.shape=\((\d+), (\d+)\)", msg)
        if m and m.group(1, 2) == m.group(4, 3) and "head" in msg:
            msg = ("its class centres are stored as columns (dim x classes), as recface wrote them before "
                   "2026-11-24; centres are rows now: finish that run with the recface that started it, or start "
                   "over (resume: false or a new output folder)")
        raise FormatError(f"{d / 'model.weights.h5'}: cannot load into {model.name} ({msg[:600]})") from e
    with np.load(d / "optimizer.npz", allow_pickle=False) as z:
        names = list(z["names"])
        if len(names) != len(optimizer.variables):
            raise FormatError(f"{d / 'optimizer.npz'}: {len(names)} optimizer variables, the model needs "
                              f"{len(optimizer.variables)} (different backbone, head or optimizer?)")
        for i, v in enumerate(optimizer.variables):
            a = z[f"v{i:04d}"]
            if tuple(a.shape) != tuple(v.shape):
                raise FormatError(f"{d / 'optimizer.npz'}: variable {names[i]} has shape {a.shape}, expected {tuple(v.shape)}")
            v.assign(a)
    return read_state(d)
