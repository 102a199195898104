"""Stop signals (SIGINT, SIGTERM) are noted, never raised as KeyboardInterrupt.

A terminal Ctrl-C under ``ros2 launch`` or ``ros2 run`` reaches every process of the group, and
the launcher then forwards one more: a KeyboardInterrupt raised wherever the node happens to be
(importing, in ``destroy_node``) would end it with a traceback. Standard library only, so the
console-script entry points can install the handler before a node's heavy imports.
"""

from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
requested: list[int] = []  # the stop signals received so far


def _note(signum, frame) -> None:
    requested.append(signum)


def handle_stop_signals() -> None:
    """Note stop signals from now on (rclpy's own handler, installed later, chains to this one)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _note)


def ignore_stop_signals() -> None:
    """Once the node stops: Python restores SIG_DFL for its own handlers at exit, but leaves SIG_IGN."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
