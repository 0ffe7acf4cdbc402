"""What every benchmark shares: paths, measuring a child command, peak memory, the machine.

Benchmarks are scripts run as ``.venv/bin/python bench/bench_<name>.py``; Python puts ``bench/``
first on ``sys.path`` for them, so they import this module as a sibling::

    from common import DIGINETICA, machine, run_measured

* :data:`ROOT`, :data:`SHARED_DATA` (``../shared/data`` beside the repository) and
  :data:`DIGINETICA` (its ``diginetica`` folder: ``train_clicks.csv.gz``,
  ``score_clicks.csv.gz``, ``targets.csv.gz``);
* :func:`run_measured`: run a command in a child process, timing it and sampling the peak
  resident memory of its whole process tree (and of the Java processes in it: Spark's JVM);
* :func:`peak_rss_mib`: this process's own peak resident memory;
* :func:`machine`: one line saying what the figures were measured on;
* :func:`text_table`: a plain-text table, first column left-aligned, the others right-aligned.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ROOT", "SHARED_DATA", "DIGINETICA", "Measured", "run_measured", "peak_rss_mib",
           "machine", "text_table"]

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
DIGINETICA = SHARED_DATA / "diginetica"

GIB = 2**30


@dataclass(frozen=True)
class Measured:
    """A finished child command: wall time, peak memory of its process tree, exit code, output."""

    seconds: float
    peak_gib: float  # resident memory of the whole tree (driver, JVM, Python workers), at peak
    peak_jvm_gib: float  # resident memory of the tree's Java processes alone, at peak
    returncode: int
    output: str  # stdout and stderr together


def _tree_rss(parent) -> tuple[int, int]:
    """(bytes of the whole tree, bytes of its Java processes) resident now."""
    import psutil

    total = jvm = 0
    for process in [parent] + parent.children(recursive=True):
        try:
            rss = process.memory_info().rss
            is_java = "java" in (process.name() or "")
        except psutil.Error:  # ended between listing and reading
            continue
        total += rss
        jvm += rss if is_java else 0
    return total, jvm


def run_measured(cmd: list[str], env: dict | None = None, *, check: bool = True,
                 interval: float = 0.2) -> Measured:
    """Run ``cmd``, sampling the resident memory of its process tree every ``interval`` seconds.

    Output goes to a temporary file, not a pipe (a full pipe would stall the child). When the
    command fails, the end of its output goes to stderr; then ``check`` stops the benchmark
    (``SystemExit``), otherwise the failure is returned (``returncode``).
    """
    import psutil

    started = time.time()
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        parent = psutil.Process(proc.pid)
        peak_tree = peak_jvm = 0
        while proc.poll() is None:
            try:
                tree, jvm = _tree_rss(parent)
            except psutil.Error:  # the parent itself has just ended
                tree = jvm = 0
            peak_tree, peak_jvm = max(peak_tree, tree), max(peak_jvm, jvm)
            time.sleep(interval)
        seconds = time.time() - started
        log.seek(0)
        output = log.read()
    if proc.returncode != 0:
        print(output[-4000:], file=sys.stderr)
        if check:
            raise SystemExit(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}")
    return Measured(seconds, peak_tree / GIB, peak_jvm / GIB, proc.returncode, output)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    """One line about the machine the figures come from: torch and its threads (when the
    benchmark uses torch), the cores, native bfloat16 support and the 1-minute load average.

    The load average is last, so that a caller can append ``" at start"``.
    """
    from srgnn.cpu import native_bfloat16, usable_cores

    parts = []
    torch = sys.modules.get("torch")  # only a benchmark that uses torch has imported it
    if torch is not None:
        parts.append(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s) of "
                     f"{os.cpu_count()} cores")
    else:
        parts.append(f"{usable_cores()} usable of {os.cpu_count()} cores")
    parts.append(f"native bfloat16 {'yes' if native_bfloat16() else 'no'}")
    parts.append(f"load average {os.getloadavg()[0]:.2f}")
    return ", ".join(parts)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Cells (already formatted) as a plain-text table: a rule under the header, two spaces
    between columns, the first column left-aligned and the others right-aligned."""
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]

    def line(cells) -> str:
        return "  ".join(cell.ljust(w) if c == 0 else cell.rjust(w)
                         for c, (cell, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])
