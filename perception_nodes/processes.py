"""Starting and stopping node processes for the demo and the benchmark (Ctrl-C semantics)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Optional


def start_node(module: str, params: Sequence[str] = (), env: Optional[dict] = None,
               prefix: Optional[str] = None, namespace: str = "", params_file: str = "") -> subprocess.Popen:
    """``python -m module --ros-args [--params-file F] -p ...``; with ``prefix`` its output is echoed, else dropped.

    Explicit ``params`` come after the file, so they override it (as a launch file's <param> does).
    """
    cmd = [sys.executable, "-m", module, "--ros-args"]
    if params_file:
        cmd += ["--params-file", params_file]
    cmd += [a for p in params for a in ("-p", p)]
    if namespace:
        cmd += ["-r", f"__ns:={namespace}"]
    if prefix is None:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def echo() -> None:
        for line in process.stdout:
            print(f"[{prefix:>10}] {line.rstrip()}", flush=True)

    threading.Thread(target=echo, daemon=True).start()
    return process


def stop_nodes(processes: dict[str, subprocess.Popen], timeout: float = 15.0) -> list[str]:
    """SIGINT every process still running, wait, and list the ones that did not exit with status 0."""
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    failures = []
    for name, process in processes.items():
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        if code != 0:
            failures.append(f"{name} exited with status {code}")
    return failures
