"""One worker serving several cameras: a one-slot mailbox per camera, round robin, drops counted.

Frames arrive on the caller's thread (a ROS executor) and are only parked; the worker thread runs
the handler on the newest parked frame. Under overload a newer frame replaces an unprocessed one,
so no queue grows and latency stays bounded; every replaced frame is counted as a drop. Serving
the cameras round robin keeps a busy camera from starving the others. The engine releases the
GIL, so parking a frame never waits for inference.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

# Per-camera counters: the scheduler counts all but "overlays", which only the handler knows of.
COUNTERS = ("received", "processed", "dropped", "malformed", "errors", "overlays")


@dataclass(frozen=True)
class Parcel:
    """A parked frame: which camera, the caller's item (e.g. a message), perf_counter() at arrival."""

    camera: int
    item: Any
    arrived: float


class MailboxScheduler:
    """``put`` parks a camera's newest frame; one worker thread hands each to ``handle``, round robin.

    ``handle(parcel)`` runs on the worker thread; a frame it returns from is "processed". A frame it
    raises on is counted as "malformed" (an exception listed in ``malformed``: the frame's own
    fault) or "errors" (any other), ``last_error`` says what, ``on_failure(camera, counter, exc)``
    is told, and the next frame is served; unless ``running()`` is False by then: the owner is
    shutting down (its context is gone), and the worker stops quietly.
    """

    def __init__(self, cameras: Sequence[str], handle: Callable[[Parcel], None],
                 on_failure: Callable[[str, str, Exception], None], malformed: tuple[type[Exception], ...] = (),
                 running: Callable[[], bool] = lambda: True, thread_name: str = "pipeline") -> None:
        if not cameras or len(set(cameras)) != len(cameras):
            raise ValueError(f"cameras must be distinct names, got {list(cameras)}")
        self.cameras = tuple(cameras)
        self.counts = [dict.fromkeys(COUNTERS, 0) for _ in self.cameras]
        self.last_error = ""
        self._handle, self._on_failure, self._malformed, self._running = handle, on_failure, malformed, running
        self._slots: list[Optional[Parcel]] = [None] * len(self.cameras)
        self._next = 0  # the camera served first on the next take, so that none starves
        self._open = True
        self._lock = threading.Condition()
        self._worker = threading.Thread(target=self._serve, name=thread_name, daemon=True)

    def start(self) -> MailboxScheduler:
        self._worker.start()
        return self

    def put(self, camera: int, item: Any) -> None:
        """Park ``item`` as ``camera``'s newest frame; an unserved older one is dropped and counted."""
        with self._lock:
            counts = self.counts[camera]
            counts["received"] += 1
            if self._slots[camera] is not None:
                counts["dropped"] += 1
            self._slots[camera] = Parcel(camera, item, time.perf_counter())
            self._lock.notify()

    def count(self, camera: int, counter: str, error: str = "") -> None:
        """Add one to ``counter`` of ``camera``; ``error`` (if any) becomes ``last_error``."""
        with self._lock:
            self.counts[camera][counter] += 1
            if error:
                self.last_error = error

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Camera name -> a copy of its counters, taken consistently."""
        with self._lock:
            return {name: dict(counts) for name, counts in zip(self.cameras, self.counts)}

    def take(self, timeout: Optional[float] = None) -> Optional[Parcel]:
        """The next parked frame, round robin; waits for one. None once closed (or after ``timeout`` s)."""
        with self._lock:
            self._lock.wait_for(lambda: not self._open or any(s is not None for s in self._slots), timeout)
            if not self._open:
                return None
            for offset in range(len(self._slots)):
                camera = (self._next + offset) % len(self._slots)
                parcel = self._slots[camera]
                if parcel is not None:
                    self._slots[camera] = None
                    self._next = (camera + 1) % len(self._slots)
                    return parcel
            return None

    def close(self, timeout: float = 5.0) -> None:
        """Wake and stop the worker; a frame in the handler finishes first (up to ``timeout`` s)."""
        with self._lock:
            self._open = False
            self._lock.notify_all()
        if self._worker.is_alive() and self._worker is not threading.current_thread():
            self._worker.join(timeout)

    def _serve(self) -> None:
        while (parcel := self.take()) is not None:
            try:
                self._handle(parcel)
                self.count(parcel.camera, "processed")
            except Exception as exc:  # keep serving frames; the failure is counted and reported
                if not self._running():
                    return
                camera = self.cameras[parcel.camera]
                if isinstance(exc, self._malformed):
                    counter, error = "malformed", f"{camera}: {exc}"
                else:
                    counter, error = "errors", f"{type(exc).__name__}: {exc}"
                self.count(parcel.camera, counter, error)
                self._on_failure(camera, counter, exc)
