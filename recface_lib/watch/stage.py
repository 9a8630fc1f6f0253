"""The ``watch`` stage: detect every ``detect_every`` frames, track faces between detections,
embed each track's face at most every ``embed_every`` frames, name tracks by voting over their
recent embeddings against the gallery (or a bundle's classifier), log events, optionally write an
annotated video and run a command on ``identified``. The gallery is re-read when its files change
(in a background thread; the loop swaps it in between two frames, so one decision never sees two
galleries and no frame waits for the reload)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import StageConfig, choice, param
from ..errors import ConfigError, FormatError
from ..io_utils import atomic_path
from ..progress import progress


@dataclass
class WatchConfig(StageConfig):
    input: str = param("", "a video file, a camera index (0, 1, ...) or a stream URL (rtsp://, http://)")
    embedder: str = param("", "an export bundle .zip, a training run folder, or a reference (sface, dlib_resnet)")
    gallery: str = param("", "gallery folder (recface enroll --gallery); '': a bundle's own gallery, else its classifier")
    events: str = param("", "JSON-lines file of appeared / identified / left events ('': none)", role="output")
    output: str = param("", "annotated video with the same frames, boxes, track ids and names (.mp4: mp4v, else MJPG; '': none)",
                        role="output")
    sheet: str = param("", "PNG of annotated frames (the first identifications; '': beside output or events)",
                       role="output")
    backend: str = choice("onnx", ("onnx", "keras"), "a bundle's backend (onnx runs without TensorFlow)")
    detect_every: int = param(3, "detect faces every N frames (the guide alternates: 2); tracks hold their box between",
                              lo=1, hi=1000)
    embed_every: int = param(3, "embed a track's face at most every M frames (at a detection)", lo=1, hi=100000)
    vote_window: int = param(5, "a track's identity: votes of its last N embeddings", lo=1, hi=1000)
    min_votes: int = param(3, "votes a name needs in the window (and more than any other) to name the track", lo=1, hi=1000)
    min_score: float = param(0.7, "detections below this score are ignored (a video holds many faces: a higher bar "
                                  "than a photo's single face)", lo=0.0, hi=1.0)
    min_size: int = param(40, "faces smaller than this (box side, px) are ignored: too small to recognise", lo=0, hi=10000)
    min_hits: int = param(2, "tracker: detection rounds a track needs before it is reported (appeared) and named; "
                             "a false detection in one frame never becomes a track", lo=1, hi=1000)
    min_iou: float = param(0.3, "tracker: overlap a detection needs to continue a track", lo=0.0, hi=1.0)
    max_missed: int = param(2, "tracker: detection rounds a track may go unseen before it has left", lo=0, hi=1000)
    threshold: float = param(-2.0, "cosine above which a vote names a person (-2: the gallery's, else the model's)",
                             lo=-2.0, hi=1.0)
    flip: bool = param(False, "flip TTA for each embedding (twice the embedding time)")
    live: str = choice("auto", ("auto", "yes", "no"), "live: drop the oldest frames when behind (auto: cameras and "
                       "URLs are live, files are read frame by frame)")
    buffer: int = param(2, "live: frames held between the reader and the loop", lo=1, hi=1000, runtime=True)
    max_frames: int = param(0, "stop after N frames (0: the whole source)", lo=0)
    reload_check: float = param(0.5, "seconds between checks of the gallery files for a change (0: never reload)",
                                lo=0.0, hi=3600.0, runtime=True)
    on_identified: list = param([], "command run (no shell, JSON of the event on stdin, RECFACE_NAME/RECFACE_TRACK "
                                    "in its environment) each time a track is identified: [program, arg, ...]")
    command_timeout: float = param(5.0, "seconds the command may take before it is stopped", lo=0.1, hi=3600.0)

    def validate(self, where=""):
        for k in ("input", "embedder"):
            if not getattr(self, k):
                raise ConfigError(f"{where}{k}: required")
        if self.min_votes > self.vote_window:
            raise ConfigError(f"{where}min_votes: {self.min_votes} is more than the vote_window {self.vote_window}")


class GalleryWatcher:
    """Re-reads the gallery when its files change, in a thread; ``take()`` gives the newest
    complete one (or None when unchanged)."""

    def __init__(self, rec, location: str, every: float):
        from ..gallery import gallery_stamp

        self.rec, self.location, self.every = rec, location, float(every)
        self.stamp = gallery_stamp(location)
        self.ready, self.reloads, self.refused = None, 0, 0
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.thread = None
        if self.every > 0:
            self.thread = threading.Thread(target=self._run, name="recface-watch-gallery", daemon=True)
            self.thread.start()

    def _run(self):
        from ..gallery import Gallery, GalleryChanging, gallery_stamp

        while not self.stop.wait(self.every):
            st = gallery_stamp(self.location)
            if st == self.stamp:
                continue
            try:
                g = Gallery.load(self.location, self.rec.embedder.dim, self.rec.identity)
            except GalleryChanging:
                continue  # one file replaced, the other not yet: read again at the next check
            except FormatError:
                self.refused += 1
                self.stamp = st
                continue
            with self.lock:
                self.ready, self.stamp = g, st

    def take(self):
        with self.lock:
            g, self.ready = self.ready, None
        if g is not None:
            self.reloads += 1
        return g

    def close(self):
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)


def draw(image: np.ndarray, tracks) -> np.ndarray:
    """BGR frame with each track's box, id and name (green: named, grey: unknown)."""
    import cv2

    out = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    for tr in tracks:
        name = tr.state.get("identity")
        color = (60, 200, 60) if name else (160, 160, 160)
        x1, y1, x2, y2 = [int(round(v)) for v in tr.box]
        cv2.rectangle(out, (x1, y1), (x2, y2), color, 2)
        cv2.putText(out, f"{tr.id} {name or 'unknown'}", (x1, max(12, y1 - 5)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1,
                    cv2.LINE_AA)
    return out


def square(image: np.ndarray) -> np.ndarray:
    """The image centred on a white square (a contact sheet's cell keeps its aspect)."""
    h, w = image.shape[:2]
    n = max(h, w)
    out = np.full((n, n, 3), 255, np.uint8)
    out[(n - h) // 2:(n - h) // 2 + h, (n - w) // 2:(n - w) // 2 + w] = image
    return out


def watch(cfg: WatchConfig | dict, show_progress: bool = True) -> dict:
    from ..inference import FaceRecognizer
    from .events import EventLog
    from .identity import Voter
    from .source import FrameSource
    from .tracker import Tracker

    if isinstance(cfg, dict):
        cfg = WatchConfig.from_dict(cfg)
    cfg.validate()
    rec = FaceRecognizer.from_embedder(cfg.embedder, cfg.gallery or None, cfg.backend)
    gallery_at = cfg.gallery or (cfg.embedder if str(cfg.embedder).endswith(".zip") else "")
    has_people = rec.gallery is not None and len(rec.gallery.names) > 0
    if not has_people and rec.classifier is None and not cfg.gallery:
        raise ConfigError(f"{cfg.embedder}: nobody to recognise: the bundle has no gallery (recface enroll) and no "
                          "classifier (export --classifier); or give --gallery FOLDER")
    threshold = None if cfg.threshold <= -2 else float(cfg.threshold)
    if threshold is not None:
        rec.threshold = threshold
    live = None if cfg.live == "auto" else cfg.live == "yes"
    src = FrameSource(cfg.input, live, cfg.buffer, cfg.max_frames)
    log = EventLog(cfg.events or None, cfg.on_identified, cfg.command_timeout)
    watcher = GalleryWatcher(rec, gallery_at, cfg.reload_check) if gallery_at else None
    tracker, voter = Tracker(cfg.min_iou, cfg.max_missed), Voter(cfg.vote_window, cfg.min_votes)
    sheet_frames: list[np.ndarray] = []
    writer = tmp_ctx = None
    if cfg.output:
        import cv2

        tmp_ctx = atomic_path(cfg.output, suffix=Path(cfg.output).suffix)
        tmp = tmp_ctx.__enter__()
        fourcc = cv2.VideoWriter_fourcc(*("mp4v" if tmp.suffix.lower() == ".mp4" else "MJPG"))
        writer = cv2.VideoWriter(str(tmp), fourcc, src.fps, src.size)
        if not writer.isOpened():
            raise FormatError(f"{cfg.output}: OpenCV cannot write a video here (give a .mp4 or .avi file)")
    processed = detections = embeddings = written = 0
    gallery = rec.gallery
    bar = progress(total=src.expected, desc=f"watch {Path(cfg.input).name}", unit="frame", disable=not show_progress)
    t_start = None

    def event(kind, tr, **kw):
        log.emit({"event": kind, "track": tr.id, "name": tr.state.get("identity"),
                  "score": round(float(tr.state.get("score", 0.0)), 4), "first_frame": tr.first_frame,
                  "last_frame": tr.last_frame, "first_time": round(tr.first_time, 3),
                  "last_time": round(tr.last_time, 3), **kw})

    failed = None
    try:
        for f in src:
            t_start = t_start or time.monotonic()
            if watcher is not None:
                g = watcher.take()
                if g is not None:
                    gallery = g  # between two frames: every decision uses one gallery
            if processed % cfg.detect_every == 0:
                found = [(c, d) for c, d in rec.detect(f.image) if d.score >= cfg.min_score
                         and min(d.box[2] - d.box[0], d.box[3] - d.box[1]) >= cfg.min_size]
                detections += 1
                boxes = np.asarray([d.box for _, d in found], np.float64).reshape(-1, 4)
                matched, _, dropped = tracker.update(boxes, f.index, f.time)
                for tr in dropped:
                    if tr.state.get("reported"):
                        event("left", tr)
                for tr, _ in matched:
                    if tr.hits >= cfg.min_hits and not tr.state.get("reported"):
                        tr.state["reported"] = True
                        event("appeared", tr, frame=f.index, time=round(f.time, 3))
                due = [(tr, di) for tr, di in matched if tr.state.get("reported")
                       and f.index - tr.last_embed >= cfg.embed_every]
                if due:
                    emb = rec.embed_aligned([found[di][0] for _, di in due], cfg.flip)
                    embeddings += len(due)
                    if (gallery is None or not gallery.names) and rec.classifier is None:
                        # an empty gallery folder (people may be enrolled while watching): unknown
                        idx, scores, names, thr = np.full(len(due), -1), np.full(len(due), -1.0), [], 1.0
                    else:
                        idx, scores, names, thr = rec.name_embeddings(emb, gallery)
                    for (tr, _), i, s in zip(due, idx, scores):
                        tr.last_embed = f.index
                        name = names[i] if i >= 0 and s > thr else None
                        who, changed = voter.vote(tr.state, name, float(s))
                        if changed and who is not None:
                            event("identified", tr, frame=f.index, time=round(f.time, 3))
                            if len(sheet_frames) < 12:
                                sheet_frames.append((square(draw(f.image, tracker.tracks)[:, :, ::-1]),
                                                     f"frame {f.index}: {who}"))
            if writer is not None:
                writer.write(draw(f.image, tracker.tracks))
                written += 1
            processed += 1
            bar.update(1)
    except BaseException as e:  # keep the events so far; the tracks still open are logged as left
        failed = e
    finally:
        bar.close()
        for tr in tracker.tracks:
            if tr.state.get("reported"):
                event("left", tr, open_at_end=True)
        src.close()
        if watcher is not None:
            watcher.close()
        log.close()
        if writer is not None:
            writer.release()
            if failed is None and src.error is None:
                tmp_ctx.__exit__(None, None, None)
            else:
                tmp_ctx.__exit__(RuntimeError, RuntimeError("watch stopped"), None)
    if failed is not None:
        raise failed
    kept = f"; {len(log.events)} events kept in {cfg.events}" if cfg.events else ""
    if src.error:
        raise FormatError(src.error + kept)
    wall = time.monotonic() - t_start if t_start else 0.0
    sheet = cfg.sheet or (str(Path(cfg.output or cfg.events).with_suffix(".png")) if (cfg.output or cfg.events) else "")
    if sheet and sheet_frames:
        from ..plots import plot_face_grid

        plot_face_grid([im for im, _ in sheet_frames], [t for _, t in sheet_frames], sheet, cols=4,
                       title="watch: the frames where a track was identified")
    counts = {}
    for ev in log.events:
        counts[ev["event"]] = counts.get(ev["event"], 0) + 1
    return {"input": cfg.input, "frames_read": src.read, "processed": processed, "dropped": src.dropped,
            "fps": round(processed / wall, 2) if wall > 0 else None, "detections": detections,
            "embeddings": embeddings, "tracks": counts.get("appeared", 0), "events": counts,
            "identified": sorted({ev["name"] for ev in log.events if ev["event"] == "identified"}),
            "reloads": watcher.reloads if watcher else 0, "commands": log.commands if cfg.on_identified else None,
            "events_file": cfg.events or None, "output": cfg.output or None, "frames_written": written,
            "plots": [sheet] if sheet and sheet_frames else []}


__all__ = ["WatchConfig", "watch"]
