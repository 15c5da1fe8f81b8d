"""Stopping on SIGTERM at a step boundary, with a checkpoint.

Kubernetes sends SIGTERM before it kills a pod: preemption, a node drain, spec.suspend. The
trainer then finishes the optimizer step it is in, saves a checkpoint and exits 143 (as a
process killed by SIGTERM does), so the next attempt loses no steps and the operator
classifies the exit as an infrastructure failure.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

EXIT_TERMINATED = 128 + signal.SIGTERM


class Stopped(Exception):
    """Training stopped early on SIGTERM, after saving a checkpoint."""

    reason = "KilledBySignal"
    exit_code = EXIT_TERMINATED


class StopRequest:
    """Set by SIGTERM; read by the training loop between optimizer steps."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def installed(self) -> Iterator["StopRequest"]:
        """Catches SIGTERM while the block runs (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGTERM, lambda *_: setattr(self, "requested", True))
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)
