"""The one ``main()`` body every node shares: startup errors as one line, clean shutdown.

Follows the ros2/demos Jazzy pattern (spin; ExternalShutdownException ends quietly; destroy the
node; ``try_shutdown``), hardened for how signals really arrive. A terminal Ctrl-C under
``ros2 launch`` or ``ros2 run`` sends SIGINT to the whole process group and the launcher then
forwards one more; with Python's default handler the second one raised KeyboardInterrupt inside
``destroy_node`` (a traceback, then "terminate called without an active exception" once rclpy's
signal thread was never joined). So SIGINT and SIGTERM get a Python handler that only notes the
request (perception_nodes.stop; the entry points install it before the node's imports): rclpy's
own handler, which chains to it, still shuts the context down and wakes the executor. Once the
node stops, both signals are ignored: a late one would otherwise meet the default action that
Python restores during interpreter exit and kill the process (status -2).

A node whose constructor refuses its parameters, its model or its ``--params-file`` exits with
status 1 and a single error line instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional

import rclpy
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterException,
    ParameterUninitializedException,
)
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from perception_nodes import stop

# Errors that mean "this configuration cannot run"; anything else is a bug and keeps its traceback.
STARTUP_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, FileNotFoundError, PermissionError, InvalidParameterTypeException,
    InvalidParameterValueException, ParameterUninitializedException, ParameterException,
)


def missing_params_files(args: Sequence[str]) -> list[str]:
    """``--params-file`` paths among the ROS arguments that are not files.

    rcl refuses them inside ``rclpy.init`` with a traceback; this says it in one line first.
    """
    missing, in_ros_args = [], False
    for index, arg in enumerate(args):
        if arg == "--ros-args":
            in_ros_args = True
        elif arg == "--":
            in_ros_args = False
        elif in_ros_args and arg == "--params-file" and index + 1 < len(args):
            path = Path(args[index + 1])
            if not path.is_file():
                missing.append(str(path))
    return missing


def run_node(make_node: Callable[[], Node], args: Optional[Sequence[str]] = None) -> int:
    """Create the node, spin it until Ctrl-C, SIGTERM or external shutdown; return the exit status."""
    argv = list(sys.argv if args is None else args)
    missing = missing_params_files(argv)
    if missing:
        print(f"[ERROR] parameter file not found: {', '.join(missing)}", file=sys.stderr)
        return 1
    stop.handle_stop_signals()  # before rclpy.init, so rclpy chains to it instead of raising
    rclpy.init(args=argv)
    node = None
    try:
        if stop.requested:  # stopped while starting up (the entry point noted it during the imports)
            return 0
        try:
            node = make_node()
        except STARTUP_ERRORS as exc:
            if not rclpy.ok():  # stopped while starting: not a configuration error
                return 0
            print(f"[ERROR] {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise
        # A stop landed while the executor was taking a message or the node was starting: rclpy
        # then raises from whatever it was doing (e.g. "context is invalid"), although the node is
        # simply stopping.
    finally:
        stop.ignore_stop_signals()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
