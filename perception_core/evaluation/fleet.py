"""A fleet's bags evaluated on Ray: ``evaluate --bags DIR_OR_GLOB [--workers N] [--ray-address ADDR]``.

Each Ray actor holds one Pipeline (built once from the model's bytes, shipped through the object
store, so the model need not be on the workers' disks) and evaluates whole bags through the same
path as ``evaluate --bag`` (:func:`~perception_core.evaluation.evaluate.evaluate` on a BagSource).
Bags go to whichever actor is free, largest first. The per-bag results come back with their
metric states, and :func:`~perception_core.evaluation.evaluate.merge_results` merges them in bag
order: the merged metrics equal one process evaluating the bags in sequence. A bag that cannot be
read is reported by name with its error; the others go on. Bags are read by the actors, so on a
cluster they must lie at the same path on every node (shared storage).

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
from perception_core.datasets.source import FrameSource
from perception_core.evaluation.evaluate import EvaluationResult, evaluate, evaluation_pipelines, merge_results
from perception_core.model_spec import sidecar_path

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
    """One bag as an actor saw it: its result, or the error that stopped it (``frames``: None when unopened)."""

    bag: str
    frames: Optional[int]
    result: Optional[EvaluationResult] = None
    info: Optional[dict] = None
    error: Optional[str] = None
    seconds: float = 0.0


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

    def evaluate_bag(self, bag: str) -> BagOutcome:
        import ray

        from perception_core.datasets.bag import BagSource

        start, frames = time.perf_counter(), None
        try:
            source = BagSource(bag, self.pipeline.spec, self.topic)
            frames = len(source)
            ray.get(self.progress.add_total.remote(frames))
            # waited for, so that the counter is exact once this bag's outcome is back (one call per 10 frames)
            report = lambda n: ray.get(self.progress.add_done.remote(n))  # noqa: E731
            result = evaluate(self.pipeline, ReportingSource(source, report))
            return BagOutcome(bag, frames, result, source.info, seconds=time.perf_counter() - start)
        except Exception as exc:  # a bag that cannot be read is reported, the actor goes on with the next
            return BagOutcome(bag, frames, error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - start)


class ProgressCounter:
    """Ray actor (no CPU): frames announced and scored across all actors, read by the driver's bar."""

    def __init__(self) -> None:
        self.total, self.done = 0, 0

    def add_total(self, frames: int) -> None:
        self.total += frames

    def add_done(self, frames: int) -> None:
        self.done += frames

    def read(self) -> tuple[int, int]:
        return self.total, self.done


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
    timing_s: dict[str, float]  # ray_start, actors_ready, evaluate, merge, ray_shutdown

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
                  where: str = "", progress: bool = True) -> FleetResult:
    """Evaluate ``bags`` with ``workers`` Ray actors of ``threads`` CPUs each; Ray is local unless ``address``."""
    ray = import_ray()
    if workers < 1 or threads < 1:
        raise ValueError(f"need workers >= 1 and threads >= 1, got {workers}, {threads}")
    model = Path(model)
    files = {model.name: model.read_bytes(), sidecar_path(model).name: sidecar_path(model).read_bytes()}
    bags = [str(Path(b).resolve()) for b in bags]
    timing = {}
    start = time.perf_counter()
    if address is None:
        ray.init(num_cpus=workers * threads, object_store_memory=object_store_mb * 2**20, include_dashboard=False,
                 logging_level=logging.WARNING)
    else:
        ray.init(address=address, logging_level=logging.WARNING,
                 runtime_env={"py_modules": [str(Path(perception_core.__file__).parent)]})
    try:
        timing["ray_start"] = time.perf_counter() - start
        outcomes, timing_run = _run(ray, files, bags, workers, threads, topic, progress)
        timing.update(timing_run)
    finally:
        stop = time.perf_counter()
        ray.shutdown()
        timing["ray_shutdown"] = time.perf_counter() - stop
    start = time.perf_counter()
    read = [o.result for o in outcomes if o.result is not None]
    merged = merge_results(read, f"{len(read)} bags ({where or len(bags)})") if read else None
    timing["merge"] = time.perf_counter() - start
    return FleetResult(model.name, where, outcomes, merged, workers, threads, address, timing)


def _run(ray, files, bags, workers, threads, topic, progress):
    """Start the actors, hand out bags largest first as actors come free, and gather outcomes in bag order."""
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
    queue = sorted(bags, key=_bag_bytes, reverse=True)  # largest first: no long bag left for last
    running, outcomes = {}, {}  # running: ref -> (actor, bag)
    bar = tqdm(total=0, desc=f"evaluate {len(bags)} bags on {workers} workers", unit="frame", disable=not progress)
    while queue or running:
        busy = {actor for actor, _ in running.values()}
        for actor in actors:
            if queue and actor not in busy:
                bag = queue.pop(0)
                running[actor.evaluate_bag.remote(bag)] = (actor, bag)
        done, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
        for ref in done:
            actor, bag = running.pop(ref)
            try:
                outcomes[bag] = ray.get(ref)
            except ray.exceptions.RayActorError as exc:  # the worker died (out of memory, a crash): the rest go on
                actors.remove(actor)
                outcomes[bag] = BagOutcome(bag, None, error=f"worker lost: {exc}")
        if not actors:
            outcomes.update({bag: BagOutcome(bag, None, error="no worker left") for bag in queue})
            queue.clear()
        _show(bar, *ray.get(counter.read.remote()))
    bar.close()  # exact: each actor's counts are in before its outcome returns
    timing["evaluate"] = time.perf_counter() - start
    return [outcomes[bag] for bag in bags], timing


def _show(bar: tqdm, total: int, scored: int) -> None:
    bar.total = max(total, scored)
    bar.n = scored
    bar.refresh()


def _bag_bytes(bag: str) -> int:
    path = Path(bag)
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
