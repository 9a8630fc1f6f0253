"""Plots shown in notebooks and saved as PNG: ROC curves, similarity histograms, face grids,
training curves."""
from __future__ import annotations

import math
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
    from .io_utils import atomic_path

    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return path


def _far_axes(fig, ax, far_min: float, title: str, path):
    """The TAR-vs-FAR look shared by ROC figures: log FAR axis from ``far_min``, grid, legend."""
    ax.set_xscale("log")
    ax.set_xlim(far_min, 1)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if path:
        _save(fig, path)
    return fig


def plot_roc(results: Mapping[str, "object"], path=None, title: str = "ROC"):
    """ROC curves (log FAR axis) of several VerificationResults on one figure."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, r in results.items():
        fpr, tpr = np.asarray(r.roc_fpr), np.asarray(r.roc_tpr)
        ax.plot(np.maximum(fpr, 1e-5), tpr, label=f"{name}: {100 * r.accuracy:.2f}%, AUC {r.auc:.4f}")
    return _far_axes(fig, ax, 1e-4, title, path)


def plot_tar_far(curves: Mapping[str, tuple], path=None, title: str = "TAR vs FAR"):
    """IJB-style verification curves: TAR against FAR (log axis, 1e-6 .. 1), one line per model."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, (fpr, tpr) in curves.items():
        ax.plot(np.maximum(np.asarray(fpr), 1e-7), tpr, label=name)
    return _far_axes(fig, ax, 1e-6, title, path)


def plot_similarity_hist(cos_sim: np.ndarray, issame: Sequence[bool], threshold: float | None = None, path=None,
                         title: str = "cosine similarity of pairs"):
    plt = _plt()
    same = np.asarray(issame, dtype=bool)
    fig, ax = plt.subplots(figsize=(6, 4))
    lo, hi = float(np.min(cos_sim)), float(np.max(cos_sim))
    pad = 0.02 * max(hi - lo, 1e-3)
    bins = np.linspace(lo - pad, hi + pad, 81)  # the data's range: some embedders live in a narrow cone
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


def face_grid(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, cols: int = 8, cell: int = 112,
              title: str = "") -> np.ndarray:
    """A mosaic (RGB uint8) of images resized to ``cell`` px with captions, built with NumPy/OpenCV
    (milliseconds, so a report over thousands of items does not wait for matplotlib)."""
    import cv2

    n = max(1, len(images))
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    cap = 14 if titles else 0
    head = 20 if title else 0
    grid = np.full((head + rows * (cell + cap), cols * cell, 3), 255, np.uint8)
    for i, im in enumerate(images):
        im = np.asarray(im)
        if im.ndim == 2:
            im = np.repeat(im[:, :, None], 3, 2)
        r, c = divmod(i, cols)
        y, x = head + r * (cell + cap), c * cell
        grid[y:y + cell, x:x + cell] = cv2.resize(im, (cell, cell), interpolation=cv2.INTER_AREA)
        if titles:
            cv2.putText(grid, str(titles[i])[-22:], (x + 2, y + cell + 10), cv2.FONT_HERSHEY_PLAIN, 0.7, (0, 0, 0), 1,
                        cv2.LINE_AA)
    if title:
        cv2.putText(grid, title, (4, 14), cv2.FONT_HERSHEY_PLAIN, 1.0, (0, 0, 0), 1, cv2.LINE_AA)
    return grid


def plot_face_grid(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, path=None, cols: int = 8,
                   title: str = "") -> np.ndarray:
    """Save :func:`face_grid` as PNG (atomically) and return it; show it with ``plt.imshow``."""
    grid = face_grid(images, titles, cols, title=title)
    if path:
        from .io_utils import atomic_write_bytes, encode_image

        atomic_write_bytes(path, encode_image(grid, ".png"))
    return grid


