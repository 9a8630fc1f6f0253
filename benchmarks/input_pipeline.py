"""Input pipeline throughput: ``make_dataset`` alone (read + decode + augment + normalise + batch)
vs the MobileFaceNetV2 + ArcFace train step at the same batch size on this machine, and their
ratio (goal: the pipeline delivers >= 3x what the step consumes, so data never starves the model).

The dataset is built once into a temp folder from LFW identity folders (250x250 JPEGs: decoding
and resizing them is more work than the 112x112 aligned crops of a real run).

    .venv/bin/python benchmarks/input_pipeline.py [--batch 32] [--images 2000] [--train-steps 6]
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RECFACE_NO_PROGRESS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import recface_lib  # noqa: E402,F401
from recface_lib.data.datasets import shared_data_dir
from recface_lib.data.input_pipeline import Augmentation  # noqa: E402


def pipeline_rate(ds_dir, batch, batches, **aug):
    from recface_lib.data.input_pipeline import make_dataset

    ds = make_dataset(ds_dir, batch, training=True, **aug)
    it = iter(ds)
    for _ in range(3):
        next(it)
    t = time.perf_counter()
    for _ in range(batches):
        x, y = next(it)
    x.numpy()
    return batches * batch / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--train-steps", type=int, default=6)
    args = ap.parse_args()
    from recface_lib.build import BuildConfig, build

    lfw = shared_data_dir() / "lfw" / "lfw-deepfunneled"
    with tempfile.TemporaryDirectory() as tmp:
        build(BuildConfig.from_dict({"input": str(lfw), "output": f"{tmp}/ds", "min_images": 10, "shards": 8,
                                     "workers": 2}), show_progress=False)
        meta = json.loads(Path(f"{tmp}/ds/metadata.json").read_text())
        print(f"dataset: {meta['num_samples']} LFW images (250x250 JPEG), {meta['num_classes']} classes, 8 shards")
        plain = pipeline_rate(f"{tmp}/ds", args.batch, args.batches)
        full = pipeline_rate(f"{tmp}/ds", args.batch, args.batches, augment=Augmentation.from_dict(
            {"train_crop": True, "color_jitter": 1.0, "random_erasing": 0.5, "low_res": 0.2}))
    import subprocess
    import sys
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("train_step.py")), "--configs", "float32",
                          "--batch", str(args.batch), "--steps", str(args.train_steps)], capture_output=True, text=True)
    step = json.loads(out.stdout.strip().splitlines()[-1])["rows"][0]["ours_img_s"]
    print(f"pipeline, flip only:                     {plain:8.1f} img/s")
    print(f"pipeline, crop+jitter+erasing+low-res:   {full:8.1f} img/s")
    print(f"MobileFaceNetV2+ArcFace train step:      {step:8.1f} img/s (batch {args.batch}, float32)")
    print(f"ratio pipeline / train step:             {plain / step:8.1f}x (flip only), {full / step:.1f}x (all augmentations)")
    print(json.dumps({"pipeline_img_s": round(plain, 1), "pipeline_full_aug_img_s": round(full, 1),
                      "train_step_img_s": step, "ratio": round(plain / step, 2), "ratio_full_aug": round(full / step, 2)}))


if __name__ == "__main__":
    main()
