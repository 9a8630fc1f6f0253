"""``make demo``: the main job. Runs the ``demo`` scenario end to end on CPU with papermill (the
stage notebooks, parameters from ``papermill_params/demo/``): convert LFW fold 10 to a .bin, align
LFW training people with MTCNN, build TFRecords, train MobileFaceNetV2 + ArcFace briefly, evaluate
on LFW fold 10 against the dlib reference, the friends16 identification test, export a bundle and
identify photos with it. Everything goes to ``runs/demo/``; the summary is ``runs/demo/summary.md``."""
from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from .data.datasets import find_lfw
    from .errors import RecfaceError
    from .pipeline import run_pipeline

    argv = sys.argv[1:] if argv is None else argv
    try:
        lfw = find_lfw()
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None
    print(f"[demo] LFW from {lfw}", flush=True)
    try:
        res = run_pipeline("demo", force="--force" in argv)
    except RecfaceError as e:
        print(f"[demo] failed: {e}", file=sys.stderr)
        return 1
    print(Path(res["summary"]).read_text())
    print(f"[demo] report: {Path(res['summary']).resolve()} (executed notebooks and plots beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
