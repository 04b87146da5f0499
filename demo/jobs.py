"""Background jobs with progress the UI can poll: training a cross-encoder, running pipeline steps.

A job is a plain function `fn(progress)` where `progress(fraction, message)` records how far it
got; it runs in a daemon thread. The UI polls `JobRunner.state(name)` from a `gr.Timer`, so a
browser tab that is closed and reopened still sees the job. One job per name at a time: starting
a job that is already running returns its current state instead of starting a second one.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class JobState:
    name: str
    status: str  # "idle" | "running" | "done" | "failed"
    fraction: float = 0.0
    message: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    error: str = ""

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def elapsed(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.finished_at or time.time()) - self.started_at


class JobRunner:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, JobState] = {}
        self._results: dict[str, Any] = {}
        self._threads: dict[str, threading.Thread] = {}

    def state(self, name: str) -> JobState:
        with self._lock:
            return self._states.get(name, JobState(name, "idle"))

    def result(self, name: str) -> Any:
        with self._lock:
            return self._results.get(name)

    def start(self, name: str, fn: Callable[[Progress], Any], on_done: Callable[[Any], None] | None = None) -> JobState:
        """Run `fn(progress)` in the background; `on_done(result)` runs in the job's thread on success."""
        with self._lock:
            current = self._states.get(name)
            if current is not None and current.running:
                return current
            self._states[name] = JobState(name, "running", 0.0, "starting", started_at=time.time())
            self._results.pop(name, None)
            thread = threading.Thread(target=self._run, args=(name, fn, on_done), name=f"job-{name}", daemon=True)
            self._threads[name] = thread
        thread.start()
        return self.state(name)

    def wait(self, name: str, timeout: float | None = None) -> JobState:
        """Block until the job ends (tests and scripts); returns its final state."""
        thread = self._threads.get(name)
        if thread is not None:
            thread.join(timeout)
        return self.state(name)

    def _update(self, name: str, **changes: Any) -> None:
        with self._lock:
            self._states[name] = replace(self._states[name], **changes)

    def _run(self, name: str, fn: Callable[[Progress], Any], on_done: Callable[[Any], None] | None) -> None:
        def progress(fraction: float, message: str = "") -> None:
            self._update(name, fraction=max(0.0, min(1.0, float(fraction))), message=str(message))

        try:
            result = fn(progress)
            if on_done is not None:
                on_done(result)
        except Exception as e:  # a job's failure is reported in the UI, never raised into the server
            log.error("job %s failed: %s", name, traceback.format_exc())
            self._update(name, status="failed", error=f"{type(e).__name__}: {e}", finished_at=time.time())
            return
        with self._lock:
            self._results[name] = result
        self._update(name, status="done", fraction=1.0, message="finished", finished_at=time.time())
