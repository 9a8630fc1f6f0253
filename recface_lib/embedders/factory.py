"""Embedders by name or path, and the parallel runner."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..parallel import chunked, iter_chunks, parallel_map, resolve_workers
from ..progress import progress
from .base import Embedder

# the reference embedders by name (published models that ship in PyPI packages): name -> its class
REFERENCES = {"dlib_resnet": ".dlib_resnet:DlibResNetEmbedder", "sface": ".sface:SFaceEmbedder"}
REFERENCE_NAMES = ", ".join(REFERENCES)


def is_reference(spec) -> bool:
    return str(spec) in REFERENCES


def reference_class(spec: str) -> type:
    import importlib

    mod, cls = REFERENCES[spec].split(":")
    return getattr(importlib.import_module(mod, __package__), cls)


def make_embedder(spec: str, backend: str = "keras", weights: str = "final") -> Embedder:
    """A reference by name (``dlib_resnet``, ``sface``), a training run folder (Keras) or an export
    bundle ``.zip`` (``backend``: onnx or keras)."""
    if is_reference(spec):
        return reference_class(spec)()
    p = Path(spec)
    if p.is_file():
        from .model import load_bundle
        return load_bundle(p, "onnx" if backend == "auto" else backend)[0]
    if p.is_dir():
        from .model import load_run
        return load_run(p, weights)
    raise ConfigError(f"embedder: {spec!r} is neither a reference ({REFERENCE_NAMES}), a training run folder "
                      "nor a bundle .zip (no such path)")


def model_identity(spec: str, weights: str = "final") -> str:
    """What a classifier is tied to: a reference's name, or the SHA-256 of a run's weights file (a
    bundle records the one it was exported from). A retrained run has another identity; a run
    copied elsewhere keeps its own."""
    if is_reference(spec):
        return str(spec)
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
    loading the model (None: a reference, or a model that records none)."""
    p = Path(spec)
    if is_reference(spec):
        return None
    if p.is_file():
        from ..bundle import open_bundle
        return open_bundle(p, read=())[0].get("preprocessing")
    if p.is_dir():
        from .model import read_run_spec
        return read_run_spec(p).get("preprocessing")
    return None


def same_alignment(a: dict | None, b: dict | None) -> bool:
    keys = ("detector", "method", "size", "template", "square", "margin")
    return bool(a and b) and all(a.get(k) == b.get(k) for k in keys)


def embeds_aligned(spec: str, contract: dict | None) -> bool:
    """Whether ``spec`` embeds faces aligned under ``contract`` as they are stored (no second
    detection): a model whose own contract aligns the same way; a reference that says so (sface:
    the template at 112 px; dlib_resnet never: it cuts its own chip from the photo)."""
    if is_reference(spec):
        return bool(getattr(reference_class(spec), "embeds_aligned", lambda c: False)(contract))
    return same_alignment(model_contract(spec), contract)


def embed_parallel(spec: str, items, workers: int = 1, backend: str = "keras", chunk: int = 32,
                   desc: str = "embed", show_progress: bool = True, total: int | None = None,
                   flip: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """``make_embedder(spec).embed_items(items)`` over ``workers`` processes (0: the usable cores,
    in this process for a small job), with a progress bar. ``items``: a list, or an iterable of
    ``total`` items made as they are consumed (a generator of images). ``flip=False``: no mirrored
    embeddings (the second array is then empty)."""
    total = len(items) if total is None else int(total)
    workers = resolve_workers(workers, total)
    if is_reference(spec):  # fail (a missing package, a refused file) before any worker starts
        getattr(reference_class(spec), "prepare_once", lambda: None)()
    elif not Path(spec).exists():  # fail before any worker starts
        make_embedder(spec, backend)
    bar = progress(total=total, desc=f"{desc} ({Path(str(spec)).name})", unit="img", disable=not show_progress)
    es, efs, stats = [], [], {}
    chunks = chunked(items, chunk) if isinstance(items, (list, tuple)) else iter_chunks(items, chunk)
    for e, ef, st in parallel_map(make_embedder, {"spec": str(spec), "backend": backend},
                                  "embed_items" if flip else "embed_items_plain",
                                  chunks, workers, on_result=lambda r: bar.update(len(r[0]))):
        es.append(e)
        efs.append(ef)
        for k, v in st.items():
            stats[k] = stats.get(k, 0) + v
    bar.close()
    if not es:
        return np.zeros((0, 0)), np.zeros((0, 0)), stats
    return np.concatenate(es), np.concatenate(efs), stats
