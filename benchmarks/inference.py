"""Inference speed of an export bundle's formats on this CPU: Keras, ONNX (onnxruntime), TFLite
float32 / float16 / int8 (LiteRT), with 1 thread and with all threads.

Per format: latency of one aligned face (batch 1, ms), throughput at batch 32 (faces/s), and one
photo end to end (MTCNN detection + alignment + embedding, the flip TTA included: what
``FaceRecognizer.embed`` does); model sizes. Every measurement is repeated (--reps, >= 5),
formats interleaved within each repetition; the median and the range are printed.

    .venv/bin/python benchmarks/inference.py runs/distill/distill_model.zip
    .venv/bin/python benchmarks/inference.py BUNDLE --detectors mtcnn yunet   # the same bundle (onnx),
        # its contract's detector replaced: one photo end to end per detector, interleaved, and the ratio

Each thread setting runs in its own process (TensorFlow fixes its thread pools at start-up)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

BACKENDS = ("keras", "onnx", "tflite", "tflite_fp16", "tflite_int8")
MEMBER = {"keras": "embedding.keras", "onnx": "model.onnx", "tflite": "model.tflite",
          "tflite_fp16": "model_fp16.tflite", "tflite_int8": "model_int8.tflite"}


def measure(bundle: str, threads: int, reps: int, photo: str) -> dict:
    if threads:
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    from recface_lib.embedders.model import preprocess
    from recface_lib.inference import FaceRecognizer
    from recface_lib.io_utils import read_image

    with zipfile.ZipFile(bundle) as z:
        present = [b for b in BACKENDS if MEMBER[b] in z.namelist()]
    recs = {b: FaceRecognizer.from_bundle(bundle, b, threads) if b != "keras"
            else FaceRecognizer.from_bundle(bundle, "keras") for b in present}
    img = read_image(photo)
    any_rec = next(iter(recs.values()))
    crop, _ = any_rec.align_one(img)
    x1 = preprocess([crop], any_rec.size, any_rec.embedder.normalization)
    x32 = np.repeat(x1, 32, axis=0)
    for r in recs.values():  # warm-up (graph tracing, allocation)
        r.embedder.backend(x1), r.embedder.backend(x32), r.embed(img)
    res = {b: {"latency_ms": [], "batch32_faces_s": [], "photo_ms": []} for b in recs}
    for _ in range(reps):
        for b, r in recs.items():
            be = r.embedder.backend
            t = time.perf_counter()
            for _ in range(20):
                be(x1)
            res[b]["latency_ms"].append((time.perf_counter() - t) / 20 * 1e3)
            t = time.perf_counter()
            for _ in range(3):
                be(x32)
            res[b]["batch32_faces_s"].append(96 / (time.perf_counter() - t))
            t = time.perf_counter()
            r.embed(img)
            res[b]["photo_ms"].append((time.perf_counter() - t) * 1e3)
    return res


def with_detector(rec, detector: str):
    """The recognizer with its contract's detector replaced (alignment, size and template kept)."""
    from recface_lib.align.config import AlignConfig

    c = {**rec.embedder.contract, "detector": detector}
    c["landmark_model"] = AlignConfig.from_contract(c).contract()["landmark_model"]
    rec.embedder.contract = c
    rec.embedder._aligner = None
    return rec


def measure_detectors(bundle: str, threads: int, reps: int, photo: str, detectors: list[str]) -> dict:
    if threads:
        import cv2
        import torch
        cv2.setNumThreads(threads)
        torch.set_num_threads(threads)
    from recface_lib.inference import FaceRecognizer
    from recface_lib.io_utils import read_image

    img = read_image(photo)
    recs = {d: with_detector(FaceRecognizer.from_bundle(bundle, "onnx", threads), d) for d in detectors}
    for r in recs.values():
        r.embed(img), r.embed(img)
    res = {d: [] for d in detectors}
    for _ in range(reps):
        for d, r in recs.items():
            t = time.perf_counter()
            for _ in range(5):
                r.embed(img)
            res[d].append((time.perf_counter() - t) / 5 * 1e3)
    return res


def summary(v: list[float]) -> str:
    return f"{np.median(v):.2f} ({min(v):.2f}-{max(v):.2f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--photo", default=str(Path(os.environ.get("RECFACE_DATA", Path(__file__).resolve().parents[2]
                                                              / "shared" / "data"))
                                           / "lfw/lfw-deepfunneled/Andre_Agassi/Andre_Agassi_0031.jpg"))
    ap.add_argument("--threads", type=int, default=None, help="(internal) measure in this process with N threads")
    ap.add_argument("--detectors", nargs="*", default=None,
                    help="compare these detectors on the same bundle (onnx): photo end to end, the first over the others")
    a = ap.parse_args()
    if a.threads is not None:
        if a.detectors:
            print(json.dumps(measure_detectors(a.bundle, a.threads, a.reps, a.photo, a.detectors)))
        else:
            print(json.dumps(measure(a.bundle, a.threads, a.reps, a.photo)))
        return
    if a.detectors:
        print(f"bundle {a.bundle} (onnx), its contract's detector replaced; photo {Path(a.photo).name}; "
              f"{a.reps} repetitions, detectors interleaved; ms per photo (detect + align + embed with flip), "
              "median (min-max)\n")
        print("| threads | " + " | ".join(a.detectors) + f" | {a.detectors[0]} / {a.detectors[-1]} (time) |")
        print("|---|" + "---|" * (len(a.detectors) + 1))
        for threads in (1, os.cpu_count() or 1):
            out = subprocess.run([sys.executable, __file__, a.bundle, "--reps", str(a.reps), "--photo", a.photo,
                                  "--threads", str(threads), "--detectors", *a.detectors], capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            ratio = np.array(res[a.detectors[0]]) / np.array(res[a.detectors[-1]])
            print(f"| {threads} | " + " | ".join(summary(res[d]) for d in a.detectors) +
                  f" | {np.median(ratio):.3f} ({ratio.min():.3f}-{ratio.max():.3f}) |")
        return
    with zipfile.ZipFile(a.bundle) as z:
        sizes = {b: z.getinfo(MEMBER[b]).file_size for b in BACKENDS if MEMBER[b] in z.namelist()}
    print(f"bundle {a.bundle}; {a.reps} repetitions, formats interleaved; median (min-max)\n")
    print("| threads | format | size | 1 face (ms) | batch 32 (faces/s) | photo: detect + align + embed with flip (ms) |")
    print("|---|---|---|---|---|---|")
    for threads in (1, os.cpu_count() or 1):
        out = subprocess.run([sys.executable, __file__, a.bundle, "--reps", str(a.reps), "--photo", a.photo,
                              "--threads", str(threads)], capture_output=True, text=True)
        if out.returncode:
            sys.exit(out.stderr)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        for b, r in res.items():
            print(f"| {threads} | {b} | {sizes[b] / 1e6:.2f} MB | {summary(r['latency_ms'])} | "
                  f"{summary(r['batch32_faces_s'])} | {summary(r['photo_ms'])} |")


if __name__ == "__main__":
    main()
