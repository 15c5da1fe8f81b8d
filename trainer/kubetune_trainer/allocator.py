"""Freed tensor memory goes back to the OS at once, so a step's peak is what the pod holds.

glibc serves a large allocation with its own mapping, returned to the OS on free, but each
such free raises the size threshold for that (up to 32 MiB). After the first step the
activations (a few MiB each) come from the heap instead, which fragments and keeps its
peak: measured on SmolLM2-135M LoRA, a 4 x 512 step then held 1.6 GB more than it used.
Pinning the threshold stops the drift; the cost is mapping fresh pages each step (a few
percent of a CPU step; bench/train_throughput.py measures both).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 256 * 1024  # allocations of at least this many bytes get their own mapping


def release_freed_memory(threshold: int = MMAP_THRESHOLD) -> bool:
    """Pins glibc's mmap threshold; False where the C library is not glibc (nothing changes)."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None or mallopt(M_MMAP_THRESHOLD, threshold) != 1:
        log.info("C library without glibc's mallopt: freed memory returns to the OS at its own pace")
        return False
    return True
