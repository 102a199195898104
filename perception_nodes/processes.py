"""Node processes for the demo, the benchmark and the tests: start, read their output, stop like Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional, Union


class NodeProcess:
    """``python -m module --ros-args [--params-file F] -p name:=value ... [-r __ns:=NS]`` in its own process.

    ``params_file`` is loaded first (as the launch files load config/*.param.yaml), so the
    "name:=value" ``params`` override it. Output is always read while the node runs (a full pipe
    would block it) and kept in ``output``; with ``echo`` each line is also printed with that
    prefix. ``process_group``: 0 leads a new group, a pid joins that group (as launch's children).
    """

    def __init__(self, module: str, *params: str, params_file: Union[str, Path, None] = None, namespace: str = "",
                 env: Optional[Mapping[str, str]] = None, process_group: Optional[int] = None,
                 echo: Optional[str] = None) -> None:
        args = ["--params-file", str(params_file)] if params_file is not None else []
        args += [a for p in params for a in ("-p", p)]
        if namespace:
            args += ["-r", f"__ns:={namespace}"]
        self.cmd = [sys.executable, "-m", module, "--ros-args", *args]
        self.env = None if env is None else dict(env)
        self.process_group, self.echo = process_group, echo
        self.process: Optional[subprocess.Popen] = None
        self._lines: list[str] = []
        self._reader: Optional[threading.Thread] = None

    @classmethod
    def of_command(cls, cmd: Sequence[str], env: Optional[Mapping[str, str]] = None, **options) -> NodeProcess:
        """A command line built elsewhere (e.g. what a launch file would start)."""
        process = cls("", env=env, **options)
        process.cmd = list(cmd)
        return process

    @property
    def output(self) -> str:
        return "".join(self._lines)

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> Optional[int]:
        return self.process.poll()

    def start(self) -> NodeProcess:
        group = self.process_group
        self.process = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env=self.env,
                                        preexec_fn=None if group is None else lambda: os.setpgid(0, group))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.append(line)
            if self.echo is not None:
                print(f"[{self.echo:>10}] {line.rstrip()}", flush=True)

    def interrupt(self) -> None:
        """SIGINT, as Ctrl-C sends it, if still running."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def wait(self, timeout: float = 15.0) -> int:
        """The exit status; killed if it has not exited within ``timeout`` seconds."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5.0)
        return self.process.returncode

    def stop(self, timeout: float = 15.0) -> int:
        """SIGINT, then :meth:`wait`."""
        self.interrupt()
        return self.wait(timeout)

    def run_to_exit(self, timeout: float = 60.0) -> tuple[int, str]:
        """For nodes expected to exit on their own (bad configuration): (status, output)."""
        self.start()
        return self.wait(timeout), self.output

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_nodes(processes: Mapping[str, NodeProcess], timeout: float = 15.0) -> list[str]:
    """SIGINT every process still running, wait, and list the ones that did not exit with status 0."""
    for process in processes.values():
        process.interrupt()
    return [f"{name} exited with status {code}" for name, process in processes.items()
            if (code := process.wait(timeout)) != 0]
