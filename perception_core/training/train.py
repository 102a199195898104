"""Training: a Trainer whose parts read one at a time (data, model, optimizers, step, checkpoint, log).

Frames come from one or more FrameSources (default: the simulator's training split, cached at the
input scale; folder datasets are read from disk as batches are drawn, by worker threads). Several
datasets may each be labelled for one task: an image trains only the tasks it is labelled for, and
``task_ratio`` sets each task's share of a batch. Batches are deterministic, so a resumed run sees
the data it would have seen; checkpoints are written atomically; the loss history goes to a CSV and
TensorBoard. The run's config.json records the DatasetSpec, the datasets and the backbone, and export
copies them into the model's sidecar.

One step may run on several replicas under tf.distribute (``devices`` with the "mirrored" strategy on one
machine, or "multiworker" across machines from TF_CONFIG): each replica takes its slice of the global batch,
losses are normalised over the global batch (see losses.py), BatchNormalization takes global statistics, and
the weights, the learned task weights and the optimizers' slots are mirrored variables, so the step is the
one-device step of the same global batch. One device runs under the default strategy, as before.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from perception_core.datasets.simulator import SimulatorSource
from perception_core.datasets.spec import DatasetSpec
from perception_core.training.backbones import LEGACY_HEAD_BLOCK
from perception_core.training.data import TASK_LABELS, BatchSampler
from perception_core.training.loader import Prefetcher, combined_spec, training_frames
from perception_core.training.losses import TaskBalancer, batch_loss, task_losses
from perception_core.training.model import (
    BN_MOMENTUM,
    HEADS,
    build_model,
    copy_matching_weights,
    synchronize_batch_norm,
)
from perception_core.training.onnx_weights import load_onnx_weights

TASK_VARIANTS = {"multitask": "multitask", "seg": "seg_only", "det": "det_only"}
BALANCE_LR = 1e-2  # Adam moves a variable ~lr per step: the task weights must track losses within ~100 steps
HISTORY_FIELDS = ("step", "total", "seg", "det", "heatmap", "wh", "offset", "w_seg", "w_det", "lr", "sec_per_step")
MAX_WARMUP_STEPS = 200  # linear warm-up to the peak rate while BatchNorm statistics and Adam's moments settle
WARMUP_PART = 10  # the warm-up takes at most 1/WARMUP_PART of the run
WARMUP_START = 0.05  # the warm-up starts at this fraction of the peak rate
FINAL_LR = 0.02  # the cosine decay ends at this fraction of the peak rate: the last steps still learn
AUGMENTATION = "crop+hflip"  # what BatchSampler does, recorded in the run's settings
PROGRESS_INTERVAL_S = 5  # the progress bar redraws at most this often (short logs under CI)
LEGACY_DET_STRIDE = 8  # runs saved before the stride-4 head carry no det_stride in their config: theirs was 8
BACKBONE_WEIGHTS_FILE = "backbone.weights.h5"  # a run's backbone, for --backbone-weights of the next run
STRATEGIES = ("mirrored", "multiworker")


class StrategyRefused(ValueError):
    """A distribution of the training step this machine or command cannot have; the message says what to do."""


@functools.cache
def distribution_strategy(kind="mirrored", devices=1):
    """The tf.distribute strategy of a run: TensorFlow's default (one device, nothing distributed) for one
    mirrored device, MirroredStrategy over ``devices`` local devices, or MultiWorkerMirroredStrategy over the
    cluster TF_CONFIG describes (every local GPU of each worker, else its CPU).

    Call it before TensorFlow starts its runtime: logical CPU devices can only be made then, and
    MultiWorkerMirroredStrategy must be created first. A process keeps one strategy per (kind, devices): TensorFlow
    numbers collective operations per strategy object, and a second one over the same devices reuses the numbers,
    so a later run's step failed with "Shape mismatch in the collective instance".
    """
    if kind not in STRATEGIES:
        raise StrategyRefused(f"strategy must be one of {STRATEGIES}, got {kind!r}")
    if devices < 1:
        raise StrategyRefused(f"--devices must be at least 1, got {devices}")
    if kind == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise StrategyRefused("--strategy multiworker reads the cluster from the TF_CONFIG environment variable, "
                                  "which is not set: on each machine set TF_CONFIG (the same cluster, its own task) "
                                  "and run the same command")
        if devices != 1:
            raise StrategyRefused("--devices is for --strategy mirrored: multiworker uses every GPU of each worker "
                                  "(choose them with CUDA_VISIBLE_DEVICES), or its CPU")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if devices == 1:
        return tf.distribute.get_strategy()
    return tf.distribute.MirroredStrategy(_local_devices(devices))


def _local_devices(count):
    """Names of ``count`` local devices: GPUs where there are any, else logical CPU devices split from the CPU."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if len(gpus) < count:
            raise StrategyRefused(f"--devices {count}: this machine has {len(gpus)} GPU(s)")
        return [f"/device:GPU:{i}" for i in range(count)]
    try:
        tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                                   [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:  # the runtime already started (e.g. in a test process): its CPU devices are what they are
        pass
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) < count:
        raise StrategyRefused(f"--devices {count}: TensorFlow already runs in this process with {len(cpus)} CPU "
                              f"device(s), and logical CPU devices can only be made before it starts: train in a "
                              f"fresh process")
    return [device.name for device in cpus[:count]]


