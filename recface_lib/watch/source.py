"""Frames from OpenCV's VideoCapture, read in their own thread.

A file is read frame by frame and nothing is dropped (the reader waits for the loop) unless told to
behave as live; a camera index or a stream URL is live: the queue holds ``buffer`` frames and, when
the loop falls behind, the oldest is dropped and counted, so the loop always works on recent frames."""
from __future__ import annotations

import queue
import re
import threading
import time
from dataclasses import dataclass

import numpy as np

from ..errors import FormatError

_END = object()


@dataclass
class Frame:
    index: int          # position in the source (dropped frames leave gaps)
    time: float         # seconds: the file's timestamp, or since the live source was opened
    image: np.ndarray   # RGB uint8


def is_live(spec: str) -> bool:
    """A camera index (``0``) or a stream URL (``rtsp://``, ``http://``...) rather than a file."""
    return spec.isdigit() or bool(re.match(r"^[a-z][a-z0-9+.-]*://", spec)) and not spec.startswith("file://")


class FrameSource:
    def __init__(self, spec: str, live: bool | None = None, buffer: int = 2, max_frames: int = 0):
        import cv2

        self.spec, self.live = spec, is_live(spec) if live is None else bool(live)
        self.cap = cv2.VideoCapture(int(spec) if spec.isdigit() else spec)
        if not self.cap.isOpened():
            what = "camera" if spec.isdigit() else "stream" if is_live(spec) else "video"
            raise FormatError(f"{spec}: cannot open this {what} (absent, unreadable or not a video OpenCV can decode)")
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0
        self.size = (int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        n = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.expected = n if n > 0 and not self.live else None
        self.max_frames = int(max_frames)
        self.read = self.dropped = 0
        self.error: str | None = None  # why the source ended early (a stream that stopped, a broken file)
        self.q: queue.Queue = queue.Queue(maxsize=max(1, buffer) if self.live else 8)
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self.thread = threading.Thread(target=self._run, name="recface-watch-reader", daemon=True)
        self.thread.start()

    def _run(self):
        import cv2

        try:
            while not self._stop.is_set():
                if self.max_frames and self.read >= self.max_frames:
                    break
                ok, bgr = self.cap.read()
                if not ok:
                    if self.live:
                        self.error = f"{self.spec}: the stream stopped after {self.read} frames"
                    elif self.expected and self.read < self.expected - 1:  # containers may over-count by one
                        self.error = f"{self.spec}: the video ended after {self.read} of {self.expected} frames"
                    break
                t = (self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0) if not self.live else time.monotonic() - self._t0
                f = Frame(self.read, float(t), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                self.read += 1
                if self.live:
                    while True:
                        try:
                            self.q.put_nowait(f)
                            break
                        except queue.Full:
                            try:
                                self.q.get_nowait()
                                self.dropped += 1
                            except queue.Empty:
                                pass
                else:
                    while not self._stop.is_set():
                        try:
                            self.q.put(f, timeout=0.1)
                            break
                        except queue.Full:
                            continue
        finally:
            self.cap.release()
            while True:  # the end marker always arrives (a full queue loses its oldest frame first)
                try:
                    self.q.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    if self._stop.is_set():
                        try:
                            self.q.get_nowait()
                        except queue.Empty:
                            pass

    def __iter__(self):
        while True:
            f = self.q.get()
            if f is _END:
                return
            yield f

    def close(self):
        self._stop.set()
        self.thread.join(timeout=5)
