"""Benchmark: `srgnn prepare` wall time and peak memory (prints a table; not a test).

    .venv/bin/python bench/bench_prepare.py                 # Diginetica + 10M generated clicks
    .venv/bin/python bench/bench_prepare.py --synthetic 0   # Diginetica only

Each case runs the real command line in a child process. Memory is sampled every 0.2 s over
the whole process tree (the Python driver, the Spark JVM and its Python workers): the
table shows the peak of the tree and the peak of the JVM alone (Spark's driver heap is
capped by SRGNN_SPARK_DRIVER_MEMORY, so it cannot grow with the input).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DIGINETICA, machine, run_measured

TRAIN_CLICKS = DIGINETICA / "train_clicks.csv.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=10_000_000, help="generated clicks (0 = skip)")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-prepare-"))
    env = {**os.environ, "SRGNN_HOME": str(work / "home")}
    srgnn = [sys.executable, "-m", "srgnn.cli"]
    rows = []

    print(machine())

    if TRAIN_CLICKS.exists():
        out = work / "diginetica"
        run = run_measured(
            srgnn + ["prepare", "--clicks", str(TRAIN_CLICKS), "--out", str(out), "--min-item-support", "1",
                     "--test-days", "0", "--valid-days", "3"], env, check=False)
        s = json.loads((out / "summary.json").read_text()) if run.returncode == 0 else {}
        rows.append(("diginetica train_clicks", s.get("clicks_read"), run.seconds, run.peak_gib,
                     run.peak_jvm_gib, s, 60))
    else:
        print(f"skipping Diginetica: {TRAIN_CLICKS} not found")

    if args.synthetic:
        clicks = work / "synthetic.csv"
        # about 4.2 clicks a session with the generator's defaults
        sessions = int(args.synthetic / 4.2)
        t = time.time()
        subprocess.run(srgnn + ["generate", "--out", str(clicks), "--sessions", str(sessions),
                                "--items", "50000", "--days", "30", "--seed", "1"], env=env, check=True)
        print(f"generated {clicks} in {time.time() - t:.0f} s ({clicks.stat().st_size / 2**20:.0f} MiB)")
        out = work / "synthetic"
        run = run_measured(
            srgnn + ["prepare", "--clicks", str(clicks), "--out", str(out), "--test-days", "1", "--valid-days", "1"],
            env, check=False)
        s = json.loads((out / "summary.json").read_text()) if run.returncode == 0 else {}
        rows.append((f"generated {args.synthetic / 1e6:.0f}M clicks", s.get("clicks_read"), run.seconds,
                     run.peak_gib, run.peak_jvm_gib, s, 360))

    print()
    print(f"{'input':<26} {'clicks read':>12} {'examples':>10} {'wall s':>8} {'target s':>9} "
          f"{'peak tree GiB':>14} {'peak JVM GiB':>13} {'balanced':>9}")
    for name, read, seconds, tree, jvm, s, target in rows:
        print(f"{name:<26} {read or 0:>12,} {s.get('examples', 0):>10,} {seconds:>8.1f} {target:>9} "
              f"{tree:>14.2f} {jvm:>13.2f} {str(s.get('balanced')):>9}")
    for name, *_, s, _ in rows:
        if s:
            print(f"{name}: examples {s['examples']:,} + lost to unseen items {s['examples_lost_to_unseen_items']:,} "
                  f"= {s['examples'] + s['examples_lost_to_unseen_items']:,}; quarantined {s['clicks_quarantined']:,}; "
                  f"removed {s['clicks_removed']}")


if __name__ == "__main__":
    main()
