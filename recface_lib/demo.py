"""``make demo``: the main job on the default demo data (LFW from $RECFACE_DATA/lfw).

Runs every stage that exists so far, in pipeline order, writing to ``runs/demo/``."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def find_lfw() -> Path:
    """LFW offline: $RECFACE_LFW_DIR, else $RECFACE_DATA/lfw, else ../shared/data/lfw."""
    cands = [os.environ.get("RECFACE_LFW_DIR"),
             os.environ.get("RECFACE_DATA") and str(Path(os.environ["RECFACE_DATA"]) / "lfw"),
             str(Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw")]
    for c in cands:
        if c and (Path(c) / "pairs.txt").is_file():
            return Path(c)
    raise SystemExit("LFW not found: set RECFACE_LFW_DIR to a folder holding pairs.txt and lfw-deepfunneled/")


def main() -> int:
    from .convert import bin_info, pairs2bin

    lfw = find_lfw()
    out = Path("runs/demo")
    out.mkdir(parents=True, exist_ok=True)
    print(f"[convert] LFW from {lfw}")
    s = pairs2bin(lfw / "lfw-deepfunneled", lfw / "pairs.txt", out / "lfw.bin")
    print(f"[convert] wrote {s['out']}: {s['pairs']} pairs, {s['images']} images, {s['positives']} positives")
    info = bin_info(out / "lfw.bin")
    print(f"[convert] bin-info: {info['image_sizes']}")
    print("[align/build/train/evaluate/export] not yet built: see the open issues")
    return 0


if __name__ == "__main__":
    sys.exit(main())
