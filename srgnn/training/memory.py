"""Keep freed memory in the process during training (glibc's allocator settings).

A training step allocates and frees the same few large buffers every step: at a 43k-item
catalogue and batch 100, each ``(B, N)`` score, probability and gradient tensor is 17 MB.
With glibc's default, adaptive settings, freed blocks of that size go back to the kernel
(``munmap``, or a trim of the heap top) and the next step faults them in again as fresh zeroed
pages, thousands of page faults a step and a large share of a training's CPU time spent in
the kernel (the README has the measurement). :func:`retain_freed_memory` fixes the two
thresholds so that blocks up to 32 MiB come from the heap and up to 512 MiB of free heap is
kept for reuse; the process then stops faulting after its first steps. Peak memory is unchanged
(the same buffers are reused); memory freed after a peak stays with the process until it ends.

The same effect is what the PyTorch CPU tuning guides get from jemalloc or tcmalloc; this needs
no preloaded library. It only acts on Linux with glibc, and not when the user set glibc's own
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment variables, or
``SRGNN_RETAIN_FREED_MEMORY=0``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

__all__ = ["retain_freed_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

logger = logging.getLogger(__name__)

# mallopt parameter numbers (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 512 * 1024 * 1024

_applied = False


def retain_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for a training process (once per process).

    Returns:
        True if the settings are in force (now or from an earlier call), False where they do
        not apply (not glibc, switched off, or the user's own ``MALLOC_*`` settings).
    """
    global _applied
    if _applied:
        return True
    from srgnn.config import Runtime

    if not Runtime.from_env().retain_freed_memory:
        return False
    if any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        logger.debug("mallopt refused the thresholds; keeping the allocator's defaults")
        return False
    _applied = True
    return True
