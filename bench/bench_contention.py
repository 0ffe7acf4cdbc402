"""Training and scoring speed when other processes want the same cores (prints a table).

An Airflow worker runs several tasks at once and local Spark shares the machine with training,
so a shared CPU is the normal case. For each code base (this checkout, and with ``--before``
another checkout of the project, e.g. ``git worktree add /tmp/before <commit>``), it runs
each workload in a fresh process:

* ``training``: SR-GNN training steps on generated sessions (hidden 100, batch 100,
  ``--items`` items), examples/s of the epoch;
* ``scoring``: top-20 over the catalogue for ``--prefixes`` generated prefixes with the
  model's scorer, prefixes/s;

alone, and with one and with two competing CPU-bound processes (``python -c "while True:
pass"``) running on the same cores; each figure is the best of ``--repeats`` runs. Goal:
with one competitor at least 40% of the alone rate, with two at least 25%.

Each run's environment carries no ``OMP_WAIT_POLICY``, ``OMP_NUM_THREADS`` or
``SRGNN_NUM_THREADS``: what the code does by itself is measured. ``--spinning`` adds a row for
this checkout with ``OMP_WAIT_POLICY=ACTIVE``, the setting for a machine that runs nothing else.

    .venv/bin/python bench/bench_contention.py
    git worktree add /tmp/before <commit> && \\
        .venv/bin/python bench/bench_contention.py --before /tmp/before
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

from common import ROOT, machine, text_table

COMPETITOR = "while True: pass"
CLEAN = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "SRGNN_NUM_THREADS", "PYTHONPATH")


# --------------------------------------------------------------------------------------------
# The workloads (run in a child process, with either code base on its path)
# --------------------------------------------------------------------------------------------
def _module(*names):
    """The first importable of ``names`` (this layout, then the flat one of older checkouts)."""
    import importlib

    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(f"none of {names} can be imported")


def worker(kind: str, data: Path, items: int, examples: int) -> dict:
    import srgnn  # first, as every entry point of the product imports it before torch

    import numpy as np
    import torch

    config_module = _module("srgnn.config")
    if kind == "training":
        loop = _module("srgnn.training.loop", "srgnn.train")
        config = config_module.TrainConfig(epochs=1, max_examples_per_epoch=examples, progress=False,
                                           seed=1)
        result = loop.train(data / "graphs", None, items, config)
        return {"rate": result.history[0].examples_per_second, "threads": torch.get_num_threads(),
                "code": str(Path(srgnn.__file__).parents[1])}
    network = _module("srgnn.model.network", "srgnn.model")
    predict = _module("srgnn.serving.predict", "srgnn.predict")
    try:  # the scoring path's thread setting, where the code base has one
        _module("srgnn.cpu").set_torch_threads()
    except (ImportError, AttributeError):
        pass
    torch.manual_seed(0)
    scorer = predict.Scorer(network.SRGNN(network.ModelConfig(num_items=items, hidden_size=100)),
                            precision="float32")
    prefixes = np.load(data / "prefixes.npz")
    started = time.perf_counter()
    scorer.top_k(prefixes["values"], prefixes["offsets"], k=20)
    seconds = time.perf_counter() - started
    return {"rate": (len(prefixes["offsets"]) - 1) / seconds, "threads": torch.get_num_threads(),
            "code": str(Path(srgnn.__file__).parents[1])}


# --------------------------------------------------------------------------------------------
# The measurement
# --------------------------------------------------------------------------------------------
def write_data(folder: Path, items: int, sessions: int, prefixes: int) -> None:
    import numpy as np

    from srgnn.data.samples import clustered_sessions, expand_prefixes, sessions_to_arrays, write_graph_parquet

    generated = clustered_sessions(num_items=items, num_sessions=sessions, cluster_size=20, seed=0)
    write_graph_parquet(folder / "graphs", generated)
    values, offsets, _, _ = expand_prefixes(*sessions_to_arrays(generated))
    count = min(prefixes, len(offsets) - 1)
    np.savez(folder / "prefixes.npz", values=values[: offsets[count]], offsets=offsets[: count + 1])


def measure(code: Path | None, kind: str, data: Path, args, competitors: int,
            extra_env: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    env.update(extra_env or {})
    if code is not None:
        env["PYTHONPATH"] = str(code)
    others = [subprocess.Popen([sys.executable, "-c", COMPETITOR]) for _ in range(competitors)]
    try:
        time.sleep(0.5)  # the competitors are running before the work starts
        done = subprocess.run(
            [sys.executable, __file__, "--worker", kind, "--data", str(data),
             "--items", str(args.items), "--examples", str(args.examples)],
            env=env, capture_output=True, text=True, timeout=3600)
    finally:
        for process in others:
            process.kill()
            process.wait()
    if done.returncode != 0:
        raise SystemExit(f"the {kind} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, default=None,
                        help="another checkout of the project to measure side by side")
    parser.add_argument("--items", type=int, default=2_000, help="catalogue size")
    parser.add_argument("--examples", type=int, default=20_000, help="training examples a run")
    parser.add_argument("--prefixes", type=int, default=20_000, help="prefixes scored a run")
    parser.add_argument("--competitors", default="0,1,2", help="numbers of competing processes")
    parser.add_argument("--repeats", type=int, default=2, help="runs per figure (best is kept)")
    parser.add_argument("--workloads", default="training,scoring")
    parser.add_argument("--spinning", action="store_true",
                        help="also measure this checkout with OMP_WAIT_POLICY=ACTIVE (the opt-out "
                             "for a machine that runs nothing else)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.items, args.examples)))
        return

    competitors = [int(n) for n in args.competitors.split(",")]
    codes = (([("before", args.before, None)] if args.before else [])
             + [("this checkout", None, None)]
             + ([("this checkout, ACTIVE", None, {"OMP_WAIT_POLICY": "ACTIVE"})]
                if args.spinning else []))
    print(machine())
    rows = []
    with tempfile.TemporaryDirectory(prefix="srgnn-contention-") as tmp:
        data = Path(tmp)
        write_data(data, args.items, sessions=max(2_000, args.examples // 3), prefixes=args.prefixes)
        for kind in args.workloads.split(","):
            for label, code, extra_env in codes:
                rates, threads = {}, None
                for n in competitors:
                    runs = [measure(code, kind, data, args, n, extra_env)
                            for _ in range(args.repeats)]
                    rates[n] = max(r["rate"] for r in runs)
                    threads = runs[0]["threads"]
                alone = rates.get(0)
                row = [kind, label, str(threads)] + [f"{rates[n]:,.0f}" for n in competitors]
                row += [f"{100 * rates[n] / alone:.0f}%" if alone else "-" for n in competitors if n]
                rows.append(row)
                print(f"  {kind} / {label}: " + ", ".join(f"{n} competing: {rates[n]:,.0f}/s"
                                                           for n in competitors), flush=True)
    unit = {"training": "examples/s", "scoring": "prefixes/s"}
    header = (["workload", "code", "torch threads"]
              + [f"{n} competing" for n in competitors]
              + [f"{n} competing, % of alone" for n in competitors if n])
    print(f"\n{text_table(header, rows)}\n(rates in {', '.join(f'{k} {v}' for k, v in unit.items())};"
          f" {os.cpu_count()} cores; goal: >= 40% with one competitor, >= 25% with two)")
    print(f"code: this checkout = {ROOT}" + (f", before = {args.before}" if args.before else ""))


if __name__ == "__main__":
    main()
