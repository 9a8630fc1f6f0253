"""Gallery search speed (issue 15): 100,000 enrolled 512-d vectors (25,000 people x 4 photos),
one query and a batch of 64, against the bare matrix product it wraps. 7 interleaved repetitions,
median and spread (min-max)."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from recface_lib.gallery import Gallery  # noqa: E402


def main(n_people: int = 25_000, per: int = 4, dim: int = 512, reps: int = 7) -> None:
    rng = np.random.default_rng(0)
    g = Gallery(dim)
    v = rng.normal(size=(n_people * per, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    g.vectors, g.labels = v, np.repeat(np.arange(n_people, dtype=np.int32), per)
    g.names, g.sources = [f"p{i}" for i in range(n_people)], [""] * len(v)
    times: dict[str, list[float]] = {"search 1": [], "bare 1": [], "search 64": [], "bare 64": []}
    for _ in range(reps):
        for m in (1, 64):
            q = rng.normal(size=(m, dim)).astype(np.float32)
            t = time.perf_counter()
            g.search(q)
            times[f"search {m}"].append(time.perf_counter() - t)
            t = time.perf_counter()
            (q @ v.T).argmax(1)
            times[f"bare {m}"].append(time.perf_counter() - t)
    print(f"gallery: {len(v):,} vectors of {dim}-d, {n_people:,} people; {reps} interleaved repetitions")
    for k, ts in times.items():
        ms = [1000 * x for x in ts]
        print(f"  {k:>10}: median {statistics.median(ms):7.2f} ms  (min {min(ms):.2f}, max {max(ms):.2f})")
    for m in (1, 64):
        r = statistics.median(times[f"search {m}"]) / statistics.median(times[f"bare {m}"])
        print(f"  search / bare product, {m} quer{'y' if m == 1 else 'ies'}: {r:.2f}x")


if __name__ == "__main__":
    main()
