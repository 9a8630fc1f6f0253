"""A test scene: face photos pasted at moving positions over a grey background, each for its frame
range, written as a video (the watch tests and ``benchmarks/watch.py``; real faces, known truth)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def make_scene(path: str | Path, faces: dict, script: list, frames: int, size=(640, 480), fps: float = 15.0) -> Path:
    """``faces``: name -> RGB image; ``script``: (name, first frame, last frame, start x, end x, y),
    the face moving linearly from start x to end x; -> the video (MJPG ``.avi``)."""
    import cv2

    w, h = size
    path = Path(path)
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), float(fps), (w, h))
    if not wr.isOpened():
        raise OSError(f"{path}: OpenCV cannot write an MJPG video here")
    for i in range(int(frames)):
        frame = np.full((h, w, 3), 110, np.uint8)
        for who, a, b, x0, x1, y in script:
            if a <= i <= b:
                x = int(round(x0 + (x1 - x0) * (i - a) / max(1, b - a)))
                f = faces[who][: h - y, : w - x]
                frame[y:y + f.shape[0], x:x + f.shape[1]] = f
        wr.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    wr.release()
    return path


def face_of_lfw_photo(path: str | Path) -> np.ndarray:
    """The 140 px around the centred face of a 250 px LFW photo (its neighbours' faces left out)."""
    from ..io_utils import read_image

    return read_image(path)[60:200, 55:195]
