"""Alignment throughput on LFW images, per detector: the bare library call, our pipeline with one
worker, and with two (ratios printed). One compute thread per worker everywhere, so "per worker"
figures compare like with like.

bare     = read + decode + the detector library call (+ dlib's landmark predictor for dlib detectors)
pipeline = recface_lib.align.align over a folder: bare + face selection, similarity warp, JPEG
           encode, atomic write, resume log, report with grids

    .venv/bin/python benchmarks/align.py [--n 96] [--detectors mtcnn dlib_hog dlib_mmod]
    .venv/bin/python benchmarks/align.py --detect-rate      # MTCNN on all 7,701 LFW pair images
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


def detect_rate():
    from recface_lib.align.detectors import make_detector, select_face
    from recface_lib.data.lfw_pairs import read_pairs
    from recface_lib.io_utils import read_image
    pairs = read_pairs(DATA / "lfw" / "pairs.txt", DATA / "lfw" / "lfw-deepfunneled")
    paths = sorted({q for p in pairs for q in (p.path1, p.path2)})
    det = make_detector("mtcnn")
    found, t = 0, time.perf_counter()
    missed = []
    for i in range(0, len(paths), 16):
        imgs = [read_image(p) for p in paths[i:i + 16]]
        for p, d, im in zip(paths[i:i + 16], det.detect_batch(imgs), imgs):
            if select_face(d, im.shape) is not None:
                found += 1
            else:
                missed.append(p.name)
    print(f"MTCNN on {len(paths)} LFW pair images: face found for {found} ({100 * found / len(paths):.2f}%), "
          f"{len(paths) / (time.perf_counter() - t):.1f} images/s; missed: {missed[:10]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=384)
    ap.add_argument("--detectors", nargs="*", default=["mtcnn", "dlib_hog", "dlib_mmod"])
    ap.add_argument("--detect-rate", action="store_true")
    a = ap.parse_args()
    if a.detect_rate:
        return detect_rate()
    one_thread()
    all_paths = sorted((DATA / "lfw" / "lfw-deepfunneled").glob("*/*.jpg"))
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
