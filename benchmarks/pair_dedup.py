"""Pair sets embedded once per distinct image: the time of scoring a ``.bin`` when every stored copy
is embedded (what a plain loop over the pairs does) against each distinct image once (what
``verify``/``evaluate``/training validation do, ``protocol.pair_sets.distinct_items``), with the same
embedder in this process, interleaved, and both results compared (they must be equal).

    .venv/bin/python benchmarks/pair_dedup.py [--bin runs/triplet/lfw_fold10.bin] [--embedder sface] [--reps 5]
"""
import argparse
import os
import time

import numpy as np

os.environ.setdefault("RECFACE_NO_PROGRESS", "1")


def main():
    from recface_lib.data.verification_bin import read_bin
    from recface_lib.embedders import make_embedder
    from recface_lib.protocol.pair_sets import load_pair_source, score_embeddings
    from recface_lib.protocol.verification import evaluate_embeddings, flip_sum

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default="runs/triplet/lfw_fold10.bin", help="a verification .bin of photos")
    ap.add_argument("--embedder", default="sface")
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    emb = make_embedder(a.embedder)
    ps = read_bin(a.bin)
    src = load_pair_source(a.bin)
    emb.embed_items(list(src.items[:4]))  # warm-up
    every_t, once_t = [], []
    for _ in range(a.reps):
        t = time.perf_counter()
        e, ef, _ = emb.embed_items(list(ps.images))
        every_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        d, df, _ = emb.embed_items(list(src.items))
        once_t.append(time.perf_counter() - t)
    every = flip_sum(e, ef)
    ref = evaluate_embeddings(every[0::2], every[1::2], ps.issame)
    got = score_embeddings(src, d, df, flip=True)
    ratio = np.array(once_t) / np.array(every_t)
    print(f"{a.bin}: {len(ps.images)} stored images, {len(src.items)} distinct; embedder {a.embedder}; "
          f"{a.reps} repetitions interleaved")
    print(f"every copy: {np.median(every_t):.1f} s ({min(every_t):.1f}-{max(every_t):.1f}); "
          f"distinct once: {np.median(once_t):.1f} s ({min(once_t):.1f}-{max(once_t):.1f}); "
          f"time ratio {np.median(ratio):.3f} ({ratio.min():.3f}-{ratio.max():.3f}); "
          f"image ratio {len(src.items) / len(ps.images):.3f}")
    print(f"accuracy every copy {100 * ref.accuracy:.2f}%, distinct once {100 * got.accuracy:.2f}% "
          f"({'equal' if ref.accuracy == got.accuracy else 'DIFFERENT'}; AUC {ref.auc:.6f} / {got.auc:.6f})")


if __name__ == "__main__":
    main()