def _save_checkpoint(ckpt, model, optimizers, balancer, step):
    """Weights + optimizer slots + step, written then renamed so a kill never leaves half a checkpoint."""
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_weights(tmp / "model.weights.h5")
    np.savez(tmp / "optimizer.npz", *[v.numpy() for optimizer, _ in optimizers for v in optimizer.variables])
    np.savez(tmp / "balancer.npz", *[v.numpy() for v in balancer.weights])
    (tmp / "state.json").write_text(json.dumps({"step": step}))
    old = ckpt.with_name(ckpt.name + ".old")
    if ckpt.exists():
        ckpt.rename(old)
    tmp.rename(ckpt)
    if old.exists():
        for f in old.iterdir():
            f.unlink()
        old.rmdir()


def _load_checkpoint(ckpt, model, optimizers, balancer):
    model.load_weights(ckpt / "model.weights.h5")
    for optimizer, variables in optimizers:
        optimizer.build(variables)
    slots = [v for optimizer, _ in optimizers for v in optimizer.variables]
    for var, value in zip(slots, np.load(ckpt / "optimizer.npz").values(), strict=True):
        var.assign(value)
    for var, value in zip(balancer.weights, np.load(ckpt / "balancer.npz").values()):
        var.assign(value)
    return json.loads((ckpt / "state.json").read_text())["step"]


def train(task="multitask", **options):
    """Train one variant (see :class:`Trainer` for the options); returns the run directory."""
    return Trainer(task, **options).run()


