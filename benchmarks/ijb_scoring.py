"""IJB-C scale template scoring: 15.7M random template pairs (IJB-C 1:1 has 15,658,489) over 23,124
templates of 512-d, scored in batches by ``evaluate.ijb.pair_scores`` + the TAR@FAR table.
Prints pairs/s and the peak RSS, against a bare one-shot numpy gather-and-dot of a 100k-pair slice
(what scoring without batches costs in memory: two pairs x 512 float64 blocks).

    .venv/bin/python benchmarks/ijb_scoring.py [--pairs 15658489] [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import numpy as np


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    from recface_lib.evaluate.ijb import pair_scores, tar_at_far

    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=15_658_489)
    ap.add_argument("--templates", type=int, default=23_124)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    f = rng.normal(size=(a.templates, a.dim))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    ids = np.arange(a.templates) + 1
    t1 = rng.integers(1, a.templates + 1, a.pairs)
    t2 = rng.integers(1, a.templates + 1, a.pairs)
    label = rng.random(a.pairs) < 0.001
    base = rss_mb()
    print(f"{a.pairs:,} pairs over {a.templates:,} templates of {a.dim}-d; inputs take {base:.0f} MB RSS")
    ours, bare = [], []
    for _ in range(a.repeat):  # interleaved: ours on all pairs, then the bare call on a 100k slice
        t = time.perf_counter()
        s = pair_scores(f, ids, t1, t2)
        ours.append(a.pairs / (time.perf_counter() - t))
        n = 100_000
        t = time.perf_counter()
        b = (f[t1[:n] - 1] * f[t2[:n] - 1]).sum(1)
        bare.append(n / (time.perf_counter() - t))
        assert np.allclose(s[:n], b)
    peak_scoring = rss_mb()
    t = time.perf_counter()
    tars, _ = tar_at_far(label, s)
    t_roc = time.perf_counter() - t
    print(f"ours (batches of 20,000): median {statistics.median(ours) / 1e6:.2f} M pairs/s "
          f"(min {min(ours) / 1e6:.2f}, max {max(ours) / 1e6:.2f}, {a.repeat} runs)")
    print(f"bare one-shot gather+dot on 100k pairs: median {statistics.median(bare) / 1e6:.2f} M pairs/s "
          f"(min {min(bare) / 1e6:.2f}, max {max(bare) / 1e6:.2f}); ratio ours/bare "
          f"{statistics.median(ours) / statistics.median(bare):.2f}")
    print(f"peak RSS after scoring (incl. the bare 100k-pair run: 0.8 GB of gathered features): {peak_scoring:.0f} MB; TAR@FAR table (sklearn ROC "
          f"on {a.pairs:,} scores): {t_roc:.1f} s, peak RSS {rss_mb():.0f} MB")
    print(json.dumps({"pairs_per_s_median": statistics.median(ours), "peak_rss_mb": rss_mb(), "tar_far": tars}))


if __name__ == "__main__":
    main()
