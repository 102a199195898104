"""A fleet's bags evaluated on Ray: ``evaluate --bags DIR_OR_GLOB [--workers N] [--ray-address ADDR]``.

Each Ray actor holds one Pipeline (built once from the model's bytes, shipped through the object
store, so the model need not be on the workers' disks) and evaluates bags, or chunks of bags (frame
ranges, ``chunk_frames``), through the same path as ``evaluate --bag``
(:func:`~perception_core.evaluation.evaluate.evaluate` on a BagSource). The driver opens each bag
to count its frames and plan the work; chunks go to whichever actor is free, largest first. The
results come back with their metric states, and
:func:`~perception_core.evaluation.evaluate.merge_results` merges them in frame order, chunks into
bags and bags into one: the merged metrics equal one process evaluating the bags in sequence. A
bag that cannot be read is reported by name with its error; the others go on. Bags are read by the
driver and the actors, so on a cluster they must lie at the same path on every node (shared storage).

Without an address Ray starts on this machine with a bounded object store and stops at the end;
with one, the driver joins that cluster, ships this package to it (runtime_env py_modules) and
leaves the cluster running.
"""

from __future__ import annotations

import glob
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from tqdm import tqdm

import perception_core
from perception_core.datasets.bag import BagSource, bag_size_bytes
from perception_core.datasets.source import FrameSource
from perception_core.evaluation.evaluate import EvaluationResult, evaluate, evaluation_pipelines, merge_results
from perception_core.model_spec import ModelSpec, sidecar_path

INSTALL_HINT = ("evaluate --bags runs on Ray, which is not installed: pip install -r requirements/scale.txt "
                "(make setup installs it)")
OBJECT_STORE_MB = 256  # results are small (metric states, latencies); frames never enter the object store
PROGRESS_EVERY = 10  # frames an actor scores between two progress reports
POLL_S = 0.2  # how often the driver redraws the bar while waiting for bags
BAG_SUFFIXES = (".mcap", ".db3")


