"""Helpers that keep the stage notebooks thin: Colab set-up, showing a stage's plots and key
figures inline, and writing the stage summary that ``recface pipeline`` collects."""
from __future__ import annotations

import sys
from pathlib import Path

from .io_utils import atomic_write_json

HIDE = ("history", "rows", "comparison", "skipped_items", "identified", "failures")


def colab_setup(mount_drive: bool = False) -> None:
    """On Colab: mount Google Drive at /content/drive when asked (checkpoints' ``copy_to``)."""
    if "google.colab" in sys.modules and mount_drive:
        from google.colab import drive  # type: ignore
        drive.mount("/content/drive")


def show_results(result, summary_path: str = ""):
    """Display a :class:`~recface_lib.stages.StageResult`: key figures, its tables and PNG plots;
    save the summary for the pipeline."""
    try:
        from IPython.display import Image, Markdown, display
    except ImportError:  # plain Python
        display = print
        Image = Markdown = str  # noqa: N806
    lines = [f"**{result.stage}**"]
    for k, v in result.summary.items():
        if k in HIDE or k.startswith("_"):
            continue
        lines.append(f"- {k}: `{str(v)[:300]}`")
    display(Markdown("\n".join(lines)))
    for t in result.tables:
        display(Markdown(Path(t).read_text()))
    for p in result.figures:
        display(Image(filename=p))
    if summary_path:
        atomic_write_json(summary_path, result.summary)
    return result
