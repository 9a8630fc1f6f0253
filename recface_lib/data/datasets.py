"""Where public datasets are found. Offline-first: a local copy given by an environment variable,
the workplace's ``shared/data`` beside the repository, or what ``recface data lfw`` fetched into
the user cache."""
from __future__ import annotations

import os
from pathlib import Path

from ..io_utils import user_cache_dir


def repository_data_dir() -> Path:
    """``shared/data`` beside the repository (this project's developers have it)."""
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def shared_data_dir() -> Path:
    """The data folder the scenarios' ``$RECFACE_DATA`` means: ``$RECFACE_DATA``, else ``shared/data``
    beside the repository where there is one, else ``data/`` in the user cache (where ``recface data
    lfw`` puts LFW)."""
    env = os.environ.get("RECFACE_DATA")
    if env:
        return Path(env)
    beside = repository_data_dir()
    return beside if beside.is_dir() else user_cache_dir() / "data"


def find_lfw() -> Path:
    """LFW (a folder with pairs.txt and lfw-deepfunneled/): $RECFACE_LFW_DIR, else <data>/lfw."""
    for c in (os.environ.get("RECFACE_LFW_DIR"), shared_data_dir() / "lfw"):
        if c and (Path(c) / "pairs.txt").is_file():
            return Path(c)
    raise FileNotFoundError(f"LFW not found in {shared_data_dir() / 'lfw'}: run `recface data lfw` (or `recface data lfw "
                            "--from PATH` with a local copy), or set RECFACE_DATA to a folder holding lfw/")
