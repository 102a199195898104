"""``make bench-fleet``: ``evaluate --bags`` on 1 and 2 Ray workers against one process, on the same recorded bags.

Records the simulator bags once (``bench/fleet_bags``: 8 x 200 frames, 640x480 bgr8, as the camera
publishes), then in one run:
- reads every bag without evaluating it (the bag read rate: frames/s and MiB/s from the page cache);
- evaluates all bags in one process, in sequence, with one inference thread (the reference metrics,
  and the per-frame cost split into reading, the pipeline and the metrics);
- evaluates them on a local Ray runtime with 1 and then 2 workers of 1 thread each, ``--repeats``
  times alternately; Ray's start-up, the actors' model load, the evaluation, the merge and the
  shutdown are timed apart, and the merged metrics are compared with the reference's;
- projects the measured figures to a fleet: workers for 1,000 hours of 30 Hz recordings in one night,
  and what bounds it.
Writes ``bench/fleet.json``, ``bench/fleet.md`` and ``bench/fleet_scaling.png``.
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from pathlib import Path

import numpy as np

from perception_core.datasets.bag import BagSource, bag_size_bytes
from perception_core.datasets.source import ChainedSource
from perception_core.datasets.spec import DatasetSpec
from perception_core.evaluation.evaluate import evaluate, evaluation_pipelines
from perception_core.evaluation.fleet import evaluate_bags, find_bags
from perception_core.evaluation.record import record_simulation
from perception_core.model_spec import ModelSpec
from perception_core.pipeline.pipeline import TOTAL
from perception_core.plotting import pyplot, save
from perception_core.resources import package_file

FLEET_HOURS = 1000.0  # recordings to evaluate
CAMERA_HZ = 30.0
NIGHT_HOURS = 10.0  # the time the evaluation may take
FIRST_SEED = 1000  # bag k renders the simulator's scenes of seed FIRST_SEED + k
NOT_COMPARED = ("latency_ms", "source")


def recorded_bags(folder: Path, bags: int, frames: int, spec: DatasetSpec) -> list[Path]:
    """``bags`` recordings of ``frames`` frames in ``folder``, recorded unless already there."""
    paths = []
    for k in range(bags):
        path = folder / f"robot_{k}"
        if path.exists() and len(BagSource(path, spec)) != frames:
            raise FileExistsError(f"{path} holds another recording: remove {folder}")
        if not path.exists():
            record_simulation(path, frames, seed=FIRST_SEED + k, progress=False)
        paths.append(path)
    return paths


def read_rate(bags: list[Path], spec: DatasetSpec) -> dict:
    """Frames and bytes per second of reading and deserialising every message a BagSource pairs (no decode)."""
    start = time.perf_counter()
    frames = sum(1 for bag in bags for _ in BagSource(bag, spec))
    seconds = time.perf_counter() - start
    size = sum(bag_size_bytes(bag) for bag in bags)
    return {"frames": frames, "seconds": seconds, "frames_per_s": frames / seconds,
            "mib_per_s": size / 2**20 / seconds, "bytes_per_frame": size / frames}


def comparable(result: dict) -> dict:
    return {k: v for k, v in json.loads(json.dumps(result)).items() if k not in NOT_COMPARED}


def sequential(model: Path, bags: list[Path]) -> tuple[dict, dict]:
    """One process, one thread, all bags in sequence: (the result's JSON form, the per-frame cost in ms)."""
    pipeline = evaluation_pipelines([model], threads=1)[model.name]
    import cv2

    cv2.setNumThreads(1)
    start = time.perf_counter()
    result = evaluate(pipeline, ChainedSource([BagSource(bag, pipeline.spec) for bag in bags]), progress=True)
    seconds = time.perf_counter() - start
    pipeline_ms = float(np.sum(result.latency_samples_ms[TOTAL])) / result.frames
    return result.as_dict(), {"total_ms": 1000 * seconds / result.frames, "pipeline_ms": pipeline_ms,
                              "frames_per_s": result.frames / seconds, "seconds": seconds}


def fleet_run(model: Path, bags: list[Path], workers: int, where: str) -> dict:
    fleet = evaluate_bags(model, bags, workers=workers, threads=1, where=where, progress=True)
    out = fleet.as_dict()
    outcomes = [o for o in fleet.outcomes if o.result is not None]
    out["result_bytes_per_frame"] = sum(len(pickle.dumps(o)) for o in outcomes) / max(1, out["frames"]["evaluated"])
    return out


def project(per_worker_fps: float, read: dict, merge_s_per_frame: float, result_bytes_per_frame: float) -> dict:
    """The fleet on paper: frames to evaluate, workers needed in one night, and the loads that grow with them."""
    frames = FLEET_HOURS * 3600 * CAMERA_HZ
    needed_fps = frames / (NIGHT_HOURS * 3600)
    return {
        "fleet_hours": FLEET_HOURS, "camera_hz": CAMERA_HZ, "night_hours": NIGHT_HOURS, "frames": frames,
        "needed_frames_per_s": needed_fps, "per_worker_frames_per_s": per_worker_fps,
        "workers_needed": int(np.ceil(needed_fps / per_worker_fps)),
        "storage_read_mib_per_s": needed_fps * read["bytes_per_frame"] / 2**20,
        "storage_read_per_worker_share": per_worker_fps / read["frames_per_s"],
        "results_gib": frames * result_bytes_per_frame / 2**30,
        "merge_hours_one_process": frames * merge_s_per_frame / 3600,
    }


def plot(out: Path, runs: dict, projection: dict) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    workers = sorted(runs)
    rates = [np.median([r["frames_per_second"] for r in runs[w]]) for w in workers]
    left.plot(workers, rates, "o-", label="measured (median of runs)")
    ideal = [rates[0] * w for w in workers]
    left.plot(workers, ideal, "k--", label="linear from 1 worker")
    left.set(xlabel="Ray workers (1 thread each)", ylabel="frames/s", title="this 2-core machine", xticks=workers)
    n = np.geomspace(1, 4 * projection["workers_needed"], 50)
    hours = projection["frames"] / (n * projection["per_worker_frames_per_s"]) / 3600
    right.loglog(n, hours, label="evaluation (linear in workers)")
    right.axhline(projection["night_hours"], color="k", linestyle=":", label=f"one night ({NIGHT_HOURS:.0f} h)")
    right.axhline(projection["merge_hours_one_process"], color="r", linestyle="--",
                  label="merged mAP in one process (pycocotools)")
    right.axvline(projection["workers_needed"], color="g", linestyle="-.",
                  label=f"{projection['workers_needed']} workers")
    right.set(xlabel="workers", ylabel="hours", title=f"{FLEET_HOURS:.0f} h of {CAMERA_HZ:.0f} Hz recordings")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.4)
        ax.legend(fontsize=8)
    save(fig, out)


