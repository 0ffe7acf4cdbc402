"""What this machine's CPU offers: native bfloat16 arithmetic and the cores this process may use.

Machines of one kind differ (some have AVX512-BF16 / AMX, some only AVX2), so the choices are
made at run time: ``precision="auto"`` becomes ``"bfloat16"`` only where the CPU multiplies it
natively (:func:`resolve_precision`), and the number of torch threads follows the cores the
process may run on (:func:`usable_cores`).
"""

from __future__ import annotations

import functools
import os

__all__ = ["native_bfloat16", "resolve_precision", "usable_cores"]


@functools.lru_cache(maxsize=1)
def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (Linux ``avx512_bf16`` or ``amx_bf16``)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return bool({"avx512_bf16", "amx_bf16"} & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return False


def resolve_precision(precision: str) -> str:
    """``"float32"`` or ``"bfloat16"``: ``"auto"`` resolved for this CPU."""
    if precision != "auto":
        return precision
    return "bfloat16" if native_bfloat16() else "float32"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
