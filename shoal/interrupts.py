"""Stopping on Ctrl-C and SIGTERM without losing work.

* :class:`Terminated`: what SIGTERM raises under :func:`terminate_as_interrupt`. It is a ``KeyboardInterrupt``, so
  every place that cleans up after Ctrl-C (closing workers, saving a last checkpoint) does the same for it.
* :func:`terminate_as_interrupt`: the command line's SIGTERM handler (a process manager, ``kill``, a cluster
  scheduler's pre-emption notice), installed for the length of a command and restored afterwards.
* :func:`deferred_signals`: a section that Ctrl-C or SIGTERM must not cut in half (a learning update and the
  checkpoint written after it). A signal that arrives inside is delivered when the section ends; the same signal
  a second time is delivered at once, so a stuck section can still be stopped.

Signal handlers can only be set from the main thread; in any other thread these are no-ops (the signal then goes
to the main thread as usual).

Imports nothing heavy: the command line uses it before torch is loaded.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["Terminated", "deferred_signals", "signal_name", "terminate_as_interrupt"]


class Terminated(KeyboardInterrupt):
    """SIGTERM received (raised by the handler of :func:`terminate_as_interrupt`)."""

    signal_name = "SIGTERM"

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signal_name = signal.Signals(signum).name


def signal_name(exc: BaseException) -> str:
    """``"SIGTERM"`` for :class:`Terminated`, ``"SIGINT"`` for any other ``KeyboardInterrupt``."""
    return getattr(exc, "signal_name", "SIGINT")


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (instead of killing the process
    outright); the previous handler is restored afterwards.

    Installed even over another Python handler: ``ray.init`` sets one that calls ``sys.exit``, which would skip
    the last checkpoint and the command line's JSON line.
    """
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def deferred_signals(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold ``signums`` until the block ends, then deliver them to the handlers that were in place before.

    Delivery goes through ``signal.raise_signal``, so what happens is exactly what would have happened without
    the block, only later: ``KeyboardInterrupt`` for Ctrl-C, :class:`Terminated` under
    :func:`terminate_as_interrupt`, the default action (the process ends) for an unhandled SIGTERM. A signal
    that is ignored, or handled outside Python, is left alone. A signal received a second time inside the block
    is delivered at once (a second Ctrl-C stops a section that seems stuck).
    """
    if not _main_thread():
        yield
        return
    pending: list[int] = []
    previous: dict[int, Any] = {}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        previous.clear()

    def hold(signum: int, frame: FrameType | None) -> None:
        if signum not in pending:
            pending.append(signum)
            return
        pending.clear()  # delivered now, not again when the block ends
        restore()
        signal.raise_signal(signum)

    for signum in signums:
        handler = signal.getsignal(signum)
        if handler is signal.SIG_IGN or handler is None:
            continue
        previous[signum] = handler
        signal.signal(signum, hold)
    try:
        yield
    finally:
        restore()
        held, pending[:] = list(pending), []
        for signum in held:
            signal.raise_signal(signum)
