"""Alignment throughput on LFW images, per detector: the bare library call, our pipeline with one
worker, and with two (ratios printed). One compute thread per worker everywhere, so "per worker"
figures compare like with like.

bare     = read + decode + the detector library call (+ dlib's landmark predictor for dlib detectors)
pipeline = recface_lib.align.align over a folder: bare + face selection, similarity warp, JPEG
           encode, atomic write, resume log, report with grids

    .venv/bin/python benchmarks/align.py [--n 96] [--detectors mtcnn dlib_hog dlib_mmod yunet]
    .venv/bin/python benchmarks/align.py --detectors yunet mtcnn --reps 5   # interleaved, median (range),
                                                  # and the first detector's speed over the second's
    .venv/bin/python benchmarks/align.py --detect-rate [--detector yunet]   # on all 7,701 LFW pair images
"""
import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RECFACE_NO_PROGRESS", "1")
import recface_lib  # noqa: E402,F401
from recface_lib.data.datasets import shared_data_dir  # noqa: E402

DATA = shared_data_dir()


def one_thread():
    import cv2
    import torch
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def summary(v) -> str:
    import numpy as np
    return f"{np.median(v):6.1f} ({min(v):.1f}-{max(v):.1f})"


def bare(detector: str, paths):
    import numpy as np
    from recface_lib.io_utils import read_image

    if detector == "mtcnn":
        from facenet_pytorch import MTCNN
        m = MTCNN(keep_all=True, post_process=False, select_largest=False, device="cpu")
        m.detect(np.stack([read_image(paths[0])]), landmarks=True)
        t = time.perf_counter()
        for i in range(0, len(paths), 16):
            m.detect(np.stack([read_image(p) for p in paths[i:i + 16]]), landmarks=True)
        return len(paths) / (time.perf_counter() - t)
    if detector == "yunet":
        import cv2
        from recface_lib.zoo import model_path
        det = cv2.FaceDetectorYN.create(str(model_path("yunet")), "", (320, 320), 0.4, 0.3, 5000)
        t = time.perf_counter()
        for p in paths:
            im = cv2.imread(str(p))
            det.setInputSize((im.shape[1], im.shape[0]))
            det.detect(im)
        return len(paths) / (time.perf_counter() - t)
    import dlib
    from recface_lib.align.detectors import models_dir
    sp = dlib.shape_predictor(str(models_dir() / "shape_predictor_5_face_landmarks.dat"))
    if detector == "dlib_hog":
        det = dlib.get_frontal_face_detector()
        call = lambda im: [r for r in det(im, 1)]  # noqa: E731
    else:
        cnn = dlib.cnn_face_detection_model_v1(str(models_dir() / "mmod_human_face_detector.dat"))
        call = lambda im: [d.rect for d in cnn(im, 1)]  # noqa: E731
    t = time.perf_counter()
    for p in paths:
        im = read_image(p)
        for r in call(im):
            sp(im, r)
    return len(paths) / (time.perf_counter() - t)


def pipeline(detector: str, src: Path, workers: int) -> float:
    from recface_lib.align.pipeline import align
    out = Path(tempfile.mkdtemp()) / "out"
    t = time.perf_counter()
    r = align({"input": str(src), "output": str(out), "detector": detector, "on_failure": "drop",
               "workers": workers, "batch_size": 16}, show_progress=False)
    dt = time.perf_counter() - t
    shutil.rmtree(out.parent)
    return r["items"] / dt


def detect_rate(detector: str = "mtcnn"):
    from recface_lib.align.detectors import make_detector, select_face
    from recface_lib.data.lfw_pairs import read_pairs
    from recface_lib.io_utils import read_image
    pairs = read_pairs(DATA / "lfw" / "pairs.txt", DATA / "lfw" / "lfw-deepfunneled")
    paths = sorted({q for p in pairs for q in (p.path1, p.path2)})
    det = make_detector(detector)
    found, t = 0, time.perf_counter()
    missed = []
    for i in range(0, len(paths), 16):
        imgs = [read_image(p) for p in paths[i:i + 16]]
        for p, d, im in zip(paths[i:i + 16], det.detect_batch(imgs), imgs):
            if select_face(d, im.shape) is not None:
                found += 1
            else:
                missed.append(p.name)
    print(f"{detector} on {len(paths)} LFW pair images: face found for {found} ({100 * found / len(paths):.2f}%), "
          f"{len(paths) / (time.perf_counter() - t):.1f} images/s; missed: {missed[:10]}")


def interleaved(detectors, all_paths, n, reps):
    """The same n images for every detector; each repetition runs every detector at 1 and 2 workers."""
    import numpy as np
    paths = all_paths[:: len(all_paths) // n][:n]
    src = Path(tempfile.mkdtemp()) / "src"
    for p in paths:
        (src / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, src / p.parent.name / p.name)
    res = {(d, w): [] for d in detectors for w in (0, 1, 2)}
    for r in range(reps):
        for d in detectors:
            res[(d, 0)].append(bare(d, paths))
            for w in (1, 2):
                res[(d, w)].append(pipeline(d, src, w))
        print(f"repetition {r + 1}/{reps}: " + ", ".join(f"{d} {res[(d, 1)][-1]:.1f}/{res[(d, 2)][-1]:.1f}"
                                                        for d in detectors), flush=True)
    shutil.rmtree(src.parent)
    print(f"\n{n} LFW images, {reps} repetitions interleaved; images/s, median (min-max)\n")
    print("| detector | bare (1 thread) | pipeline, 1 worker | pipeline, 2 workers |")
    print("|---|---|---|---|")
    for d in detectors:
        print(f"| {d} | {summary(res[(d, 0)])} | {summary(res[(d, 1)])} | {summary(res[(d, 2)])} |")
    a, b = detectors[0], detectors[1] if len(detectors) > 1 else detectors[0]
    for w in (1, 2):
        ratio = np.array(res[(a, w)]) / np.array(res[(b, w)])
        print(f"{a} / {b}, {w} worker{'s' * (w > 1)}: {np.median(ratio):.2f}x ({ratio.min():.2f}-{ratio.max():.2f}) per repetition")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=384)
    ap.add_argument("--detectors", nargs="*", default=["mtcnn", "dlib_hog", "dlib_mmod", "yunet"])
    ap.add_argument("--reps", type=int, default=1, help=">= 2: the detectors interleaved in each repetition")
    ap.add_argument("--detect-rate", action="store_true")
    ap.add_argument("--detector", default="mtcnn", help="--detect-rate: the detector")
    a = ap.parse_args()
    if a.detect_rate:
        return detect_rate(a.detector)
    one_thread()
    all_paths = sorted((DATA / "lfw" / "lfw-deepfunneled").glob("*/*.jpg"))
    if a.reps >= 2:
        return interleaved(a.detectors, all_paths, a.n, a.reps)
    for det in a.detectors:
        n = a.n if det != "dlib_mmod" else max(16, a.n // 3)
        paths = all_paths[:: len(all_paths) // n][:n]
        src = Path(tempfile.mkdtemp()) / "src"
        for p in paths:
            (src / p.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(p, src / p.parent.name / p.name)
        b = bare(det, paths)
        p1 = pipeline(det, src, 1)
        p2 = pipeline(det, src, 2)
        shutil.rmtree(src.parent)
        print(f"{det:10s} n={n:3d}  bare {b:6.1f} img/s | pipeline 1 worker {p1:6.1f} img/s ({p1 / b:.2f}x bare) | "
              f"2 workers {p2:6.1f} img/s ({p2 / p1:.2f}x one worker)", flush=True)


if __name__ == "__main__":
    main()