def plot_lr_plan(schedule, path=None, title: str = "learning-rate plan"):
    """A plan's learning rate against the global step, stage boundaries (dashed) and validation
    points (dots) marked; ``schedule`` is a ``train.plan.PlanSchedule``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 2.2))
    n = max(schedule.total_steps, 1)
    xs = np.unique(np.linspace(0, n - 1, min(n, 400)).astype(int))
    ax.plot(xs, [schedule.lr_at(int(s)) for s in xs], lw=1.5)
    vals = []
    for si in range(len(schedule.stages)):
        start = schedule.stage_start[si]
        if si:
            ax.axvline(start, color="grey", lw=0.8, ls="--")
        vals += [start + schedule.seg_len[si] * (k + 1) for k in range(schedule.n_segments[si])]
    ax.plot(vals, [schedule.lr_at(max(v - 1, 0)) for v in vals], "o", ms=3, color="C3", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("lr")
    ax.set_yscale("log" if min(schedule.lr_at(int(s)) for s in xs) > 0 else "linear")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    if path:
        _save(fig, path)
    return fig


def plot_compare_curves(histories: Mapping[str, Sequence[Mapping]], path=None, title: str = "runs compared"):
    """Several runs' training curves overlaid: loss (left) and validation accuracies (right, one
    line style per pair set), one colour per run."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    styles = ("o-", "s--", "^:", "d-.")
    for i, (name, rows) in enumerate(histories.items()):
        if not rows:
            continue
        color = f"C{i % 10}"
        steps = [r["global_step"] for r in rows]
        a1.plot(steps, [r.get("loss") for r in rows], "o-", ms=3, color=color, label=name)
        sets = [k for k in rows[0] if k.startswith("val_") and not k.endswith("_std")]
        for j, k in enumerate(sets):
            a2.plot(steps, [r.get(k) for r in rows], styles[j % len(styles)], ms=3, color=color,
                    label=f"{name}: {k[4:]}")
    for a, what in ((a1, "loss"), (a2, "validation accuracy")):
        a.set_xlabel("step")
        a.set_ylabel(what)
        a.set_title(f"{title}: {what}")
        a.grid(True, alpha=0.3)
        a.legend(fontsize=7)
    if path:
        _save(fig, path)
    return path or fig


def plot_training_curves(history: Sequence[Mapping], path=None, title: str = "training"):
    """Loss, training accuracy and validation accuracies against the global step; with facenet's
    held-out validation also the wiki's train / held-out cross-entropy and accuracy."""
    plt = _plt()
    steps = [r["global_step"] for r in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.plot(steps, [r.get("loss") for r in history], "o-", ms=3, label="loss")

    def some(key):  # the rows that have ``key`` (held-out validation runs every N segment ends)
        pts = [(r["global_step"], r[key]) for r in history if isinstance(r.get(key), (int, float))]
        return [x for x, _ in pts], [y for _, y in pts]
    if any("heldout_xent" in r for r in history):  # facenet's wiki: train / validation cross-entropy
        if any("loss_margin" in r for r in history):
            a1.plot(*some("loss_margin"), "^-", ms=3, label="train cross-entropy")
        a1.plot(*some("heldout_xent"), "s--", ms=3, label="held-out cross-entropy")
        a1.legend(fontsize=8, loc="upper right")
    a1.set_xlabel("step")
    a1.set_ylabel("loss")
    a1.set_title(f"{title}: loss")
    if any(math.isfinite(r.get("accuracy", math.nan)) for r in history):
        a2.plot(steps, [r.get("accuracy") for r in history], "o-", ms=3, label="train accuracy")
    if any("cosine" in r for r in history):  # distillation: agreement with the teacher
        a2.plot(steps, [r.get("cosine") for r in history], "^-", ms=3, label="cosine to the teacher")
    if any("heldout_accuracy" in r for r in history):
        a2.plot(*some("heldout_accuracy"), "s--", ms=3, label="held-out accuracy")
    for k in history[0] if history else []:
        if k.startswith("val_") and not k.endswith("_std"):
            a2.plot(steps, [r.get(k) for r in history], "s-", ms=3, label=k[4:])
    a2.set_xlabel("step")
    a2.set_ylabel("accuracy / cosine" if any("cosine" in r for r in history) else "accuracy")
    a2.set_ylim(0, 1.01)
    a2.set_title(f"{title}: accuracy")
    for a in (a1, a2):
        a.grid(True, alpha=0.3)
    if a2.get_legend_handles_labels()[0]:  # a run without a head or validation has nothing to label
        a2.legend(fontsize=8, loc="lower right")
    stage_changes = [r["global_step"] for prev, r in zip(history, history[1:]) if r["stage"] != prev["stage"]]
    for s in stage_changes:
        for a in (a1, a2):
            a.axvline(s, color="grey", lw=0.6, ls="--")
    if path:
        _save(fig, path)
    return fig
