"""What happened, as JSON lines: ``appeared``, ``identified``, ``left`` (one object per line,
written and flushed as it happens, so a run that stops keeps every event so far), and the user's
command on ``identified`` (the guide's GPIO signal), run without a shell, with a timeout, one at a
time in its own thread so that the loop never waits for it."""
from __future__ import annotations

import json
import queue
import subprocess
import threading
from pathlib import Path


class EventLog:
    def __init__(self, path: str | None, command: list | None = None, timeout: float = 5.0):
        self.path = Path(path) if path else None
        self.f = None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.f = open(self.path, "w", encoding="utf-8")
        self.events: list[dict] = []
        self.command, self.timeout = [str(c) for c in command or []], float(timeout)
        self.commands = {"run": 0, "failed": 0, "timed_out": 0}
        self.q: queue.Queue = queue.Queue()
        self.runner = None
        if self.command:
            self.runner = threading.Thread(target=self._run_commands, name="recface-watch-command", daemon=True)
            self.runner.start()

    def emit(self, event: dict) -> None:
        self.events.append(event)
        if self.f:
            self.f.write(json.dumps(event, allow_nan=False) + "\n")
            self.f.flush()
        if self.command and event["event"] == "identified":
            self.q.put(event)

    def _run_commands(self):
        while True:
            ev = self.q.get()
            if ev is None:
                return
            env_add = {"RECFACE_EVENT": json.dumps(ev), "RECFACE_NAME": str(ev.get("name")),
                       "RECFACE_TRACK": str(ev.get("track"))}
            import os

            try:
                r = subprocess.run(self.command, input=json.dumps(ev).encode(), timeout=self.timeout,
                                   capture_output=True, env={**os.environ, **env_add})
                self.commands["run"] += 1
                self.commands["failed"] += int(r.returncode != 0)
            except subprocess.TimeoutExpired:
                self.commands["timed_out"] += 1
            except OSError:
                self.commands["failed"] += 1

    def close(self) -> None:
        if self.runner is not None:
            self.q.put(None)
            self.runner.join(timeout=self.timeout + 5)
        if self.f:
            self.f.close()
            self.f = None
