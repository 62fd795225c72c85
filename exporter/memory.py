"""Giving memory back after a connection flood.

Thousands of connections held at once (a flood of slow or idle clients, refused and
closed within seconds) leave the process's allocators holding what they used: freed
Python objects stay in pymalloc's arenas and glibc's heap, so the resident size stays at
the flood's peak. `FloodTrim` watches the open connections once a second; when they fall
to a quarter of a peak of at least `threshold`, it runs the garbage collector and asks
glibc to return free pages to the kernel (`malloc_trim`), once per flood.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None elsewhere (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class FloodTrim:
    """See the module doc; `observe` is called with the number of open connections."""

    def __init__(self, threshold: int = 1000, trim: Callable[[int], int] | None = None) -> None:
        self.threshold = threshold
        self._trim = trim if trim is not None else _malloc_trim()
        self.peak = 0
        self.trims = 0

    def observe(self, connections: int) -> bool:
        """True when this call trimmed."""
        self.peak = max(self.peak, connections)
        if self.peak < self.threshold or connections > self.peak // 4:
            return False
        peak, self.peak = self.peak, 0
        gc.collect()
        if self._trim is not None:
            self._trim(0)
        self.trims += 1
        log.info("connections back to %d from a peak of %d: memory trimmed", connections, peak)
        return True
