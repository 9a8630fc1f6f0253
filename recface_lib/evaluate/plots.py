"""Plots shown in notebooks and saved as PNG: ROC curves, similarity histograms, face grids."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np


def _plt():
    import matplotlib

    if "MPLBACKEND" not in os.environ and matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline",):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    from ..io_utils import atomic_path

    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return path


def plot_roc(results: Mapping[str, "object"], path=None, title: str = "ROC"):
    """ROC curves (log FAR axis) of several VerificationResults on one figure."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, r in results.items():
        fpr, tpr = np.asarray(r.roc_fpr), np.asarray(r.roc_tpr)
        ax.plot(np.maximum(fpr, 1e-5), tpr, label=f"{name}: {100 * r.accuracy:.2f}%, AUC {r.auc:.4f}")
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if path:
        _save(fig, path)
    return fig


def plot_similarity_hist(cos_sim: np.ndarray, issame: Sequence[bool], threshold: float | None = None, path=None,
                         title: str = "cosine similarity of pairs"):
    plt = _plt()
    same = np.asarray(issame, dtype=bool)
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(-1, 1, 81)
    ax.hist(cos_sim[same], bins=bins, alpha=0.6, label=f"same ({same.sum()})", color="tab:green")
    ax.hist(cos_sim[~same], bins=bins, alpha=0.6, label=f"different ({(~same).sum()})", color="tab:red")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("cosine similarity")
    ax.set_title(title)
    ax.legend(fontsize=8)
    if path:
        _save(fig, path)
    return fig


def plot_face_grid(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, path=None, cols: int = 8,
                   title: str = ""):
    """A grid of RGB images (aligned faces, failures) with optional captions."""
    plt = _plt()
    n = max(1, len(images))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.5 + (0.4 if title else 0)), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < len(images):
            im = images[i]
            ax.imshow(im, cmap="gray" if im.ndim == 2 else None)
            if titles:
                ax.set_title(str(titles[i])[:18], fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    if path:
        _save(fig, path)
    return fig
