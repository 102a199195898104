"""`make demo`: the synthetic camera and the latency monitor as separate processes.

Starts each executable with the local-graph environment (ros_env), streams the monitor's
summaries for ``--seconds`` after the first frame, then stops everything with SIGINT (the way
Ctrl-C would) and fails if a process crashed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from perception_nodes.ros_env import local_graph_env


def start(module: str, env: dict[str, str], *ros_args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", module, "--ros-args", "--log-level", "info", *ros_args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to stream after the first summary")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--rate", type=float, default=30.0)
    args = parser.parse_args(argv)

    env = {**os.environ, **local_graph_env()}
    print(f"[demo] ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, Fast DDS profile {env['FASTRTPS_DEFAULT_PROFILES_FILE']}")
    camera = start("perception_nodes.synthetic_camera_node", env, "-p", f"width:={args.width}",
                   "-p", f"height:={args.height}", "-p", f"rate:={args.rate}")
    monitor = start("perception_nodes.latency_monitor_node", env)
    processes = {"synthetic_camera": camera, "latency_monitor": monitor}
    deadline = None
    try:
        for line in monitor.stdout:
            print(line.rstrip())
            if "fps" in line and deadline is None:
                deadline = time.monotonic() + args.seconds
            if deadline is not None and time.monotonic() > deadline:
                break
            if camera.poll() is not None:
                print(camera.stdout.read())
                break
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        failed = []
        for name, process in processes.items():
            try:
                code = process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            if code != 0:
                failed.append(f"{name} exited with {code}")
    if deadline is None:
        failed.append("no frames reached the monitor")
    for problem in failed:
        print(f"[demo] FAILED: {problem}")
    print("[demo] done" if not failed else "")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
