"""Measure where dlib's 5-point landmarks (eye centres, subnasale) fall in the ArcFace 112 template
frame when faces are aligned with the 68-point model. Prints the constant used as
``recface_lib.align.detectors.DLIB5_IN_TEMPLATE_112``.

    .venv/bin/python benchmarks/calibrate_dlib5.py [N_FACES]
"""
import sys

import numpy as np

import recface_lib  # noqa: F401  (import guard first)
from recface_lib.data.datasets import shared_data_dir
from recface_lib.align.detectors import Detection, DlibHOG, DlibLandmarks, dlib5_anchors, select_face
from recface_lib.align.template import apply_transform, similarity_transform, template
from recface_lib.io_utils import read_image

DATA = shared_data_dir()


def main(n: int = 300) -> None:
    root = DATA / "lfw" / "lfw-deepfunneled"
    people = sorted(p for p in root.iterdir() if p.is_dir())
    step = max(1, len(people) // n)
    det, lm5, lm68 = DlibHOG(upsample=1), DlibLandmarks("5"), DlibLandmarks("68")
    pts = []
    for person in people[::step][:n]:
        img = read_image(sorted(person.glob("*.jpg"))[0])
        boxes = det.boxes(img)
        if not boxes:
            continue
        d = select_face([Detection(b, s) for b, s in boxes], img.shape, "center")
        m = similarity_transform(lm68(img, d.box), template(112))
        s = lm5.shape(img, d.box)
        p = np.array([[s.part(i).x, s.part(i).y] for i in range(5)], dtype=np.float64)
        pts.append(apply_transform(m, dlib5_anchors(p)))
    arr = np.array(pts)
    print(f"faces: {len(arr)}")
    print("DLIB5_IN_TEMPLATE_112 =", np.round(arr.mean(0), 2).tolist())
    print("std (px):", np.round(arr.std(0), 2).tolist())


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
