"""Training loop: deterministic batches, checkpoint/resume, TensorBoard, a CSV loss history."""

from __future__ import annotations

import csv
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

TASK_VARIANTS = {"multitask": "multitask", "seg": "seg_only", "det": "det_only"}
BALANCE_LR = 1e-2  # Adam moves a variable ~lr per step: the task weights must track losses within ~100 steps
HISTORY_FIELDS = ("step", "total", "seg", "det", "heatmap", "wh", "offset", "w_seg", "w_det", "lr", "sec_per_step")


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


def train(task="multitask", steps=3000, batch=16, out="runs/multitask", resume=False, seed=0,
          image_hw=(384, 512), crop_hw=(192, 256), frames=5000, lr=2e-3, balance="uncertainty",
          seg_weight=1.0, det_weight=1.0, checkpoint_every=250, log_every=10, threads=2, model_kwargs=None,
          frame_cache=None, init_from=None):
    """Train one variant; returns the run directory. ``frame_cache`` lets tests skip the simulator.

    ``init_from`` (a run directory) warm-starts every layer whose name and shape match that run's
    weights; the rest (e.g. a new head) starts fresh. The schedule still runs over ``steps``.
    """
    import keras
    import tensorflow as tf

    from perception_core.datasets.simulator import simulator_frames
    from perception_core.training.data import BatchSampler
    from perception_core.training.losses import TaskBalancer, task_losses
    from perception_core.training.model import HEADS, build_model, copy_matching_weights
    from perception_core.types import DET_CLASSES

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TF already running in this process (tests): keep its thread pools
        pass
    keras.utils.set_random_seed(seed)
    out = Path(out)
    ckpt = out / "checkpoint"
    if out.exists() and any(out.iterdir()) and not resume:
        raise FileExistsError(f"{out} exists: pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)

    variant = TASK_VARIANTS[task]
    heads = HEADS[variant]
    model = build_model(variant, tuple(crop_hw) + (3,), **(model_kwargs or {}))
    if frame_cache is None:
        from perception_core.sim import TRAIN_SEED
        frame_cache = simulator_frames(TRAIN_SEED, frames, tuple(image_hw))
    sampler = BatchSampler(frame_cache, batch, crop_hw, len(DET_CLASSES), seed=seed, stride=model.det_stride)
    balancer = TaskBalancer(heads, mode=balance, weights={"seg": seg_weight, "det": det_weight})
    warmup = min(200, steps // 10)
    schedule = keras.optimizers.schedules.CosineDecay(lr * 0.05, max(1, steps - warmup), alpha=0.02,
                                                      warmup_target=lr, warmup_steps=warmup)
    optimizers = [(keras.optimizers.Adam(schedule), model.trainable_variables)]
    if balancer.trainable_weights:
        optimizers.append((keras.optimizers.Adam(BALANCE_LR), balancer.trainable_weights))
    variables = [v for _, group in optimizers for v in group]

    settings = {"task": task, "variant": variant, "steps": steps, "batch": batch, "seed": seed,
                "image_hw": list(image_hw), "crop_hw": list(crop_hw), "frames": len(frame_cache), "lr": lr,
                "balance": balance, "balance_lr": BALANCE_LR, "seg_weight": seg_weight, "det_weight": det_weight,
                "bn_momentum": 0.9, "augmentation": "crop+hflip",
                "model_kwargs": model_kwargs or {}, "command": " ".join(["python -m perception_core"] + sys.argv[1:]),
                "params": int(model.count_params())}
    start = 0
    if resume and (ckpt / "state.json").exists():
        start = _load_checkpoint(ckpt, model, optimizers, balancer)
    elif init_from is not None:
        copied, fresh = copy_matching_weights(load_trained(init_from, crop_hw)[0], model)
        print(f"warm start from {init_from}: {len(copied)} layers copied, fresh: {', '.join(fresh) or 'none'}")
    if init_from is not None:  # the source run's own settings, so an exported model traces through both stages
        source = json.loads((Path(init_from) / "config.json").read_text())["settings"]
        settings["init_from"] = {"run": str(init_from), **{k: source.get(k) for k in
                                 ("command", "steps", "seed", "image_hw", "crop_hw", "train_seconds_total")}}
    for optimizer, group in optimizers:  # slots exist before tracing: train_step is traced once, not twice
        optimizer.build(group)
    (out / "config.json").write_text(json.dumps({"model": model.get_config(), "settings": settings}, indent=1))

    @tf.function(jit_compile=False, reduce_retracing=True)
    def train_step(data):
        with tf.GradientTape() as tape:
            losses, parts = task_losses(model(data["image"], training=True), data, heads)
            total = balancer(losses)
        grads = iter(tape.gradient(total, variables))
        for optimizer, group in optimizers:
            optimizer.apply_gradients([(next(grads), v) for v in group])
        return total, losses, parts, balancer.weights_now()

    from tqdm import tqdm

    writer = tf.summary.create_file_writer(str(out / "tb"))
    history = (out / "history.csv").open("a", newline="")
    rows = csv.DictWriter(history, HISTORY_FIELDS)
    if start == 0:
        history.truncate(0)
        rows.writeheader()
    pool = ThreadPoolExecutor(1)  # the next batch is built while TF runs this one
    pending = pool.submit(sampler, start)
    if start == 0 and balancer.trainable_weights:  # learned weights only (uncertainty, two tasks)
        first = pending.result()
        balancer.start_at(task_losses(model(tf.constant(first["image"]), training=False), first, heads)[0])
    tick, t_start = time.perf_counter(), time.perf_counter()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=f"train {variant}", mininterval=5)
    for step in bar:
        data = pending.result()
        if step + 1 < steps:
            pending = pool.submit(sampler, step + 1)
        total, losses, parts, weights = train_step({k: tf.constant(v) for k, v in data.items()})
        done = step + 1
        if done % log_every == 0 or done == steps:
            now = time.perf_counter()
            row = {"step": done, "total": float(total), "lr": float(schedule(done)),
                   "sec_per_step": (now - tick) / (done - max(start, done - log_every))}
            tick = now
            row.update({k: float(v) for k, v in {**losses, **parts}.items()})
            row.update({f"w_{k}": float(v) for k, v in weights.items()})
            rows.writerow(row)
            history.flush()
            with writer.as_default(step=done):
                for k, v in row.items():
                    if k != "step":
                        tf.summary.scalar(k, v)
            bar.set_postfix(loss=f"{row['total']:.3f}", s_step=f"{row['sec_per_step']:.2f}")
        if done % checkpoint_every == 0 or done == steps:
            _save_checkpoint(ckpt, model, optimizers, balancer, done)
    pool.shutdown()
    history.close()
    settings["train_seconds_this_session"] = round(time.perf_counter() - t_start, 1)
    settings["train_seconds_total"] = round(_logged_seconds(out / "history.csv"), 1)
    (out / "config.json").write_text(json.dumps({"model": model.get_config(), "settings": settings}, indent=1))
    return out


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
    """(model at ``image_hw`` or the run's inference size, settings) from a run directory or its checkpoint."""
    from perception_core.training.model import build_model

    run_dir = Path(run_dir)
    if run_dir.name == "checkpoint":
        run_dir = run_dir.parent
    config = json.loads((run_dir / "config.json").read_text())
    settings = config["settings"]
    if (run_dir / "history.csv").exists():
        settings["train_seconds_total"] = round(_logged_seconds(run_dir / "history.csv"), 1)
    hw = tuple(image_hw or settings["image_hw"])
    model = build_model(settings["variant"], hw + (3,), **settings.get("model_kwargs", {}))
    model.load_weights(run_dir / "checkpoint" / "model.weights.h5")
    return model, settings

