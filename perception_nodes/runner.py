"""The one ``main()`` body every node shares: startup errors as one line, clean shutdown.

Follows the ros2/demos Jazzy pattern (spin; KeyboardInterrupt and ExternalShutdownException
end quietly; destroy the node; ``try_shutdown``). A node whose constructor refuses its
parameters or its model exits with status 1 and a single error line instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
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

# Errors that mean "this configuration cannot run"; anything else is a bug and keeps its traceback.
STARTUP_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, FileNotFoundError, PermissionError, InvalidParameterTypeException,
    InvalidParameterValueException, ParameterUninitializedException, ParameterException,
)


def run_node(make_node: Callable[[], Node], args: Optional[Sequence[str]] = None) -> int:
    """Create the node, spin it until Ctrl-C or external shutdown; return the exit status."""
    rclpy.init(args=args)
    node = None
    try:
        try:
            node = make_node()
        except STARTUP_ERRORS as exc:
            print(f"[ERROR] {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise
        # Ctrl-C landed while the executor was taking a message: rclpy then raises from the take
        # (e.g. "Unable to convert call argument") although the node is simply stopping.
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