class Trainer:
    """One training run of one variant; ``run()`` trains it and returns the run directory.

    ``source`` is a FrameSource or a list of them (default: the first ``frames`` frames of the
    simulator's training split at ``image_hw``); the heads are sized from their combined spec
    (:func:`~perception_core.training.loader.combined_spec`). Samples without a mask train no
    segmentation (ignore label), samples without detections train no detection (masked loss), and a
    head that no sample is labelled for is refused. ``task_ratio`` ({"seg": 1, "det": 1}) fills each
    batch's slots per task in that ratio from the frames labelled for it; None draws uniformly when
    every frame is labelled for every head, else in equal shares. ``workers`` threads build batches.
    ``backbone_weights``: "imagenet", a backbone ``.weights.h5`` or None/"none" (fresh).
    ``init_from`` (a run directory) warm-starts every layer whose name and shape match that run's
    weights; the rest (e.g. a new head) starts fresh. ``datasets`` are records of the datasets the
    sources were read from (YAML, sha256, counts), kept in the run's settings.
    ``devices`` and ``strategy`` distribute each step (see :func:`distribution_strategy`); ``batch`` is the global
    batch, split evenly across the replicas. With "multiworker" only the chief writes ``out``; the other workers
    write to a temporary directory that they delete, and when resuming every worker reads ``out``'s checkpoint.
    """

    def __init__(self, task="multitask", steps=3000, batch=16, out="runs/multitask", resume=False, seed=0,
                 image_hw=(384, 512), crop_hw=(192, 256), frames=5000, lr=2e-3, balance="uncertainty",
                 seg_weight=1.0, det_weight=1.0, checkpoint_every=250, log_every=10, threads=2, model_kwargs=None,
                 source=None, init_from=None, task_ratio=None, workers=2, backbone_weights=None, datasets=None,
                 devices=1, strategy="mirrored"):
        _use_threads(threads)
        self.strategy = distribution_strategy(strategy, devices)
        self.replicas = self.strategy.num_replicas_in_sync
        if batch % self.replicas:
            raise StrategyRefused(f"a global batch of {batch} does not split evenly across {self.replicas} replicas: "
                                  f"choose a --batch divisible by {self.replicas}")
        keras.utils.set_random_seed(seed)
        self.chief, self.run_dir = self.strategy.extended.should_checkpoint, Path(out)
        self.out = self.run_dir if self.chief else Path(tempfile.mkdtemp(prefix="train_worker_"))
        self.ckpt = self.out / "checkpoint"
        if self.chief and self.out.exists() and any(self.out.iterdir()) and not resume:
            raise FileExistsError(f"{self.out} exists: pass --resume to continue it or choose another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        self.variant = TASK_VARIANTS[task]
        self.heads = HEADS[self.variant]
        self.steps, self.checkpoint_every, self.log_every, self.workers = steps, checkpoint_every, log_every, workers
        sources, self.spec, frame_data = self._data(source, frames, tuple(image_hw))
        task_ratio = self._task_ratio(task_ratio, frame_data)
        with self.strategy.scope():  # every variable (weights, task weights, optimizer slots) mirrored on each replica
            self.model = build_model(self.variant, tuple(crop_hw) + (3,), self.spec,
                                     backbone_weights=backbone_weights, **(model_kwargs or {}))
            if self.replicas > 1:
                synchronize_batch_norm(self.model)
            self.balancer, self.schedule, self.optimizers = self._optimizers(lr, balance, seg_weight, det_weight)
        self.sampler = BatchSampler(frame_data, batch, crop_hw, self.spec.num_det_classes, self.model.det_stride,
                                    seed=seed, task_ratio=task_ratio)
        self.settings = {
            "task": task, "variant": self.variant, "steps": steps, "batch": batch, "seed": seed,
            "image_hw": list(image_hw), "crop_hw": list(crop_hw), "frames": len(frame_data), "lr": lr,
            "balance": balance, "balance_lr": BALANCE_LR, "seg_weight": seg_weight, "det_weight": det_weight,
            "bn_momentum": BN_MOMENTUM, "augmentation": AUGMENTATION, "model_kwargs": model_kwargs or {},
            "command": " ".join(["python -m perception_core"] + sys.argv[1:]), "params": int(self.model.count_params()),
            "source": " + ".join(s.name for s in sources), "dataset": self.spec.to_dict(),
            "backbone": self.model.backbone.arch, "backbone_weights": _weights_record(backbone_weights),
            "task_ratio": task_ratio, "workers": workers, "strategy": strategy, "devices": devices,
            "replicas": self.replicas, **({"datasets": list(datasets)} if datasets else {})}
        with self.strategy.scope():
            self.start = self._restore(self.run_dir / "checkpoint" if resume else None, init_from, tuple(crop_hw))
            for optimizer, group in self.optimizers:  # slots exist before tracing: the step is traced once, not twice
                optimizer.build(group)
        if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            self._check_workers_agree()
        self._write_config()

    # === Data ===
    def _data(self, source, frames, image_hw):
        """(sources, their combined spec, their frames at the network's input scale); refuses a head no sample
        is labelled for."""
        source = SimulatorSource("train", frames, image_hw) if source is None else source
        sources = list(source) if isinstance(source, (list, tuple)) else [source]
        spec = combined_spec([s.spec for s in sources])
        frame_data = training_frames(sources, image_hw, spec)
        for head in self.heads:
            if not frame_data.labelled_count(TASK_LABELS[head]):
                raise ValueError(f"{' + '.join(s.name for s in sources)} has no {TASK_LABELS[head]} labels: choose "
                                 f"a variant without the {head} head")
        return sources, spec, frame_data

    def _task_ratio(self, task_ratio, frame_data):
        """The ratio batches are drawn in: as given, else None (uniform) when every frame is labelled for every
        head, else equal shares (a small dataset labelled for one task is not drowned by a large one)."""
        if task_ratio is not None:
            unknown = set(task_ratio) - set(self.heads)
            if unknown or len(task_ratio) != len(self.heads):
                raise ValueError(f"task ratio {task_ratio} must name exactly the heads {list(self.heads)}")
            return {head: float(task_ratio[head]) for head in self.heads}
        if all(frame_data.labelled_count(TASK_LABELS[head]) == len(frame_data) for head in self.heads):
            return None
        return {head: 1.0 for head in self.heads}

    # === Optimizers and task balancing ===
    def _optimizers(self, lr, balance, seg_weight, det_weight):
        """(balancer, schedule, [(optimizer, variables)]): the weights follow a warm-up + cosine schedule;
        learned task weights, if any, their own fast Adam."""
        balancer = TaskBalancer(self.heads, mode=balance, weights={"seg": seg_weight, "det": det_weight})
        warmup = min(MAX_WARMUP_STEPS, self.steps // WARMUP_PART)
        schedule = keras.optimizers.schedules.CosineDecay(lr * WARMUP_START, max(1, self.steps - warmup),
                                                          alpha=FINAL_LR, warmup_target=lr, warmup_steps=warmup)
        optimizers = [(keras.optimizers.Adam(schedule), self.model.trainable_variables)]
        if balancer.trainable_weights:
            optimizers.append((keras.optimizers.Adam(BALANCE_LR), balancer.trainable_weights))
        return balancer, schedule, optimizers

    # === Checkpoint / resume / warm start ===
    def _restore(self, checkpoint, init_from, crop_hw):
        """The step to start at: ``checkpoint``'s when resuming from one that exists, else 0 (warm-started from
        ``init_from``)."""
        start = 0
        if checkpoint is not None and (checkpoint / "state.json").exists():
            start = _load_checkpoint(checkpoint, self.model, self.optimizers, self.balancer)
        elif init_from is not None and Path(init_from).suffix == ".onnx":
            copied, fresh = load_onnx_weights(init_from, self.model, self.sampler(0)["image"])
            print(f"warm start from {init_from}: {len(copied)} layers copied, fresh: {', '.join(fresh) or 'none'}")
        elif init_from is not None:
            copied, fresh = copy_matching_weights(load_trained(init_from, crop_hw)[0], self.model)
            print(f"warm start from {init_from}: {len(copied)} layers copied, fresh: {', '.join(fresh) or 'none'}")
        if init_from is not None:  # the source's own settings, so an exported model traces through both stages
            self.settings["init_from"] = _init_record(Path(init_from))
        return start

    def _check_workers_agree(self):
        """Refuses workers that would start at different steps: variables are only synced when created, so each
        worker must restore the same checkpoint itself."""
        starts = self.strategy.gather(self.strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant([self.start])), axis=0).numpy()
        if starts.min() != starts.max():
            raise StrategyRefused(f"the workers' replicas start at steps {starts.tolist()}: every worker must read the "
                                  f"same checkpoint (the run directory on a shared file system, or a copy of the "
                                  f"chief's at --out on each worker)")

    def _write_config(self):
        (self.out / "config.json").write_text(json.dumps({"model": self.model.get_config(), "settings": self.settings},
                                                         indent=1))

    # === Step ===
    def _compile_step(self):
        """One optimisation step as a tf.function on distributed data (:meth:`_distribute`): (total, task losses,
        detection parts, task weights) of the global batch."""
        model, heads, balancer, optimizers = self.model, self.heads, self.balancer, self.optimizers
        strategy = self.strategy
        variables = [v for _, group in optimizers for v in group]
        ignore_label = self.spec.ignore_label

        def replica_step(data):
            with tf.GradientTape() as tape:
                total, losses, parts = batch_loss(model, balancer, data, heads, ignore_label)
            grads = iter(tape.gradient(total, variables))
            for optimizer, group in optimizers:  # Keras sums the replicas' gradients before it applies them
                optimizer.apply_gradients([(next(grads), v) for v in group])
            return total, losses, parts

        @tf.function(jit_compile=False, reduce_retracing=True)
        def train_step(data):
            results = strategy.run(replica_step, args=(data,))
            # each replica's losses are its part of the global batch's (global normalisers): they add up
            total, losses, parts = tf.nest.map_structure(
                lambda value: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None), results)
            return total, losses, parts, balancer.weights_now()

        return train_step

    def _distribute(self, batch):
        """A global batch (numpy dict) as per-replica tensors: replica r takes rows [r*B/N, (r+1)*B/N)."""
        rows = len(batch["image"]) // self.replicas

        def replica_rows(context):
            first = context.replica_id_in_sync_group * rows
            return {k: tf.constant(v[first:first + rows]) for k, v in batch.items()}

        return self.strategy.experimental_distribute_values_from_function(replica_rows)

    # === The loop ===
    def run(self):
        train_step = self._compile_step()
        log = RunLog(self.out, fresh=self.start == 0)
        loader = Prefetcher(self.sampler, self.start, self.steps, self.workers)  # batches built while TF runs
        data = loader.get(self.start) if self.start < self.steps else None
        loader.waits, loader.wait_s = 0, 0.0  # the first batch is always waited for: count the steps after it
        if self.start == 0 and self.balancer.trainable_weights:  # learned weights only (uncertainty, two tasks)
            outputs = self.model(tf.constant(data["image"]), training=False)
            self.balancer.start_at(task_losses(outputs, data, self.heads, self.spec.ignore_label)[0])
        tick, t_start = time.perf_counter(), time.perf_counter()
        bar = tqdm(range(self.start, self.steps), initial=self.start, total=self.steps, desc=f"train {self.variant}",
                   mininterval=PROGRESS_INTERVAL_S)
        for step in bar:
            if step > self.start:
                data = loader.get(step)
            total, losses, parts, weights = train_step(self._distribute(data))
            done = step + 1
            if step == self.start:
                t_first = time.perf_counter()  # throughput counts from here: the first step also traces the graph
            if done % self.log_every == 0 or done == self.steps:
                now = time.perf_counter()
                row = {"step": done, "total": float(total), "lr": float(self.schedule(done)),
                       "sec_per_step": (now - tick) / (done - max(self.start, done - self.log_every))}
                tick = now
                row.update({k: float(v) for k, v in {**losses, **parts}.items()})
                row.update({f"w_{k}": float(v) for k, v in weights.items()})
                log.write(row)
                bar.set_postfix(loss=f"{row['total']:.3f}", **{k: f"{float(v):.3f}" for k, v in losses.items()},
                                img_s=f"{self.sampler.batch_size / row['sec_per_step']:.1f}",
                                waits=loader.waits)
            if done % self.checkpoint_every == 0 or done == self.steps:
                _save_checkpoint(self.ckpt, self.model, self.optimizers, self.balancer, done)
        loader.close()
        log.close()
        end = time.perf_counter()
        seconds = end - t_start
        after_first = max(0, self.steps - self.start - 1)
        images_per_s = self.sampler.batch_size * after_first / max(end - t_first, 1e-9) if after_first else 0.0
        print(f"data: {loader.waits} of {after_first} steps after the first waited for their batch "
              f"({loader.wait_s:.1f} s of {seconds:.1f} s); {images_per_s:.1f} images/s after the first step")
        self.model.backbone.save_weights(self.out / BACKBONE_WEIGHTS_FILE)
        self.settings["train_seconds_this_session"] = round(seconds, 1)
        self.settings["train_seconds_total"] = round(_logged_seconds(self.out / "history.csv"), 1)
        self.settings["data"] = {"steps_after_first": after_first, "waits": loader.waits,
                                 "wait_seconds": round(loader.wait_s, 2), "images_per_second": round(images_per_s, 1)}
        self._write_config()
        if not self.chief:  # a worker's copy of the run: the chief wrote the real one
            shutil.rmtree(self.out)
        return self.run_dir


