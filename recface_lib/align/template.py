"""The InsightFace 5-point template, least-squares similarity transforms, and crops.

Points are (x, y) in pixels: left eye, right eye (as seen in the image), nose tip, left and right
mouth corners. The 112x112 template is InsightFace's; other sizes scale it uniformly.
"""
from __future__ import annotations

import numpy as np

from ..manifest import ARCFACE_TEMPLATE_112 as _TEMPLATE  # the one definition of the five points

ARCFACE_TEMPLATE_112 = np.array(_TEMPLATE, dtype=np.float64)


def template(size: int = 112) -> np.ndarray:
    """The five template points for a ``size`` x ``size`` output (scaled from 112)."""
    return ARCFACE_TEMPLATE_112 * (float(size) / 112.0)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix M of the least-squares similarity (rotation, uniform scale, translation, no
    reflection) mapping ``src`` points onto ``dst`` (Umeyama 1991). ``dst ~ M @ [x, y, 1]``."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (N>=2, 2) point arrays, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s ** 2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("degenerate landmarks: all source points coincide")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / var_s
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def apply_transform(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def warp_to_template(img: np.ndarray, landmarks5: np.ndarray, size: int = 112) -> np.ndarray:
    """Align a face: similarity transform of its five points to the template, then warp."""
    import cv2

    m = similarity_transform(landmarks5, template(size))
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def square_box(box) -> np.ndarray:
    """Grow the shorter side of (x1, y1, x2, y2) around its centre to make it square."""
    x1, y1, x2, y2 = map(float, box)
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) / 2
    return np.array([cx - half, cy - half, cx + half, cy + half])


def crop_box(img: np.ndarray, box, size: int, square: bool = False, margin: float = 0.0) -> np.ndarray:
    """The recface guide's ``box`` method (optionally squared) and facenet's ``margin`` method: crop
    the box grown by ``margin`` pixels in total (margin/2 each side), clipped to the image, resized."""
    import cv2

    b = square_box(box) if square else np.asarray(box, dtype=np.float64)
    h, w = img.shape[:2]
    x1 = int(np.clip(np.floor(b[0] - margin / 2), 0, w - 1))
    y1 = int(np.clip(np.floor(b[1] - margin / 2), 0, h - 1))
    x2 = int(np.clip(np.ceil(b[2] + margin / 2), x1 + 1, w))
    y2 = int(np.clip(np.ceil(b[3] + margin / 2), y1 + 1, h))
    crop = img[y1:y2, x1:x2]
    interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)
