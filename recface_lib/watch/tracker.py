"""Faces followed between detections: an IoU tracker.

At each detection every live track is matched to at most one detection, greedily by IoU (highest
first, at least ``min_iou``; a track whose box has no overlap may still take a detection whose
centre lies within ``centre_reach`` of its box size, for a fast move); unmatched detections are born
as new tracks; a track unmatched for ``max_missed`` detection rounds in a row is dropped (it left).
Between detections a track keeps its last box."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (n x 4, x1 y1 x2 y2) with every box of ``b`` (m x 4): n x m."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: np.clip(r[:, 2] - r[:, 0], 0, None) * np.clip(r[:, 3] - r[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclass
class Track:
    id: int
    box: np.ndarray
    first_frame: int
    first_time: float
    last_frame: int
    last_time: float
    missed: int = 0
    hits: int = 1
    last_embed: int = -(10 ** 9)  # frame of the last embedding
    state: dict = field(default_factory=dict)  # the identity decision's (identity.Voter)


class Tracker:
    def __init__(self, min_iou: float = 0.3, max_missed: int = 2, centre_reach: float = 0.5):
        self.min_iou, self.max_missed, self.centre_reach = float(min_iou), int(max_missed), float(centre_reach)
        self.tracks: list[Track] = []
        self._next = 1

    def update(self, boxes: np.ndarray, frame: int, t: float) -> tuple[list[tuple[Track, int]], list[Track], list[Track]]:
        """One detection round: -> ([(track, detection index)] matched or born, born tracks, dropped tracks)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        pairs, used_t, used_d = [], set(), set()
        if self.tracks and len(boxes):
            m = iou(np.stack([tr.box for tr in self.tracks]), boxes)
            for ti, di in sorted(np.argwhere(m >= self.min_iou).tolist(), key=lambda p: -m[p[0], p[1]]):
                if ti not in used_t and di not in used_d:
                    used_t.add(ti), used_d.add(di), pairs.append((ti, di))
            for ti, tr in enumerate(self.tracks):  # no overlap: the nearest centre within reach
                if ti in used_t:
                    continue
                c = (tr.box[:2] + tr.box[2:]) / 2
                reach = self.centre_reach * max(tr.box[2] - tr.box[0], tr.box[3] - tr.box[1])
                best = None
                for di, b in enumerate(boxes):
                    d = float(np.hypot(*((b[:2] + b[2:]) / 2 - c)))
                    if di not in used_d and d <= reach and (best is None or d < best[0]):
                        best = (d, di)
                if best is not None:
                    used_t.add(ti), used_d.add(best[1]), pairs.append((ti, best[1]))
        out = []
        for ti, di in pairs:
            tr = self.tracks[ti]
            tr.box, tr.last_frame, tr.last_time, tr.missed, tr.hits = boxes[di], frame, t, 0, tr.hits + 1
            out.append((tr, di))
        dropped = []
        for ti, tr in enumerate(self.tracks):
            if ti not in used_t:
                tr.missed += 1
                if tr.missed > self.max_missed:
                    dropped.append(tr)
        self.tracks = [tr for tr in self.tracks if tr not in dropped]
        born = []
        for di, b in enumerate(boxes):
            if di not in used_d:
                tr = Track(self._next, b, frame, t, frame, t)
                self._next += 1
                self.tracks.append(tr)
                born.append(tr)
                out.append((tr, di))
        return out, born, dropped
