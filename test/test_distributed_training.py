"""One training step on two replicas (tf.distribute) against the same step on one device.

Logical CPU devices exist only if they are made before TensorFlow starts its runtime, which this
pytest process may already have done, and MultiWorkerMirroredStrategy wants a process per worker,
so every step runs in a fresh Python process (STEP below): the real Trainer trains one step and
saves, per variable, its value on every local replica: the weights, BatchNormalization's moving
statistics, the learned task weights and Adam's first moments (1 - beta_1 times the gradient the
step applied, after one step).

The step starts from the bundled model's trained weights (the ONNX warm start). At a random
initialisation the backward pass through ~50 BatchNormalization layers amplifies float rounding so
much that switching BN's variance formula on ONE device (tf.nn.moments or Keras's synchronized
E[x^2] - E[x]^2) moves the stem's gradients by 15-29 % (trained weights: about 1 %); no float
tolerance would mean anything there.
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("tensorflow is not installed", allow_module_level=True)

from perception_core.datasets.simulator import SimulatorSource  # noqa: E402
from perception_core.resources import package_file  # noqa: E402

# One step of the real Trainer, then every variable's value on every local replica, for the test to compare.
STEP = r"""
import json, sys
import numpy as np
from perception_core.datasets.simulator import SimulatorSource
from perception_core.training.train import BALANCE_LR, StrategyRefused, Trainer

config = json.loads(sys.argv[1])
hw = tuple(config["hw"])
options = dict(steps=1, out=config["out"], image_hw=hw, crop_hw=hw, lr=config["lr"], log_every=1, checkpoint_every=1,
               init_from=config["init_from"], source=SimulatorSource("train", config["frames"], hw),
               devices=config["devices"], strategy=config["strategy"], threads=config["threads"])
if config.get("uneven_batch"):
    try:
        Trainer("multitask", batch=config["uneven_batch"], **options)
    except StrategyRefused as err:
        print(json.dumps({"refused": str(err)}))
trainer = Trainer("multitask", batch=config["batch"], **options)
trainer.run()
on_replicas = trainer.strategy.experimental_local_results
groups = {"variable": [v for _, group in trainer.optimizers for v in group],
          "moment": [m for optimizer, _ in trainer.optimizers for m in optimizer._momentums],  # Keras's, in order
          "moving": trainer.model.non_trainable_variables, "task": trainer.balancer.weights}
values = {f"{group}/{i}": np.stack([r.numpy() for r in on_replicas(v.value)])
          for group, variables in groups.items() for i, v in enumerate(variables)}
# each variable's Adam: its first step's rate, beta_1, beta_2, epsilon
adam = [(float(trainer.schedule(0)) if i == 0 else BALANCE_LR, optimizer.beta_1, optimizer.beta_2, optimizer.epsilon)
        for i, (optimizer, group) in enumerate(trainer.optimizers) for _ in group]
