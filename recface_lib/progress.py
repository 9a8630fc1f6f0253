"""One place that makes progress bars (tqdm.auto: a widget in notebooks, text in a terminal)."""
from __future__ import annotations

import os
import sys


def progress(iterable=None, total=None, desc: str = "", disable: bool | None = None, **kw):
    from tqdm.auto import tqdm

    disable = bool(disable) or os.environ.get("RECFACE_NO_PROGRESS") == "1"
    return tqdm(iterable, total=total, desc=desc, disable=disable, file=kw.pop("file", sys.stderr),
                dynamic_ncols=True, mininterval=0.5, **kw)