class RunLog:
    """The loss history: history.csv (appended across resumed sessions) and TensorBoard scalars."""

    def __init__(self, out, fresh):
        self.writer = tf.summary.create_file_writer(str(out / "tb"))
        self.file = (out / "history.csv").open("a", newline="")
        self.rows = csv.DictWriter(self.file, HISTORY_FIELDS)
        if fresh:
            self.file.truncate(0)
            self.rows.writeheader()

    def write(self, row):
        self.rows.writerow(row)
        self.file.flush()
        with self.writer.as_default(step=row["step"]):
            for k, v in row.items():
                if k != "step":
                    tf.summary.scalar(k, v)

    def close(self):
        self.file.close()
        self.writer.close()


def _weights_record(weights):
    """What a run records about its backbone's starting weights: none, imagenet, or a file and its sha256."""
    if weights in (None, "none", "imagenet"):
        return {"source": weights or "none"}
    return {"source": str(Path(weights).resolve()), "sha256": hashlib.sha256(Path(weights).read_bytes()).hexdigest()}


def _init_record(init_from: Path) -> dict:
    """What a warm start came from: a run's settings, or an exported model's file hash and its sidecar's training."""
    keys = ("command", "steps", "seed", "image_hw", "crop_hw", "train_seconds_total", "init_from")
    if init_from.suffix == ".onnx":
        sidecar = init_from.with_name(init_from.name + ".json")
        training = json.loads(sidecar.read_text()).get("training", {}) if sidecar.exists() else {}
        return {"model": str(init_from), "sha256": hashlib.sha256(init_from.read_bytes()).hexdigest(),
                **{k: training.get(k) for k in keys}}
    source = json.loads((init_from / "config.json").read_text())["settings"]
    return {"run": str(init_from), **{k: source.get(k) for k in keys[:-1]}}


