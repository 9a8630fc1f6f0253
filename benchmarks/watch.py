"""`recface watch` frames per second on this CPU: a 640x480 video of two real faces (friends16
photos) moving over a background, with detection every frame and every third frame, against the
bare library calls the loop wraps (detect + embed every frame, no tracking, events or voting).

    .venv/bin/python benchmarks/watch.py                    # sface (YuNet + SFace, float ONNX)
    .venv/bin/python benchmarks/watch.py --embedder runs/distill/distill_model.zip --gallery G

Each setting runs --reps times (>= 5), settings interleaved within each repetition; the median and
the range are printed. The guide's Jetson Nano figure is 25-30 FPS with detection on every other
frame."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--embedder", default="sface")
    ap.add_argument("--gallery", default="", help="a gallery folder (default: two people enrolled here)")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--every", type=int, nargs="+", default=[1, 3])
    a = ap.parse_args()
    from recface_lib.data.datasets import shared_data_dir
    from recface_lib.gallery import Gallery
    from recface_lib.inference import FaceRecognizer
    from recface_lib.watch.scene import face_of_lfw_photo, make_scene
    from recface_lib.watch.stage import watch

    friends = shared_data_dir() / "lfw_friends16"
    people = ("Andre_Agassi", "Kofi_Annan")
    tmp = Path(tempfile.mkdtemp(prefix="recface-watch-bench-"))
    faces = {p: face_of_lfw_photo(sorted((friends / "test" / p).glob("*.jpg"))[0]) for p in people}
    n = a.frames
    script = [(people[0], 0, n - 1, 20, 420, 60), (people[1], n // 5, n - 1, 460, 200, 260)]
    video = make_scene(tmp / "scene.avi", faces, script, n)
    gallery = a.gallery
    if not gallery:
        rec = FaceRecognizer.from_embedder(a.embedder, str(tmp / "gallery"))
        g = Gallery(rec.embedder.dim, rec.identity)
        for p in people:
            photos = sorted((friends / "train" / p).glob("*.jpg"))[:4]
            g.add(p, rec.enroll_vectors(photos), [str(x) for x in photos])
        gallery = str(tmp / "gallery")
        g.save(gallery)
    rec = FaceRecognizer.from_embedder(a.embedder, gallery)

    def bare() -> float:  # what the loop wraps: read, detect and embed every frame
        import cv2

        cap = cv2.VideoCapture(str(video))
        t, k = time.perf_counter(), 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            found = rec.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            if found:
                rec.name_embeddings(rec.embed_aligned([c for c, _ in found], False))
            k += 1
        return k / (time.perf_counter() - t)

    res = {f"watch every {e}": [] for e in a.every}
    res["bare detect+embed every frame"] = []
    for _ in range(a.reps):
        for e in a.every:
            s = watch({"input": str(video), "embedder": a.embedder, "gallery": gallery, "detect_every": e,
                       "reload_check": 0}, show_progress=False)
            assert s["processed"] == n and set(s["identified"]) == set(people), s
            res[f"watch every {e}"].append(s["fps"])
        res["bare detect+embed every frame"].append(bare())
    print(f"{a.embedder}, {n} frames of 640x480, {a.reps} reps, cores {os.cpu_count()}:")
    base = res["bare detect+embed every frame"]
    for k, v in res.items():
        ratio = [x / b for x, b in zip(v, base)]
        print(f"  {k:32s} {statistics.median(v):7.1f} FPS  ({min(v):.1f}-{max(v):.1f})"
              f"   x{statistics.median(ratio):.2f} of bare ({min(ratio):.2f}-{max(ratio):.2f})")
    print(json.dumps({k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in res.items()}))


if __name__ == "__main__":
    main()
