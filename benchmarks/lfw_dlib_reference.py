"""LFW View 2 (all 6,000 pairs of ../shared/data/lfw) with the dlib_resnet reference embedder:
10-fold accuracy with and without flip TTA, cosine and euclidean, plus throughput.

    .venv/bin/python benchmarks/lfw_dlib_reference.py [--workers 2] [--plots runs/bench]
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

from recface_lib.data.datasets import shared_data_dir
from recface_lib.embedders import embed_parallel
from recface_lib.protocol.pair_sets import load_pair_source, score_embeddings

DATA = shared_data_dir()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--plots", default="runs/bench")
    ap.add_argument("--recompute", action="store_true", help="embed again even if the cached embeddings exist")
    a = ap.parse_args()
    src = load_pair_source(DATA / "lfw" / "pairs.txt")
    cache = Path(a.plots or "runs/bench") / "lfw_dlib_resnet_embeddings.npz"
    if cache.is_file() and not a.recompute:  # the metric can be re-run without the 15-minute embedding
        z = np.load(cache)
        e, ef = z["e"], z["ef"]
        print(f"embeddings from {cache} (--recompute to embed again)")
    else:
        t = time.time()
        e, ef, stats = embed_parallel("dlib_resnet", src.items, a.workers, desc="embed LFW")
        dt = time.time() - t
        print(f"embedded {len(src.items)} images in {dt:.0f}s = {len(src.items) / dt:.1f} images/s "
              f"({a.workers} workers, each image and its mirror); detections: {stats}")
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, e=e, ef=ef)
    out = {}
    for flip in (False, True):
        for metric in ("cosine", "euclidean"):
            r = score_embeddings(src, e, ef, flip, metric)
            key = f"{'flip' if flip else 'plain'}-{metric}"
            out[key] = r.summary()
            print(f"{key:18s} {r}")
            if flip and metric == "cosine" and a.plots:
                from recface_lib.plots import plot_roc
                plot_roc({"dlib_resnet +flip": r}, Path(a.plots) / "roc_lfw_dlib_resnet.png", "LFW View 2, dlib_resnet")
    print(json.dumps({k: {"accuracy": v["accuracy"], "std": v["accuracy_std"]} for k, v in out.items()}))


if __name__ == "__main__":
    main()
