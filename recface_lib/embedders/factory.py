"""Embedders by name or path, and the parallel runner."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..parallel import chunked, parallel_map
from ..progress import progress
from .base import Embedder


def make_embedder(spec: str, backend: str = "keras", weights: str = "final") -> Embedder:
    """``dlib_resnet``, a training run folder (Keras) or an export bundle ``.zip`` (``backend``:
    onnx or keras)."""
    if spec == "dlib_resnet":
        from .dlib_resnet import DlibResNetEmbedder
        return DlibResNetEmbedder()
    p = Path(spec)
    if p.is_file():
        from .model import load_bundle
        return load_bundle(p, "onnx" if backend == "auto" else backend)[0]
    if p.is_dir():
        from .model import load_run
        return load_run(p, weights)
    raise ConfigError(f"embedder: {spec!r} is neither 'dlib_resnet', a training run folder nor a bundle .zip "
                      "(no such path)")


def model_identity(spec: str, weights: str = "final") -> str:
    """What a classifier is tied to: ``dlib_resnet``, or the SHA-256 of a run's weights file (a
    bundle records the one it was exported from). A retrained run has another identity; a run
    copied elsewhere keeps its own."""
    if spec == "dlib_resnet":
        return "dlib_resnet"
    p = Path(spec)
    if p.is_file():
        from ..bundle import open_bundle
        return open_bundle(p, read=())[0].get("weights_sha256") or ""
    if p.is_dir():
        from ..manifest import fingerprint
        from .model import run_weights
        return "sha256:" + fingerprint(run_weights(p, weights))["sha256"]
    return ""


def model_contract(spec: str) -> dict | None:
    """A run's or a bundle's preprocessing contract, read from model.json / recface.json without
    loading the model (None: dlib_resnet, or a model that records none)."""
    p = Path(spec)
    if spec != "dlib_resnet" and p.is_file():
        from ..bundle import open_bundle
        return open_bundle(p, read=())[0].get("preprocessing")
    if spec != "dlib_resnet" and p.is_dir():
        from .model import read_run_spec
        return read_run_spec(p).get("preprocessing")
    return None


def embed_parallel(spec: str, items: list, workers: int = 1, backend: str = "keras", chunk: int = 32,
                   desc: str = "embed", show_progress: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """``make_embedder(spec).embed_items(items)`` over ``workers`` processes, with a progress bar."""
    if spec != "dlib_resnet" and not Path(spec).exists():  # fail before any worker starts
        make_embedder(spec, backend)
    bar = progress(total=len(items), desc=f"{desc} ({Path(str(spec)).name})", unit="img", disable=not show_progress)
    es, efs, stats = [], [], {}
    for e, ef, st in parallel_map(make_embedder, {"spec": str(spec), "backend": backend}, "embed_items",
                                  chunked(items, chunk), workers, on_result=lambda r: bar.update(len(r[0]))):
        es.append(e)
        efs.append(ef)
        for k, v in st.items():
            stats[k] = stats.get(k, 0) + v
    bar.close()
    if not es:
        return np.zeros((0, 0)), np.zeros((0, 0)), stats
    return np.concatenate(es), np.concatenate(efs), stats
