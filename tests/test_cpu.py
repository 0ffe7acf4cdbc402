"""Threads on a shared machine (srgnn.cpu): the cores a process may use, the user's overrides,
and an OpenMP runtime that sleeps instead of spinning."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from srgnn import cpu


def run(code: str, env: dict[str, str] | None = None, affinity: set[int] | None = None) -> str:
    """``code`` in a fresh interpreter (optionally pinned to ``affinity``); its stdout."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "SRGNN_NUM_THREADS")}
    preexec = (lambda: os.sched_setaffinity(0, affinity)) if affinity else None
    done = subprocess.run([sys.executable, "-c", code], env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=120, preexec_fn=preexec)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_cgroup_quota_v2_and_v1(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpu.cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu.cgroup_cpu_limit(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu.cgroup_cpu_limit(v1) == 0.5
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu.cgroup_cpu_limit(v1) is None
    assert cpu.cgroup_cpu_limit(tmp_path / "nowhere") is None


def test_a_quota_caps_the_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(cpu, "cgroup_cpu_limit", lambda: 1.5)
    assert cpu.usable_cores() == 2  # 1.5 cores allow two threads, not four
    monkeypatch.setattr(cpu, "cgroup_cpu_limit", lambda: None)
    assert cpu.usable_cores() == 4


def test_thread_count_precedence(monkeypatch):
    monkeypatch.setattr(cpu, "usable_cores", lambda: 3)
    assert cpu.torch_threads(environ={}) == 3
    assert cpu.torch_threads(environ={"OMP_NUM_THREADS": "1"}) == 1  # explicit: respected
    assert cpu.torch_threads(environ={"OMP_NUM_THREADS": "4,2"}) == 4  # nesting levels
    assert cpu.torch_threads(environ={"OMP_NUM_THREADS": "lots"}) == 3  # not a count: ignored
    assert cpu.torch_threads(environ={"SRGNN_NUM_THREADS": "2", "OMP_NUM_THREADS": "1"}) == 2
    assert cpu.torch_threads(5, environ={"SRGNN_NUM_THREADS": "2"}) == 5  # the setting itself
    assert cpu.torch_threads(environ={}, default=1) == 1  # a Spark task: one core
    assert cpu.torch_threads(environ={"SRGNN_NUM_THREADS": "2"}, default=1) == 2


def test_threads_follow_the_affinity_of_the_process():
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores to pin a process to one")
    code = ("from srgnn.cpu import set_torch_threads; import torch; "
            "set_torch_threads(); print(torch.get_num_threads())")
    assert run(code, affinity={min(os.sched_getaffinity(0))}) == "1"
    assert run(code) == str(cpu.usable_cores())
    assert run(code, env={"OMP_NUM_THREADS": "1"}) == "1"


def test_importing_srgnn_makes_openmp_wait_passively_unless_told_otherwise():
    code = "import os, srgnn; print(os.environ.get('OMP_WAIT_POLICY'))"
    assert run(code) == cpu.WAIT_POLICY == "PASSIVE"
    assert run(code, env={"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
    # Spark's Python workers and other children inherit it.
    child = ("import os, subprocess, sys, srgnn; print(subprocess.run([sys.executable, '-c', "
             "'import os; print(os.environ.get(\"OMP_WAIT_POLICY\"))'], capture_output=True, "
             "text=True).stdout.strip())")
    assert run(child) == "PASSIVE"
