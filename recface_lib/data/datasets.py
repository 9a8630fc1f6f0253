"""Where public datasets are found. Offline-first: a local copy given by an environment variable,
or the workplace's ``shared/data`` beside the repository."""
from __future__ import annotations

import os
from pathlib import Path


def shared_data_dir() -> Path:
    """``$RECFACE_DATA``, else ``shared/data`` beside the repository."""
    env = os.environ.get("RECFACE_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


def find_lfw() -> Path:
    """LFW (a folder with pairs.txt and lfw-deepfunneled/): $RECFACE_LFW_DIR, else <data>/lfw."""
    for c in (os.environ.get("RECFACE_LFW_DIR"), shared_data_dir() / "lfw"):
        if c and (Path(c) / "pairs.txt").is_file():
            return Path(c)
    raise FileNotFoundError("LFW not found: set RECFACE_LFW_DIR to a folder holding pairs.txt and lfw-deepfunneled/ "
                            "(or RECFACE_DATA to a folder holding lfw/)")