def _use_threads(threads):
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TF already running in this process (tests): keep its thread pools
        pass


def _logged_seconds(history_csv):
    """Training time summed from the logged seconds per step, across resumed sessions."""
    seconds, last = 0.0, 0
    with open(history_csv, newline="") as f:
        rows = {int(r["step"]): float(r["sec_per_step"]) for r in csv.DictReader(f)}
    for step in sorted(rows):
        seconds += rows[step] * (step - last)
        last = step
    return seconds


def load_trained(run_dir, image_hw=None):
    """(model at ``image_hw`` or the run's inference size, settings) from a run directory or its checkpoint.

    Runs saved before runs recorded their label set trained on the simulator split, the only source then.
    """
    run_dir = Path(run_dir)
    if run_dir.name == "checkpoint":
        run_dir = run_dir.parent
    config = json.loads((run_dir / "config.json").read_text())
    settings = config["settings"]
    if (run_dir / "history.csv").exists():
        settings["train_seconds_total"] = round(_logged_seconds(run_dir / "history.csv"), 1)
    hw = tuple(image_hw or settings["image_hw"])
    spec = DatasetSpec.from_dict(settings["dataset"]) if "dataset" in settings else SimulatorSource.spec
    kwargs = {"det_stride": config["model"].get("det_stride", LEGACY_DET_STRIDE),
              "head_block": config["model"].get("head_block", LEGACY_HEAD_BLOCK), **settings.get("model_kwargs", {})}
    model = build_model(settings["variant"], hw + (3,), spec, **kwargs)
    model.load_weights(run_dir / "checkpoint" / "model.weights.h5")
    return model, settings

