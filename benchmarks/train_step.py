"""Training-step throughput: our trainer (PlanCallback, in-graph plan LR, weight-decay optimizer,
checkpoint bookkeeping) vs a bare ``model.fit`` of the same Keras backbone + head with plain SGD,
both on the same synthetic tensors, for float32 / mixed_bfloat16, with and without XLA. Also the
achieved GFLOP/s (conv/dense FLOPs counted from the layers, train step = 3x forward) against a
float32 matmul peak measured in the same run.

    .venv/bin/python benchmarks/train_step.py [--backbone MobileFaceNetV2] [--batch 32] [--steps 6]

With ``--reps N`` (N >= 5 for README figures) each measurement is a fresh process, bare and ours
alternating (which goes first swaps every repetition), and the median and range of N are printed
with the ratio of the medians and the median and range of the per-repetition ratios.

The triplet step (#24) on real shards: ``--triplet DATASET --reps N`` times, each in a fresh
process and interleaved, our trainer's ArcFace step (shuffled stream) and its triplet step (P x K
batches, k 4, batch-hard loss, no head) at the same batch, both reading DATASET's TFRecords
(decode and augmentation included), and the P x K input pipeline alone (batches per second
drawn from ``run.dataset``, no model): the triplet step is input-bound if the pipeline alone is
not clearly faster than the step.

    .venv/bin/python benchmarks/train_step.py --triplet runs/triplet/tfrecords --backbone MobileFaceNet \
        --size 80 --batch 64 --steps 20 --reps 5
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("RECFACE_NO_PROGRESS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import recface_lib  # noqa: E402,F401


def forward_flops(model) -> float:
    """Multiply-adds x2 of conv, depthwise and dense layers (per image), recursing into sub-models."""
    import keras
    import numpy as np

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += forward_flops(layer)
            continue
        out = getattr(layer, "output", None)
        if out is None:
            continue
        oshape = out.shape
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            k = np.prod(layer.kernel_size)
            total += 2 * np.prod(oshape[1:]) * k
        elif isinstance(layer, keras.layers.Conv2D):
            cin = layer.input.shape[-1] // layer.groups
            total += 2 * np.prod(oshape[1:]) * np.prod(layer.kernel_size) * cin
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * oshape[-1]
    return float(total)


def matmul_peak(n=2048, reps=5) -> float:
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    f = tf.function(lambda: tf.matmul(a, b))
    f().numpy()
    t = time.perf_counter()
    for _ in range(reps):
        f().numpy()
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


class Timer:
    def __init__(self, warmup):
        import keras

        class CB(keras.callbacks.Callback):
            def on_train_batch_end(cb, batch, logs=None):
                if batch + 1 == warmup:
                    self.t0 = time.perf_counter()
                self.t1 = time.perf_counter()
                self.n = batch + 1 - warmup
        self.cb = CB()


def synthetic(batch, size, classes, steps):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    y = rng.integers(0, classes, batch).astype(np.int32)
    return tf.data.Dataset.from_tensors(((x, y), y)).repeat().take(steps).prefetch(2)


def bare_fit(args, precision, jit):
    import keras

    from recface_lib.models.build import build_backbone, build_head, build_train_model

    keras.config.set_dtype_policy(precision)
    keras.utils.set_random_seed(0)
    bb = build_backbone(args.backbone, args.size, 512)
    model = build_train_model(bb, build_head("ArcFace", args.classes))
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")], jit_compile=jit)
    t = Timer(args.warmup)
    n = args.warmup + args.steps
    model.fit(synthetic(args.batch, args.size, args.classes, n), epochs=1, steps_per_epoch=n, verbose=0,
              callbacks=[t.cb])
    flops = forward_flops(model)
    keras.config.set_dtype_policy("float32")
    return t.n * args.batch / (t.t1 - t.t0), flops


def ours(args, precision, jit, tmp):
    import keras

    from recface_lib.io_utils import atomic_write_json
    from recface_lib.train.config import TrainConfig
    from recface_lib.train.trainer import TrainRun

    n = args.warmup + args.steps
    ds = os.path.join(tmp, "synthetic")
    atomic_write_json(os.path.join(ds, "metadata.json"), {"num_samples": n * args.batch, "num_classes": args.classes, "shards": []})
    cfg = TrainConfig.from_dict(dict(dataset=ds, output=os.path.join(tmp, f"run-{precision}-{jit}"), backbone=args.backbone,
                                     input_size=args.size, plan=[[1, 0.01]], batch_size=args.batch, precision=precision,
                                     jit_compile=jit, checkpoint_every=0, tensorboard=False, resume=False))
    run = TrainRun(cfg, show_progress=False)
    run.dataset = lambda start: synthetic(args.batch, args.size, args.classes, n)
    t = Timer(args.warmup)
    run.extra_callbacks = [t.cb]
    run.build()
    # the segment-end checkpoint is part of our step's cost only once per segment: excluded from
    # the timed window because the Timer's last batch end comes before on_epoch_end
    run.fit()
    keras.config.set_dtype_policy("float32")
    return t.n * args.batch / (t.t1 - t.t0)


TRIPLET_KINDS = ("arcface", "triplet", "pk_input")


def triplet_one(args, kind, tmp):
    """One measurement on real shards: images/s of a training step (``arcface`` or ``triplet``) or of
    the P x K input pipeline alone (``pk_input``)."""
    import itertools

    from recface_lib.train.config import TrainConfig
    from recface_lib.train.trainer import TrainRun

    n = args.warmup + args.steps
    common = dict(dataset=args.triplet, output=os.path.join(tmp, kind), backbone=args.backbone, input_size=args.size,
                  embd_shape=128, plan=[[1, 0.01]], steps_per_epoch=n, batch_size=args.batch, checkpoint_every=0,
                  tensorboard=False, resume=False)
    pk = dict(triplet_weight=1.0, triplet_loss="batch_hard", sampler="pk", sampler_params={"k": 4})
    cfg = TrainConfig.from_dict({**common, **(dict(head="ArcFace") if kind == "arcface" else pk)})
    run = TrainRun(cfg, show_progress=False)
    if kind == "pk_input":
        run.build()
        it = iter(run.dataset(0))
        for _ in range(args.warmup):
            next(it)
        t = time.perf_counter()
        for _ in itertools.islice(it, args.steps):
            pass
        return args.steps * args.batch / (time.perf_counter() - t)
    t = Timer(args.warmup)
    run.extra_callbacks = [t.cb]
    run.build()
    run.fit()
    return t.n * args.batch / (t.t1 - t.t0)


def triplet_repeated(args):
    import numpy as np

    common = ["--triplet", args.triplet, "--backbone", args.backbone, "--batch", str(args.batch), "--size",
              str(args.size), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    got = {k: [] for k in TRIPLET_KINDS}
    for r in range(args.reps):
        order = TRIPLET_KINDS if r % 2 == 0 else TRIPLET_KINDS[::-1]
        for kind in order:
            out = subprocess.run([sys.executable, __file__, "--one", kind, *common], capture_output=True, text=True,
                                 check=True)
            got[kind].append(json.loads(out.stdout.strip().splitlines()[-1])["img_s"])
    a, t, p = (np.array(got[k]) for k in TRIPLET_KINDS)
    med = {k: float(np.median(v)) for k, v in got.items()}
    print(f"{args.backbone} {args.size} px batch {args.batch} on {args.triplet}, {args.reps} interleaved repetitions x "
          f"{args.steps} timed steps: ArcFace step {med['arcface']:.1f} img/s ({a.min():.1f}-{a.max():.1f}), "
          f"triplet step (P x K, batch-hard) {med['triplet']:.1f} img/s ({t.min():.1f}-{t.max():.1f}), "
          f"P x K input alone {med['pk_input']:.0f} img/s ({p.min():.0f}-{p.max():.0f}); triplet / ArcFace "
          f"{med['triplet'] / med['arcface']:.3f} (per repetition {np.median(t / a):.3f}, "
          f"{(t / a).min():.3f}-{(t / a).max():.3f}); input / triplet step {med['pk_input'] / med['triplet']:.1f}x",
          flush=True)
    print(json.dumps({"triplet": got}))


def repeated(args):
    import numpy as np

    common = ["--backbone", args.backbone, "--batch", str(args.batch), "--size", str(args.size), "--classes",
              str(args.classes), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    for c in args.configs:
        got = {"bare": [], "ours": []}
        for r in range(args.reps):
            for kind in (("bare", "ours") if r % 2 == 0 else ("ours", "bare")):
                out = subprocess.run([sys.executable, __file__, "--one", kind, "--configs", c, *common],
                                     capture_output=True, text=True, check=True)
                got[kind].append(json.loads(out.stdout.strip().splitlines()[-1])["img_s"])
        b, o = np.array(got["bare"]), np.array(got["ours"])
        ratios = o / b
        print(f"{args.backbone} batch {args.batch} {c}, {args.reps} interleaved repetitions x {args.steps} timed steps: "
              f"bare fit {np.median(b):.2f} img/s ({b.min():.2f}-{b.max():.2f}), ours {np.median(o):.2f} img/s "
              f"({o.min():.2f}-{o.max():.2f}); ratio of medians {np.median(o) / np.median(b):.3f}; per-repetition "
              f"ratio median {np.median(ratios):.3f} ({ratios.min():.3f}-{ratios.max():.3f})", flush=True)
        print(json.dumps({"config": c, "bare": got["bare"], "ours": got["ours"]}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="MobileFaceNetV2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--configs", nargs="*", default=["float32", "float32+xla", "mixed_bfloat16", "mixed_bfloat16+xla"])
    ap.add_argument("--reps", type=int, default=0, help="fresh-process repetitions, interleaved (0: one in-process run)")
    ap.add_argument("--triplet", help="a TFRecord dataset: the triplet step against the ArcFace step on it")
    ap.add_argument("--one", choices=["bare", "ours", *TRIPLET_KINDS], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.triplet and args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps({"img_s": triplet_one(args, args.one, tmp)}))
        return
    if args.triplet:
        return triplet_repeated(args) if args.reps else print(json.dumps({k: triplet_one(args, k, tempfile.mkdtemp())
                                                                           for k in TRIPLET_KINDS}))
    if args.one:  # (internal) one measurement of one config in this fresh process
        precision, jit = args.configs[0].split("+")[0], args.configs[0].endswith("+xla")
        with tempfile.TemporaryDirectory() as tmp:
            v = bare_fit(args, precision, jit)[0] if args.one == "bare" else ours(args, precision, jit, tmp)
        print(json.dumps({"img_s": v}))
        return
    if args.reps:
        return repeated(args)
    peak = matmul_peak()
    print(f"matmul peak (float32, 2048^3): {peak:.1f} GFLOP/s")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in args.configs:
            precision, jit = c.split("+")[0], c.endswith("+xla")
            b, flops = bare_fit(args, precision, jit)
            o = ours(args, precision, jit, tmp)
            gf = 3 * flops * o / 1e9
            rows.append({"config": c, "bare_img_s": round(b, 2), "ours_img_s": round(o, 2), "ratio": round(o / b, 3),
                         "gflop_s": round(gf, 1), "of_peak": round(gf / peak, 3)})
            print(f"{args.backbone} batch {args.batch} {c:20s} bare fit {b:7.2f} img/s  ours {o:7.2f} img/s  "
                  f"ratio {o / b:.3f}  {gf:6.1f} GFLOP/s ({100 * gf / peak:.0f}% of matmul peak)", flush=True)
    print(json.dumps({"backbone": args.backbone, "batch": args.batch, "forward_gflop_per_image": round(flops / 1e9, 3),
                      "matmul_peak_gflop_s": round(peak, 1), "rows": rows}))


if __name__ == "__main__":
    main()