def markdown(results: dict) -> str:
    runs, ref, proj, read = results["runs"], results["sequential"], results["projection"], results["read"]
    lines = ["# Fleet evaluation on Ray", "", f"{results['bags']} bags x {results['frames_per_bag']} frames "
             f"(640x480 bgr8), model `{results['model']}`, 1 inference thread per worker.", "",
             "| run | frames/s | Ray start s | actors ready s | evaluate s | merge s | Ray shutdown s | "
             "merged = sequential |", "|---|---:|---:|---:|---:|---:|---:|---|",
             f"| one process, no Ray | {ref['cost']['frames_per_s']:.1f} | | | {ref['cost']['seconds']:.1f} | | | "
             "reference |"]
    for workers in sorted(runs, key=int):
        for r in runs[workers]:
            t = r["timing_s"]
            lines.append(f"| {workers} worker(s) | {r['frames_per_second']:.1f} | {t['ray_start']:.2f} | "
                         f"{t['actors_ready']:.2f} | {t['evaluate']:.1f} | {t['merge']:.2f} | "
                         f"{t['ray_shutdown']:.2f} | {r['merged_equals_sequential']} |")
    lines += ["", f"**Throughput ratio 2 workers / 1 worker: {results['ratio_2_over_1']:.2f}** (median of runs).", "",
              "Per frame, one thread: " + ", ".join(f"{k} {v:.1f} ms" for k, v in ref["cost"].items()
                                                   if k.endswith("_ms")) +
              f"; bag read alone {1000 / read['frames_per_s']:.2f} ms ({read['frames_per_s']:.0f} frames/s, "
              f"{read['mib_per_s']:.0f} MiB/s from the page cache).", "",
              f"## {proj['fleet_hours']:.0f} h of {proj['camera_hz']:.0f} Hz recordings in {proj['night_hours']:.0f} h",
              "", f"- {proj['frames']:.3g} frames: {proj['needed_frames_per_s']:.0f} frames/s needed",
              f"- {proj['per_worker_frames_per_s']:.1f} frames/s per 1-thread worker -> "
              f"**{proj['workers_needed']} workers**",
              f"- storage: {proj['storage_read_mib_per_s']:.0f} MiB/s of raw bgr8 bags in aggregate",
              f"- results sent back: {proj['results_gib']:.1f} GiB (metric states, latencies)",
              f"- one merged mAP in one process: {proj['merge_hours_one_process']:.1f} h"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perception_core.fleet_bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--bags", type=int, default=8)
    parser.add_argument("--frames", type=int, default=200, help="frames per bag")
    parser.add_argument("--repeats", type=int, default=2, help="1- and 2-worker runs, alternately")
    parser.add_argument("--model", type=Path, default=package_file("models", "multitask.onnx"))
    parser.add_argument("--out", type=Path, default=Path("bench"))
    args = parser.parse_args(argv)
    started = time.monotonic()
    folder = args.out / "fleet_bags"
    print(f"[fleet] {args.bags} bags x {args.frames} frames in {folder}", flush=True)
    spec = ModelSpec.load(args.model).dataset  # the bags are read in the model's classes, as evaluate does
    bags = recorded_bags(folder, args.bags, args.frames, spec)
    assert find_bags(folder) == (bags, [])
    read = read_rate(bags, spec)
    print(f"[fleet] read {read['frames_per_s']:.0f} frames/s, {read['mib_per_s']:.0f} MiB/s", flush=True)
    reference, cost = sequential(args.model, bags)
    print(f"[fleet] one process: {cost['frames_per_s']:.1f} frames/s", flush=True)
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for repeat in range(args.repeats):
        for workers in (1, 2):
            print(f"[fleet] Ray, {workers} worker(s), run {repeat + 1}/{args.repeats}", flush=True)
            run = fleet_run(args.model, bags, workers, str(folder))
            run["merged_equals_sequential"] = comparable(run["merged"]) == comparable(reference)
            runs[workers].append(run)
            print(f"[fleet]   {run['frames_per_second']:.1f} frames/s, timing {run['timing_s']}, merged = sequential: "
                  f"{run['merged_equals_sequential']}", flush=True)
    rate = {w: float(np.median([r["frames_per_second"] for r in rs])) for w, rs in runs.items()}
    merge_s_per_frame = float(np.median([r["timing_s"]["merge"] for rs in runs.values() for r in rs])) / read["frames"]
    result_bytes = float(np.median([r["result_bytes_per_frame"] for rs in runs.values() for r in rs]))
    projection = project(rate[1], read, merge_s_per_frame, result_bytes)
    results = {"model": args.model.name, "bags": args.bags, "frames_per_bag": args.frames, "read": read,
               "sequential": {"cost": cost, "metrics": comparable(reference)},
               "runs": {str(w): [{k: v for k, v in r.items() if k not in ("merged", "per_bag")} for r in rs]
                        for w, rs in runs.items()},
               "ratio_2_over_1": rate[2] / rate[1], "projection": projection,
               "seconds": time.monotonic() - started}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fleet.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "fleet.md").write_text(markdown(results))
    plot(args.out / "fleet_scaling.png", runs, projection)
    print(markdown(results))
    print(f"[fleet] wrote {args.out}/fleet.json, fleet.md, fleet_scaling.png in {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
