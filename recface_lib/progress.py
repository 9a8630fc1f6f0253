"""One place that makes progress bars (tqdm.auto: a widget in notebooks, text in a terminal), and
keeps the console quiet.

``recface pipeline`` runs each stage in a notebook kernel whose console nobody sees; it sets
``RECFACE_PROGRESS_FILE`` for that kernel, and every bar made here then also writes its state
(description, count, total, elapsed seconds) to that file, at most once a second. The pipeline
reads it and draws one line per stage with its ETA on the user's console (``relay_line``)."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time


def progress(iterable=None, total=None, desc: str = "", disable: bool | None = None, **kw):
    from tqdm.auto import tqdm

    disable = bool(disable) or os.environ.get("RECFACE_NO_PROGRESS") == "1"
    relay = os.environ.get("RECFACE_PROGRESS_FILE")
    cls = _relay_class(tqdm, relay) if relay else tqdm
    if relay and total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    return cls(iterable, total=total, desc=desc, disable=disable, file=kw.pop("file", sys.stderr),
               dynamic_ncols=True, mininterval=0.5, **kw)


_RELAY_CLASSES: dict = {}


def _relay_class(base, path: str):
    if base in _RELAY_CLASSES:
        return _RELAY_CLASSES[base]

    class Relay(base):
        """A tqdm that also reports to ``RECFACE_PROGRESS_FILE`` (even when it is not displayed)."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self._relay = {"desc": kw.get("desc", ""), "n": int(kw.get("initial", 0) or 0),
                           "total": kw.get("total") or getattr(self, "total", None), "unit": kw.get("unit", "it"),
                           "start": time.time()}
            self._relay_t = 0.0
            self._write(force=True)

        def __iter__(self):
            for x in self.iterable:
                yield x
                self.update(1)

        def update(self, n=1):
            self._relay["n"] += n or 0
            self._write()
            return super().update(n)

        def close(self):
            if hasattr(self, "_relay"):
                self._write(force=True)
            return super().close()

        def _write(self, force: bool = False):
            now = time.time()
            if not force and now - self._relay_t < 1.0:
                return
            self._relay_t = now
            state = {**self._relay, "elapsed": now - self._relay["start"]}
            tmp = f"{path}.tmp-{os.getpid()}"
            try:
                with open(tmp, "w") as f:
                    json.dump(state, f)
                os.replace(tmp, path)
            except OSError:
                pass  # progress is a courtesy; never fail a stage for it

    _RELAY_CLASSES[base] = Relay
    return Relay


def relay_line(path: str) -> tuple[str, int, int | None, str] | None:
    """(description, count, total, unit) last written to a progress file, None if none yet."""
    try:
        with open(path) as f:
            s = json.load(f)
        return s["desc"], int(s["n"]), s.get("total"), s.get("unit") or "it"
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def quiet_stderr():
    """Hide what C++ libraries print on the process' stderr during the block (TensorFlow's start-up
    lines); shown after all if the block fails."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as cap:
        os.dup2(cap.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            cap.seek(0)
            sys.stderr.write(cap.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and Keras without their start-up log lines on the console."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import importlib

    with quiet_stderr():
        for name in ("tensorflow", "keras"):
            importlib.import_module(name)
