"""Partial FC vs the full margin head at many identities, on this CPU: ArcFace on 512-d embeddings,
batch 64, SGD with momentum and weight decay (recface's optimizer), one training step of the head
= logits, loss, gradients, update.

Per configuration (classes x {full, Partial FC 0.1, 0.3}) each repetition is a fresh process (so
its peak memory is its own): 2 warm-up steps, then --steps timed steps; for the full head also its
optimizer update alone (momentum and weight decay over the whole centre matrix; Partial FC's
update touches the sampled rows only, ``train.optim``). Repetitions are interleaved over the
configurations; median and range are printed.

    .venv/bin/python benchmarks/partial_fc.py --classes 100000 1000000 --reps 5"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def one(classes: int, rate: float, steps: int) -> dict:
    import keras
    import tensorflow as tf

    from recface_lib.models.build import build_head
    from recface_lib.models.partial_fc import PartialFC
    from recface_lib.train.optim import make_optimizer

    D, B = 512, 64
    head = build_head("ArcFace", classes, 64.0)
    layer = head if rate >= 1.0 else PartialFC(head, rate)
    layer.build(((None, D), (None,)))
    opt = make_optimizer("sgd", 0.1, 5e-4, momentum=0.9)
    opt.build([head.w])
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(0)

    @tf.function
    def step(emb, labels):
        with tf.GradientTape() as tape:
            logits = layer([emb, labels], training=True)
            loss = ce(labels if rate >= 1.0 else tf.zeros_like(labels), logits)
        g = tape.gradient(loss, [head.w])
        opt.apply(g, [head.w])
        return loss

    @tf.function
    def update_only(g):
        opt.apply([g], [head.w])

    embs = [tf.constant(rng.normal(size=(B, D)).astype(np.float32)) for _ in range(steps + 2)]
    labs = [tf.constant(rng.integers(0, classes, B).astype(np.int32)) for _ in range(steps + 2)]
    for i in range(2):
        step(embs[i], labs[i])
    t = time.perf_counter()
    for i in range(2, steps + 2):
        float(step(embs[i], labs[i]))
    per_step = (time.perf_counter() - t) / steps
    if rate < 1.0:  # its update is inside the step (sampled rows); a dense one would only add memory
        return {"step_s": per_step, "update_s": float("nan"),
                "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}
    g = tf.zeros_like(head.w)
    update_only(g)
    t = time.perf_counter()
    for _ in range(steps):
        update_only(g)
    upd = (time.perf_counter() - t) / steps
    return {"step_s": per_step, "update_s": upd, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--rates", type=float, nargs="+", default=[1.0, 0.1, 0.3])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--one", nargs=2, type=float, help="(internal) classes rate")
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(int(a.one[0]), a.one[1], a.steps)))
        return
    configs = [(c, r) for c in a.classes for r in a.rates]
    res = {cfg: [] for cfg in configs}
    for _ in range(a.reps):
        for c, r in configs:
            out = subprocess.run([sys.executable, __file__, "--one", str(c), str(r), "--steps", str(a.steps)],
                                 capture_output=True, text=True)
            if out.returncode:
                res[(c, r)].append({"error": (out.stderr.strip().splitlines() or ["failed"])[-1]})
                continue
            res[(c, r)].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"ArcFace head, 512-d, batch 64, SGD momentum; {a.reps} interleaved repetitions x {a.steps} timed steps; "
          "median (min-max)\n")
    print("| classes | head | step (s) | vs full | full head: its dense optimizer update alone (s) | peak memory (GB) |")
    print("|---|---|---|---|---|---|")
    for c in a.classes:
        full = [x["step_s"] for x in res.get((c, 1.0), []) if "step_s" in x]
        for r in a.rates:
            rows = [x for x in res[(c, r)] if "step_s" in x]
            if not rows:
                print(f"| {c:,} | {'full' if r >= 1 else f'Partial FC {r}'} | failed: {res[(c, r)][0]['error']} | | | |")
                continue
            st, up, mem = (np.array([x[k] for x in rows]) for k in ("step_s", "update_s", "peak_rss_gb"))
            ratio = f"{np.median(full) / np.median(st):.2f}x faster" if full and r < 1 else ""
            print(f"| {c:,} | {'full' if r >= 1 else f'Partial FC {r}'} | {np.median(st):.3f} ({st.min():.3f}-{st.max():.3f}) | "
                  f"{ratio} | {'' if r < 1 else f'{np.median(up):.3f}'} | {np.median(mem):.2f} |")


if __name__ == "__main__":
    main()
