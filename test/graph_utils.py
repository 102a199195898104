"""Helpers for tests that run real nodes in real processes: start, wait for matching, stop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rclpy.executors import SingleThreadedExecutor


class NodeProcess:
    """``python -m module --ros-args ...`` in its own process; stopped with SIGINT like Ctrl-C.

    ``params_file`` is loaded first (as the launch files load config/*.param.yaml), so the
    "name:=value" ``params`` override it.
    """

    def __init__(self, module: str, *params: str, params_file: str | Path | None = None) -> None:
        args = ["--params-file", str(params_file)] if params_file is not None else []
        args += [a for p in params for a in ("-p", p)]
        self.cmd = [sys.executable, "-m", module, "--ros-args", *args]
        self.process: subprocess.Popen | None = None
        self.output = ""

    def __enter__(self) -> NodeProcess:
        self.process = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return self

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.output, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.output, _ = self.process.communicate()
        return self.process.returncode

    def __exit__(self, *exc) -> None:
        self.stop()

    def run_to_exit(self, timeout: float = 60.0) -> tuple[int, str]:
        """For nodes expected to exit on their own (bad configuration)."""
        self.__enter__()
        self.output, _ = self.process.communicate(timeout=timeout)
        return self.process.returncode, self.output


def spin_until(executor: SingleThreadedExecutor, condition: Callable[[], bool], timeout: float) -> bool:
    """Spin until ``condition()`` holds or ``timeout`` seconds pass; never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        executor.spin_once(timeout_sec=0.05)
    return condition()