class RayMissing(RuntimeError):
    """Ray is not installed in this environment."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayMissing(INSTALL_HINT) from None
    return ray


def is_bag(path: Path) -> bool:
    """A rosbag2 folder (metadata.yaml) or a single .mcap/.db3 file."""
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or (path.is_file() and path.suffix in BAG_SUFFIXES)


def find_bags(where: Union[str, Path]) -> tuple[list[Path], list[Path]]:
    """(the bags ``where`` names, sorted; the other entries it names): one bag, a folder of bags, or a glob
    pattern (``bags/*/robot_*``). No bag at all is an error."""
    text = str(where)
    path = Path(text)
    if path.exists():
        candidates = [path] if is_bag(path) or not path.is_dir() else sorted(path.iterdir())
    else:
        candidates = [Path(p) for p in sorted(glob.glob(text))]
    bags = [c for c in candidates if is_bag(c)]
    if not bags:
        raise FileNotFoundError(f"no rosbag2 bags at {text} (a bag folder with metadata.yaml, a .mcap/.db3 file, a "
                                f"folder of them or a glob pattern)")
    return bags, [c for c in candidates if not is_bag(c)]


@dataclass(frozen=True)
class BagOutcome:
    """One bag, or its frames [first_frame, first_frame + frames): the result, or the error that stopped it
    (``frames``: None when the bag could not be opened)."""

    bag: str
    frames: Optional[int]
    result: Optional[EvaluationResult] = None
    info: Optional[dict] = None
    error: Optional[str] = None
    seconds: float = 0.0
    first_frame: int = 0


class ReportingSource:
    """A FrameSource that tells ``report(n)`` of the frames handed out, every ``every`` frames and at the last one.

    Reported as a frame is handed out, not after it is scored: a consumer that stops at the source's
    length (``evaluate``) never resumes the generator after its last frame.
    """

    def __init__(self, source: FrameSource, report, every: int = PROGRESS_EVERY) -> None:
        self.source, self.report, self.every = source, report, every
        self.spec, self.name = source.spec, source.name

    @property
    def truth_errors(self) -> list[dict]:
        return self.source.truth_errors

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self):
        pending, last = 0, len(self.source)
        for drawn, sample in enumerate(self.source, start=1):
            pending += 1
            if pending == self.every or drawn == last:
                self.report(pending)
                pending = 0
            yield sample


class FrameRange:
    """Frames [start, stop) of a source, indexed from 0, with the truth errors of those frames only.

    The frames before ``start`` are read and dropped: reading a frame costs a few percent of
    evaluating it, and the bag's own pairing of truth with images stays as it is.
    """

    def __init__(self, source: FrameSource, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= len(source):
            raise ValueError(f"frames [{start}, {stop}) are not within the {len(source)} frames of {source.name}")
        self.source, self.start, self.stop = source, start, stop
        self.spec, self.name = source.spec, source.name
        self.truth_errors: list[dict] = []

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self):
        self.truth_errors = []
        frames = iter(self.source)
        for index in range(self.stop):
            counted = len(getattr(self.source, "truth_errors", ()))  # a source's list is new on each pass
            sample = next(frames)
            if index >= self.start:
                self.truth_errors.extend(getattr(self.source, "truth_errors", ())[counted:])
                yield sample


class BagEvaluator:
    """Ray actor: one Pipeline, bags evaluated one at a time through ``evaluate`` (the ``evaluate --bag`` path)."""

    def __init__(self, model_files: dict[str, bytes], threads: int, topic: Optional[str], progress) -> None:
        import cv2

        cv2.setNumThreads(threads)  # letterbox and decode stay within the actor's CPUs
        self._folder = tempfile.TemporaryDirectory(prefix="fleet-model-")
        for name, data in model_files.items():
            (Path(self._folder.name) / name).write_bytes(data)
        model = next(name for name in model_files if not name.endswith(".json"))
        self.pipeline = next(iter(evaluation_pipelines([Path(self._folder.name) / model], threads).values()))
        self.topic, self.progress = topic, progress

    def ready(self) -> str:
        return f"{self.pipeline.model_names} on {self.pipeline.engine_name}"

    def evaluate_frames(self, bag: str, start: int, stop: int) -> BagOutcome:
        """Frames [start, stop) of ``bag``; an error (a bag that changed or breaks part way) is returned, not raised,
        and the actor goes on with the next."""
        import ray

        began = time.perf_counter()
        try:
            source = BagSource(bag, self.pipeline.spec, self.topic)
            # waited for, so that the counter is exact once this chunk's outcome is back (one call per 10 frames)
            report = lambda n: ray.get(self.progress.add.remote(n))  # noqa: E731
            result = evaluate(self.pipeline, ReportingSource(FrameRange(source, start, stop), report))
            return BagOutcome(bag, stop - start, result, source.info, seconds=time.perf_counter() - began,
                              first_frame=start)
        except Exception as exc:
            return BagOutcome(bag, stop - start, error=f"frames {start}-{stop - 1}: {type(exc).__name__}: {exc}",
                              seconds=time.perf_counter() - began, first_frame=start)


class ProgressCounter:
    """Ray actor (no CPU): frames scored across all actors, read by the driver's bar."""

    def __init__(self) -> None:
        self.done = 0

    def add(self, frames: int) -> None:
        self.done += frames

    def read(self) -> int:
        return self.done


@dataclass(frozen=True)
class FleetResult:
    """Per-bag outcomes in bag order, the merged result of the bags that were read, and where the time went."""

    model: str
    where: str
    outcomes: list[BagOutcome]
    merged: Optional[EvaluationResult]
    workers: int
    threads: int
    address: Optional[str]
    timing_s: dict[str, float]  # plan (open the bags), ray_start, actors_ready, evaluate, ray_shutdown, merge

    @property
    def failed(self) -> list[BagOutcome]:
        return [o for o in self.outcomes if o.error is not None]

    def frame_counts(self) -> dict[str, int]:
        """Frames in the bags that opened = evaluated + rejected (decode errors, and every frame of a bag that
        failed part way)."""
        read = [o.result for o in self.outcomes if o.result is not None]
        in_bags = sum(o.frames for o in self.outcomes if o.frames is not None)
        evaluated = sum(r.evaluated for r in read)
        return {"in_bags": in_bags, "evaluated": evaluated, "rejected": in_bags - evaluated,
                "decode_errors": sum(len(r.decode_errors) for r in read),
                "in_failed_bags": sum(o.frames for o in self.failed if o.frames is not None)}

    def as_dict(self) -> dict:
        counts = self.frame_counts()
        return {
            "model": self.model, "bags": self.where, "workers": self.workers, "threads_per_worker": self.threads,
            "ray_address": self.address or "local", "frames": counts,
            "frames_per_second": counts["evaluated"] / self.timing_s["evaluate"] if self.timing_s["evaluate"] else None,
            "timing_s": {k: round(v, 3) for k, v in self.timing_s.items()},
            "failed_bags": [{"bag": o.bag, "frames": o.frames, "error": o.error} for o in self.failed],
            "merged": self.merged.as_dict() if self.merged is not None else None,
            "per_bag": {Path(o.bag).name: {**o.result.as_dict(), "source_info": o.info, "seconds": round(o.seconds, 3)}
                        for o in self.outcomes if o.result is not None}}


def evaluate_bags(model: Union[str, Path], bags: Sequence[Union[str, Path]], *, workers: int, threads: int = 1,
                  address: Optional[str] = None, topic: Optional[str] = None, object_store_mb: int = OBJECT_STORE_MB,
                  chunk_frames: int = 0, where: str = "", progress: bool = True) -> FleetResult:
    """Evaluate ``bags`` with ``workers`` Ray actors of ``threads`` CPUs each; Ray is local unless ``address``.

    ``chunk_frames`` > 0 splits each bag into frame ranges of that length (for fewer bags than workers, or
    bags of very different lengths); 0 hands out whole bags.
    """
    ray = import_ray()
    if workers < 1 or threads < 1 or chunk_frames < 0:
        raise ValueError(f"need workers >= 1, threads >= 1 and chunk_frames >= 0, got {workers}, {threads}, "
                         f"{chunk_frames}")
    model = Path(model)
    files = {model.name: model.read_bytes(), sidecar_path(model).name: sidecar_path(model).read_bytes()}
    bags = [str(Path(b).resolve()) for b in bags]
    start = time.perf_counter()
    frames, unopened = count_frames(bags, ModelSpec.load(model).dataset, topic)
    chunks = largest_first(plan_chunks(frames, chunk_frames), frames)
    timing = {"plan": time.perf_counter() - start}
    start = time.perf_counter()
    if address is None:
        ray.init(num_cpus=workers * threads, object_store_memory=object_store_mb * 2**20, include_dashboard=False,
                 logging_level=logging.WARNING)
    else:
        ray.init(address=address, logging_level=logging.WARNING,
                 runtime_env={"py_modules": [str(Path(perception_core.__file__).parent)]})
    try:
        timing["ray_start"] = time.perf_counter() - start
        done, timing_run = _run(ray, files, chunks, workers, threads, topic, progress)
        timing.update(timing_run)
    finally:
        stop = time.perf_counter()
        ray.shutdown()
        timing["ray_shutdown"] = time.perf_counter() - stop
    start = time.perf_counter()
    outcomes = [unopened.get(bag) or whole_bag(bag, frames[bag], done[bag]) for bag in bags]
    read = [o.result for o in outcomes if o.result is not None]
    merged = merge_results(read, f"{len(read)} bags ({where or len(bags)})") if read else None
    timing["merge"] = time.perf_counter() - start
    return FleetResult(model.name, where, outcomes, merged, workers, threads, address, timing)


def count_frames(bags: Sequence[str], spec, topic: Optional[str]) -> tuple[dict[str, int], dict[str, BagOutcome]]:
    """({bag: camera frames} of the bags that open, {bag: its failure} of the others), from their metadata."""
    frames, unopened = {}, {}
    for bag in bags:
        try:
            frames[bag] = len(BagSource(bag, spec, topic))
        except Exception as exc:  # reported by name; the other bags go on
            unopened[bag] = BagOutcome(bag, None, error=f"{type(exc).__name__}: {exc}")
    return frames, unopened


def plan_chunks(frames: dict[str, int], chunk_frames: int) -> list[tuple[str, int, int]]:
    """(bag, start, stop) frame ranges: whole bags when ``chunk_frames`` is 0, else ranges of that length."""
    size = chunk_frames or max(frames.values(), default=1) or 1
    return [(bag, start, min(start + size, count)) for bag, count in frames.items()
            for start in range(0, max(count, 1), size)]


def largest_first(chunks: list[tuple[str, int, int]], frames: dict[str, int]) -> list[tuple[str, int, int]]:
    """Chunks by their share of their bag's bytes, largest first: no long one is left for last."""
    bag_bytes = {bag: bag_size_bytes(bag) for bag in frames}
    return sorted(chunks, key=lambda c: bag_bytes[c[0]] * (c[2] - c[1]) / max(1, frames[c[0]]), reverse=True)


def whole_bag(bag: str, frames: int, parts: list[BagOutcome]) -> BagOutcome:
    """A bag's outcome from its chunks' (in frame order): the chunks' results merged, or their errors."""
    parts = sorted(parts, key=lambda part: part.first_frame)
    seconds = sum(part.seconds for part in parts)
    errors = [part.error for part in parts if part.error is not None]
    if errors:
        return BagOutcome(bag, frames, error="; ".join(errors), seconds=seconds)
    results = [part.result for part in parts]
    result = results[0] if len(results) == 1 else merge_results(results, results[0].source)
    return BagOutcome(bag, frames, result, parts[0].info, seconds=seconds)


def _run(ray, files, chunks, workers, threads, topic, progress):
    """Start the actors, hand out the chunks in order as actors come free, gather the outcomes per bag."""
    timing = {}
    start = time.perf_counter()
    counter = ray.remote(num_cpus=0)(ProgressCounter).remote()
    evaluator = ray.remote(num_cpus=threads)(BagEvaluator)
    actors = [evaluator.remote(files, threads, topic, counter) for _ in range(workers)]
    try:
        ray.get([actor.ready.remote() for actor in actors])
    except ray.exceptions.RayActorError as exc:
        raise ValueError(f"the workers cannot load the model: {exc}") from exc
    timing["actors_ready"] = time.perf_counter() - start
    start = time.perf_counter()
    queue = list(chunks)
    running, done = {}, {bag: [] for bag, _, _ in chunks}  # running: ref -> (actor, chunk)
    bags = len(done)
    bar = tqdm(total=sum(stop - first for _, first, stop in chunks), unit="frame", disable=not progress,
               desc=f"evaluate {bags} bags ({len(chunks)} chunks) on {workers} workers")
    while queue or running:
        busy = {actor for actor, _ in running.values()}
        for actor in actors:
            if queue and actor not in busy:
                chunk = queue.pop(0)
                running[actor.evaluate_frames.remote(*chunk)] = (actor, chunk)
        ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
        for ref in ready:
            actor, (bag, first, stop) = running.pop(ref)
            try:
                done[bag].append(ray.get(ref))
            except ray.exceptions.RayActorError as exc:  # the worker died (out of memory, a crash): the rest go on
                actors.remove(actor)
                done[bag].append(BagOutcome(bag, stop - first, error=f"worker lost: {exc}", first_frame=first))
        if not actors:
            for bag, first, stop in queue:
                done[bag].append(BagOutcome(bag, stop - first, error="no worker left", first_frame=first))
            queue.clear()
        bar.n = ray.get(counter.read.remote())
        bar.refresh()
    bar.close()  # exact: each actor's counts are in before its outcome returns
    timing["evaluate"] = time.perf_counter() - start
    return done, timing

