"""Stop signals (Ctrl-C, a batch system's SIGTERM) that are never lost: the handler raises at once, and a run checks
again between chunks, since Python drops an exception raised while a finaliser (``__del__``) runs."""

from __future__ import annotations

import signal
from types import FrameType

__all__ = ["install_handlers", "stop_if_signalled"]

_received: list[int] = []


def _stop(signum: int, _frame: FrameType | None) -> None:
    _received.append(signum)
    raise SystemExit(128 + signum)


def install_handlers() -> None:
    """Make SIGINT and SIGTERM leave like an interrupted run (outputs in progress discarded), exit status 128 + signal."""
    _received.clear()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop)


def stop_if_signalled() -> None:
    """Raise the stop of a signal received since ``install_handlers`` (again, if its first exception was dropped)."""
    if _received:
        raise SystemExit(128 + _received[0])