np.savez(config["dump"], adam=np.array(adam), **values)
print(json.dumps({"chief": trainer.chief, "wrote": str(trainer.out), "replicas": trainer.replicas}))
"""
HW, FRAMES = (96, 128), 16
# threads=1: four processes share two cores
RUN = {"hw": HW, "frames": FRAMES, "batch": 8, "lr": 5e-3, "threads": 1,
       "init_from": str(package_file("models", "multitask.onnx"))}
STEP_TIMEOUT_S = 600
# Tolerances, with what two replicas gave against one device (same sums split in two, another BN variance formula):
LOSS_RTOL = 1e-5  # the step's logged losses and task weights; seen 2e-6
GRAD_RTOL = 5e-3  # |gradient - one-device gradient| / |one-device gradient| over all variables; seen 7e-4
VARIABLE_GRAD_RTOL = 0.05  # the same per variable; seen 1e-2 in the backbone (float error grows layer by layer back)
ZERO_GRAD = 1e-5  # x the gradient's norm: a variable whose gradient is 0 in exact math (a BN beta before a BN)
WEIGHT_ATOL, WEIGHT_RTOL = 1e-6, 1e-5  # weights beyond what the gradient's difference explains, BN's statistics


def start_step(root, name, out=None, env=None, **config):
    """Popen of STEP in a fresh Python; its dump, output and (unless ``out``) run directory under root/name."""
    (root / name).mkdir(parents=True)
    config = {**RUN, "devices": 1, "strategy": "mirrored", "out": str(out or root / name / "run"),
              "dump": str(root / name / "dump.npz"), **config}
    log = (root / name / "log.txt").open("w")
    return subprocess.Popen([sys.executable, "-c", STEP, json.dumps(config)], stdout=log, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})


def free_ports(count):
    """``count`` distinct localhost ports nobody listens on (all held open while choosing, so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    """Every run started at once (tracing a step is mostly one core's work, so two cores share four runs): the
    one-device reference, two logical CPU devices, and two MultiWorkerMirroredStrategy workers on localhost
    ports with one run directory. ``steps(name)`` waits for a run: (dump, STEP's printed lines, the runs' root)."""
    root = tmp_path_factory.mktemp("steps")
    SimulatorSource("train", FRAMES, HW)  # the frame cache, made once here rather than by four processes at once
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    processes = {"one": start_step(root, "one"), "two": start_step(root, "two", devices=2, uneven_batch=7)}
    for index in range(2):
        (root / f"tmp{index}").mkdir()
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        processes[f"worker{index}"] = start_step(root, f"worker{index}", out=root / "cluster_run",
                                                 strategy="multiworker",
                                                 env={"TF_CONFIG": tf_config, "TMPDIR": str(root / f"tmp{index}")})

    def result(name):
        code = processes[name].wait(timeout=STEP_TIMEOUT_S)
        log = (root / name / "log.txt").read_text()
        assert code == 0, log[-4000:]
        printed = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        with np.load(root / name / "dump.npz") as dump:
            return {key: dump[key] for key in dump.files}, printed, root

    yield result
    for process in processes.values():
        if process.poll() is None:
            process.kill()


def losses(run_dir):
    row = np.genfromtxt(run_dir / "history.csv", delimiter=",", names=True)
    return {name: float(row[name]) for name in ("total", "seg", "det", "heatmap", "wh", "offset", "w_seg", "w_det")}


def numbered(dump, group):
    return [dump[f"{group}/{i}"] for i in range(sum(k.startswith(group + "/") for k in dump))]


def assert_replicas_identical(dump):
    """Mirrored variables: every replica holds the same value, to the bit."""
    for key, per_replica in dump.items():
        for replica in per_replica[1:] if "/" in key else ():  # "adam" holds rates, not a variable
            np.testing.assert_array_equal(replica, per_replica[0], err_msg=key)


def adam_first_step(gradient, rate, beta_2, epsilon):
    """How far Keras's Adam moves a weight on its first step: about rate * sign(gradient)."""
    return rate * gradient / (np.abs(gradient) + epsilon / np.sqrt(1 - beta_2))


def assert_same_step(dump, reference):
    """The distributed step's gradient, weights, learned task weights and BN statistics (replica 0) equal the
    one-device step's."""
    adam = reference["adam"]  # per variable: rate, beta_1, beta_2, epsilon
    grads = [m[0].astype(np.float64) / (1 - a[1]) for m, a in zip(numbered(reference, "moment"), adam, strict=True)]
    other = [m[0].astype(np.float64) / (1 - a[1]) for m, a in zip(numbered(dump, "moment"), adam, strict=True)]
    norm = np.sqrt(sum(np.sum(g * g) for g in grads))
    error = np.sqrt(sum(np.sum((o - g) ** 2) for o, g in zip(other, grads)))
    assert error <= GRAD_RTOL * norm, f"the step's gradient is off by {error / norm:.1e} of its norm"
    for i, (o, g) in enumerate(zip(other, grads)):
        assert np.linalg.norm(o - g) <= VARIABLE_GRAD_RTOL * np.linalg.norm(g) + ZERO_GRAD * norm, f"gradient {i}"
    ours, theirs = numbered(dump, "variable"), numbered(reference, "variable")
    for i, (o, g, (rate, _, beta_2, epsilon)) in enumerate(zip(other, grads, adam)):
        # the weights may differ by what Adam makes of the gradients' difference (a sign, where g is float noise)
        explained = np.abs(adam_first_step(o, rate, beta_2, epsilon) - adam_first_step(g, rate, beta_2, epsilon))
        np.testing.assert_array_less(np.abs(ours[i][0] - theirs[i][0]),
                                     WEIGHT_ATOL + WEIGHT_RTOL * np.abs(theirs[i][0]) + explained,
                                     err_msg=f"variable {i}")
    for i, (a, b) in enumerate(zip(numbered(dump, "moving"), numbered(reference, "moving"), strict=True)):
        np.testing.assert_allclose(a[0], b[0], rtol=WEIGHT_RTOL, atol=WEIGHT_ATOL, err_msg=f"moving statistic {i}")
    for a, b in zip(numbered(dump, "task"), numbered(reference, "task"), strict=True):
        assert float(a[0]) == pytest.approx(float(b[0]), rel=LOSS_RTOL, abs=WEIGHT_ATOL)


def test_two_devices_take_the_one_device_step(steps):
    reference, (one,), root = steps("one")
    dump, printed, _ = steps("two")
    assert one["replicas"] == 1 and printed[-1]["replicas"] == 2
    assert "global batch of 7 does not split evenly across 2 replicas" in printed[0]["refused"]
    assert_replicas_identical(dump)
    assert losses(root / "two" / "run") == pytest.approx(losses(root / "one" / "run"), rel=LOSS_RTOL)
    assert_same_step(dump, reference)


def test_a_two_device_run_loads_as_it_trained(steps):
    """The checkpoint written from mirrored variables holds what the replicas held (export loads runs this way)."""
    from perception_core.training.train import load_trained

    dump, _, root = steps("two")
    model, settings = load_trained(root / "two" / "run")
    assert settings["replicas"] == 2 and settings["devices"] == 2
    saved = [*model.trainable_variables, *model.non_trainable_variables]
    trained = numbered(dump, "variable")[:len(model.trainable_variables)] + numbered(dump, "moving")
    assert len(saved) == len(trained)
    for variable, per_replica in zip(saved, trained):
        np.testing.assert_array_equal(variable.numpy(), per_replica[0], err_msg=variable.path)


def test_two_workers_take_the_one_device_step_and_only_the_chief_writes(steps):
    reference, _, root = steps("one")
    (chief, (chief_said,), _), (other, (other_said,), _) = steps("worker0"), steps("worker1")
    assert chief_said == {"chief": True, "wrote": str(root / "cluster_run"), "replicas": 2}
    assert not other_said["chief"] and other_said["wrote"].startswith(str(root / "tmp1"))
    assert not any((root / "tmp1").iterdir()), "the other worker's temporary run directory is left behind"
    assert (root / "cluster_run" / "checkpoint" / "model.weights.h5").exists()
    for key in chief:  # each worker holds one replica: the two must hold the same values
        np.testing.assert_array_equal(other[key], chief[key], err_msg=key)
    assert losses(root / "cluster_run") == pytest.approx(losses(root / "one" / "run"), rel=LOSS_RTOL)
    assert_same_step(chief, reference)


@pytest.mark.parametrize("tf_config,argv,message", [
    (None, [], "reads the cluster from the TF_CONFIG environment variable, which is not set"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 0}}', ["--devices", "2"],
     "--devices is for --strategy mirrored"),
])
def test_multiworker_is_refused_without_a_cluster_or_with_devices(tmp_path, monkeypatch, capsys, tf_config, argv,
                                                                    message):
    from perception_core.__main__ import main

    monkeypatch.delenv("TF_CONFIG", raising=False)
    if tf_config:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    assert main(["train", "--task", "multitask", "--strategy", "multiworker", "--out", str(tmp_path / "run"),
                 *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
