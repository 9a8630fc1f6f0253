"""Helpers that keep the stage notebooks thin: Colab set-up, showing a stage's plots and key
figures inline, and writing the stage summary that ``recface pipeline`` collects."""
from __future__ import annotations

import sys
from pathlib import Path

from .io_utils import atomic_write_json

PLOT_KEYS = ("aligned_grid", "failures_grid", "curves", "confusion", "errors_gallery")
HIDE = ("history", "rows", "comparison", "skipped_items", "identified")


def colab_setup(mount_drive: bool = False) -> None:
    """On Colab: mount Google Drive at /content/drive when asked (checkpoints' ``copy_to``)."""
    if "google.colab" in sys.modules and mount_drive:
        from google.colab import drive  # type: ignore
        drive.mount("/content/drive")


def _images(result: dict) -> list[str]:
    out = [result[k] for k in PLOT_KEYS if isinstance(result.get(k), str) and Path(result[k]).is_file()]
    out += [p for p in result.get("plots") or [] if Path(p).is_file()]
    return out


def show_results(stage: str, result: dict, summary_path: str = "") -> dict:
    """Display the key figures and the stage's PNG plots; save the summary for the pipeline."""
    try:
        from IPython.display import Image, Markdown, display
    except ImportError:  # plain Python
        display = print
        Image = Markdown = str  # noqa: N806
    lines = [f"**{stage}**"]
    for k, v in result.items():
        if k in HIDE or k.startswith("_"):
            continue
        lines.append(f"- {k}: `{str(v)[:300]}`")
    display(Markdown("\n".join(lines)))
    if result.get("table") and Path(result["table"]).is_file():
        display(Markdown(Path(result["table"]).read_text()))
    for p in _images(result):
        display(Image(filename=p))
    if summary_path:
        atomic_write_json(summary_path, result)
    return result


