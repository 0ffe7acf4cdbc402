"""What this machine's CPU offers, and how many threads torch should use on it.

Machines of one kind differ (some have AVX512-BF16 / AMX, some only AVX2), so the choices are
made at run time: ``precision="auto"`` becomes ``"bfloat16"`` only where the CPU multiplies it
natively (:func:`resolve_precision`).

Threads: an Airflow worker runs several tasks at once and local Spark shares the machine with
training, so the cores are usually shared. torch's thread count follows the cores this process
may use (:func:`usable_cores`: its CPU affinity and its cgroup's CPU quota), unless the user
says otherwise (:func:`torch_threads`: ``SRGNN_NUM_THREADS``, or an explicit
``OMP_NUM_THREADS``, which is then respected). And the OpenMP runtime under torch must not
spin while it waits: by default its threads busy-wait for a while after each parallel region,
which on a shared core takes the CPU from whoever else needs it (the other process, and
torch's own threads waiting for their turn). ``import srgnn`` therefore sets
``OMP_WAIT_POLICY=PASSIVE`` unless the environment already says something else; OpenMP reads
it once, when torch loads, and child processes (Spark's Python workers) inherit it.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

__all__ = ["native_bfloat16", "resolve_precision", "usable_cores", "cgroup_cpu_limit",
           "torch_threads", "set_torch_threads", "WAIT_POLICY"]

WAIT_POLICY = "PASSIVE"  # OMP_WAIT_POLICY set by ``import srgnn`` when unset


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


def cgroup_cpu_limit(root: str | Path = "/sys/fs/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in cores (``1.5`` = one and a half), or ``None``
    when there is none (cgroup v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us`` / ``cfs_period_us``)."""
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by its cgroup's quota (a
    quota of 1.5 cores allows 2 threads), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)


def torch_threads(requested: int = 0, environ=None, default: int | None = None) -> int:
    """The number of torch threads to use.

    In order: ``requested`` when positive (a setting such as ``TrainConfig.num_threads``);
    ``SRGNN_NUM_THREADS`` (:class:`srgnn.config.Runtime`); an explicit ``OMP_NUM_THREADS``
    (OpenMP's own variable, respected as OpenMP users expect); else ``default``, or
    :func:`usable_cores` without one.
    """
    from srgnn.config import Runtime

    environ = os.environ if environ is None else environ
    if requested > 0:
        return requested
    configured = Runtime.from_env(environ).num_threads
    if configured > 0:
        return configured
    value = environ.get("OMP_NUM_THREADS", "").strip()
    if value:
        try:
            threads = int(value.split(",")[0])  # OMP_NUM_THREADS may list nesting levels
        except ValueError:
            threads = 0  # not a count OpenMP understands either: ignore it
        if threads > 0:
            return threads
    return default if default else usable_cores()


def set_torch_threads(requested: int = 0, default: int | None = None) -> int:
    """Give torch :func:`torch_threads` threads (torch imported here); returns the count."""
    import torch

    threads = torch_threads(requested, default=default)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
