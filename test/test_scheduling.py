"""The node's scheduler without ROS: newest frame wins, drops counted, round robin, failures, shutdown."""

from __future__ import annotations

import threading
import time

import pytest

from perception_core.codec import ImageDecodeError
from perception_core.pipeline.scheduling import MailboxScheduler


class Recorder:
    """A handler that records (camera, item) and can hold the worker inside a frame, as a slow engine would."""

    def __init__(self, fail_on=None) -> None:
        self.served: list[tuple[int, object]] = []
        self.failures: list[tuple[str, str, Exception]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail_on = fail_on or {}
        self.during = lambda parcel: None  # runs inside the handler, like frames arriving during inference

    def handle(self, parcel) -> None:
        self.served.append((parcel.camera, parcel.item))
        self.during(parcel)
        self.entered.set()
        assert self.release.wait(10)
        if parcel.item in self.fail_on:
            raise self.fail_on[parcel.item]

    def on_failure(self, camera: str, counter: str, exc: Exception) -> None:
        self.failures.append((camera, counter, exc))


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.001)
    return condition()


@pytest.fixture
def make():
    made = []

    def build(cameras=("camera",), **kwargs):
        recorder = Recorder(kwargs.pop("fail_on", None))
        scheduler = MailboxScheduler(cameras, recorder.handle, recorder.on_failure, **kwargs)
        made.append(scheduler)
        return scheduler, recorder

    yield build
    for scheduler in made:
        scheduler.close()


def hold_worker_in(scheduler: MailboxScheduler, recorder: Recorder, camera: int, item) -> None:
    recorder.release.clear()
    recorder.entered.clear()
    scheduler.put(camera, item)
    assert recorder.entered.wait(5), "the worker never took the frame"


def test_a_busy_worker_keeps_only_the_newest_frame_and_counts_the_replaced_ones(make):
    scheduler, recorder = make()
    scheduler.start()
    hold_worker_in(scheduler, recorder, 0, 1)
    for item in range(2, 7):  # arrive while frame 1 is in the engine
        scheduler.put(0, item)
    recorder.release.set()
    assert wait_until(lambda: scheduler.snapshot()["camera"]["processed"] == 2)
    assert recorder.served == [(0, 1), (0, 6)]
    counts = scheduler.snapshot()["camera"]
    assert (counts["received"], counts["dropped"], counts["processed"]) == (6, 4, 2)


def test_a_camera_that_always_has_a_frame_waiting_cannot_starve_the_others(make):
    scheduler, recorder = make(("front", "rear", "left"))
    refills = iter(range(1, 6))
    recorder.during = lambda parcel: scheduler.put(0, f"front-{next(refills)}")  # front is never empty
    for camera, item in ((0, "front-0"), (1, "rear"), (2, "left")):
        scheduler.put(camera, item)
    scheduler.start()
    assert wait_until(lambda: len(recorder.served) >= 4)
    scheduler.close()
    assert [camera for camera, _ in recorder.served[:4]] == [0, 1, 2, 0]
    assert recorder.served[3] == (0, "front-3")  # the newest refill; front-1 and front-2 were dropped
    assert scheduler.snapshot()["front"]["dropped"] >= 2


def test_arrival_order_does_not_matter_only_the_rotation(make):
    scheduler, recorder = make(("a", "b"))
    for camera, item in ((1, "b"), (0, "a")):  # parked before the worker starts
        scheduler.put(camera, item)
    scheduler.start()
    assert wait_until(lambda: len(recorder.served) == 2)
    assert recorder.served == [(0, "a"), (1, "b")]


def test_failures_are_counted_by_kind_and_the_next_frame_is_served(make):
    bad_frame, bug = ImageDecodeError("step 10 is below width*channels"), RuntimeError("engine fell over")
    scheduler, recorder = make(("cam",), fail_on={1: bad_frame, 2: bug}, malformed=(ImageDecodeError,))
    scheduler.start()
    for item in (1, 2, 3):
        scheduler.put(0, item)
        assert wait_until(lambda n=item: len(recorder.served) == n and scheduler.snapshot()["cam"]["received"] == n
                          and sum(scheduler.snapshot()["cam"][k] for k in ("processed", "malformed", "errors")) == n)
    counts = scheduler.snapshot()["cam"]
    assert (counts["malformed"], counts["errors"], counts["processed"]) == (1, 1, 1)
    assert recorder.failures == [("cam", "malformed", bad_frame), ("cam", "errors", bug)]
    assert scheduler.last_error == "RuntimeError: engine fell over"


def test_a_failure_while_the_owner_shuts_down_stops_the_worker_quietly(make):
    running = threading.Event()
    running.set()
    scheduler, recorder = make(fail_on={1: RuntimeError("context is invalid")}, running=running.is_set)
    scheduler.start()
    hold_worker_in(scheduler, recorder, 0, 1)
    running.clear()
    recorder.release.set()
    scheduler.put(0, 2)
    assert not wait_until(lambda: len(recorder.served) > 1, timeout=0.3), "the worker kept serving"
    assert scheduler.snapshot()["camera"]["errors"] == 0 and recorder.failures == []


def test_close_wakes_an_idle_worker_at_once(make):
    scheduler, _ = make()
    scheduler.start()
    started = time.monotonic()
    scheduler.close(timeout=5.0)
    assert time.monotonic() - started < 1.0
    assert scheduler.take(timeout=0.0) is None


def test_close_lets_the_frame_in_flight_finish(make):
    scheduler, recorder = make()
    scheduler.start()
    hold_worker_in(scheduler, recorder, 0, 1)
    threading.Timer(0.2, recorder.release.set).start()
    scheduler.close(timeout=5.0)
    assert scheduler.snapshot()["camera"]["processed"] == 1


def test_every_frame_from_many_threads_is_either_processed_or_dropped(make):
    scheduler, recorder = make(("a", "b"))
    scheduler.start()
    producers = [threading.Thread(target=lambda c=c: [scheduler.put(c, i) for i in range(500)]) for c in (0, 1, 0, 1)]
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    assert wait_until(lambda: all(c["received"] == c["processed"] + c["dropped"]
                                  for c in scheduler.snapshot().values()))
    counts = scheduler.snapshot()
    assert counts["a"]["received"] == counts["b"]["received"] == 1000
    assert len(recorder.served) == sum(c["processed"] for c in counts.values())


def test_camera_names_must_be_distinct():
    with pytest.raises(ValueError, match="distinct"):
        MailboxScheduler(("front", "front"), print, print)
