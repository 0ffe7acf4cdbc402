"""Popularity bias: what the popularity penalty and inverse-propensity weighting trade.

    .venv/bin/python bench/bench_popularity.py --data synth --threads 1          # generated
    .venv/bin/python bench/bench_popularity.py --data diginetica --epochs 2 \\
        --max-examples 150000 --max-valid-examples 10000 --threads 1                 # Diginetica

For each strength of each option (``--penalties``: ``popularity_penalty``, ``--powers``:
``propensity_weighting``; 0 is the shared baseline) it trains SR-GNN with the same settings
(``--epochs``, ``--max-examples`` per epoch, epoch chosen on validation HR@20) and evaluates the
chosen model through the one evaluation path (:func:`srgnn.evaluation.evaluate.evaluate`) on
validation and test: HR@20, MRR@20, coverage@20, the average training clicks of the recommended
items, the long-tail share of the lists and HR@20 on long-tail targets (long tail: the items
outside the most popular ones that make 80% of the training clicks).

Data: ``--data synth`` generates a clickstream (:mod:`srgnn.data.synth`, ``--sessions``,
``--items``, ``--days``) and prepares it with ``srgnn prepare`` (last day test, the day before
validation); ``--data diginetica`` prepares Diginetica as bench/bench_sampled.py does
(``--valid-days 3``) and tests on the 60,858 published prefixes. Run folders are reused from
``--home`` (default ``var/bench/popularity/<data>``).

The last line applies the rule for a default: the setting with the largest validation
coverage@20 gain over the baseline among those that cost at most 0.5 point of validation
HR@20; none qualifying keeps both options off.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from common import DIGINETICA, ROOT, machine, text_table

HR_BUDGET = 0.005  # at most 0.5 point of validation HR@20 for a default's coverage gain


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=("synth", "diginetica"), default="synth")
    p.add_argument("--penalties", type=float, nargs="*", default=[0.1, 0.3, 1.0])
    p.add_argument("--powers", type=float, nargs="*", default=[0.25, 0.5])
    return data_arguments(p).parse_args(argv)


def data_arguments(p: argparse.ArgumentParser, **defaults) -> argparse.ArgumentParser:
    """The data, training-size and machine arguments these benchmarks share (``defaults``
    change theirs, e.g. ``sessions=6000``)."""
    p.add_argument("--sessions", type=int, default=20_000, help="synth: sessions generated")
    p.add_argument("--items", type=int, default=2_000, help="synth: catalogue size")
    p.add_argument("--days", type=int, default=7, help="synth: days of clicks")
    p.add_argument("--users", type=int, default=0,
                   help="synth: accounts that log in (0: anonymous sessions, no user_id)")
    p.add_argument("--return-days", type=int, default=None,
                   help="prepare's return_days (the user-returns label's window)")
    p.add_argument("--valid-days", type=int, default=None,
                   help="validation days (default: 1 for synth, 3 for Diginetica)")
    p.add_argument("--diginetica", type=Path, default=DIGINETICA)
    p.add_argument("--home", type=Path, default=None)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-examples", type=int, default=None, help="training examples per epoch")
    p.add_argument("--max-valid-examples", type=int, default=None,
                   help="validation examples per epoch (the chosen model is evaluated on all)")
    p.add_argument("--hidden-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all usable cores)")
    p.add_argument("--k", type=int, default=20)
    p.set_defaults(**defaults)
    return p


def prepare(args, run_dir: Path) -> None:
    """``srgnn prepare`` in a subprocess (its JVM exits with it), unless run_dir is prepared."""
    import subprocess

    if (run_dir / "summary.json").exists():
        print(f"prepare: reusing {run_dir}", flush=True)
        return
    if args.data == "synth":
        from srgnn.data.synth import SynthConfig, write_clickstream

        clicks = args.home / "clicks.csv"
        write_clickstream(str(clicks), SynthConfig(sessions=args.sessions, items=args.items,
                                                   days=args.days, users=args.users))
        tail = ["--test-days", "1", "--valid-days", str(args.valid_days or 1)]
    else:
        clicks = args.diginetica / "train_clicks.csv.gz"
        tail = ["--min-item-support", "1", "--test-days", "0",
                "--valid-days", str(args.valid_days or 3)]
    if args.return_days is not None:
        tail += ["--return-days", str(args.return_days)]
    command = [sys.executable, "-m", "srgnn.cli", "--home", str(args.home), "prepare",
               "--clicks", str(clicks), "--out", str(run_dir), *tail]
    print("prepare:", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def start(args, name: str):
    """``(run, base TrainConfig, load average)``: torch threads set, the run folder of
    ``var/bench/<name>/<data>`` (or ``--home``) prepared, and the settings every row shares."""
    from srgnn.logs import configure

    configure()
    if args.data == "diginetica" and not (args.diginetica / "train_clicks.csv.gz").exists():
        sys.exit(f"Diginetica not found under {args.diginetica.resolve()}")
    import torch

    from srgnn.config import TrainConfig
    from srgnn.cpu import torch_threads
    from srgnn.data.runfolder import RunFolder

    torch.set_num_threads(torch_threads(args.threads))
    load = os.getloadavg()[0]
    args.home = (args.home or ROOT / "var" / "bench" / name / args.data).resolve()
    args.home.mkdir(parents=True, exist_ok=True)
    os.environ["SRGNN_HOME"] = str(args.home)
    prepare(args, args.home / "run")
    base = TrainConfig(hidden_size=args.hidden_size, epochs=args.epochs,
                       max_examples_per_epoch=args.max_examples,
                       max_valid_examples=args.max_valid_examples, num_threads=args.threads,
                       progress=False, precision="float32", softmax="full", top_k=args.k)
    return RunFolder(args.home / "run"), base, load


def describe(args, run, load: float, units: str) -> None:
    """Print the machine and what was trained on, before a table."""
    print()
    print(f"{machine()} at the end, {load:.2f} at start")
    described = (f"generated clickstream ({args.sessions:,} sessions, {args.items:,} items)"
                 if args.data == "synth" else "Diginetica, test = the 60,858 published prefixes")
    print(f"\n{described}; {run.num_items:,} items in the vocabulary, {args.epochs} epoch(s)"
          + (f" of at most {args.max_examples:,} examples" if args.max_examples else "")
          + f", hidden size {args.hidden_size}. {units}")


def held_out_sets(args, run):
    """``{"valid": HeldOut, "test": HeldOut}``: the run's splits, or Diginetica's prefixes."""
    from srgnn.evaluation import heldout

    sets = {"valid": heldout.from_run(run.path, "valid")}
    if args.data == "synth":
        sets["test"] = heldout.from_run(run.path, "test")
    else:
        import pyarrow as pa

        from bench_accuracy import load_prefixes

        sessions, targets = load_prefixes(args.diginetica)
        lengths = np.array([len(s) for s in sessions])
        sets["test"] = heldout.HeldOut(pa.array(sessions, pa.list_(pa.string())), targets,
                                       lengths, run.vocabulary,
                                       description="Diginetica test prefixes")
    return sets


def settings(args) -> list[tuple[str, dict]]:
    """``(label, TrainConfig changes)`` of every run, the baseline first."""
    runs = [("baseline (both off)", {})]
    runs += [(f"penalty {lam:g}", {"popularity_penalty": lam}) for lam in args.penalties if lam > 0]
    runs += [(f"IPW power {p:g}", {"propensity_weighting": p}) for p in args.powers if p > 0]
    return runs


COLUMNS = ("HR@{k}", "MRR@{k}", "coverage@{k}", "avg_popularity@{k}", "long_tail@{k}",
           "long_tail_HR@{k}")


def row_of(label: str, figures: dict, k: int, seconds: float) -> list[str]:
    cells = [label]
    for split in ("valid", "test"):
        for column in COLUMNS:
            value = figures[split].get(column.format(k=k), float("nan"))
            cells.append(f"{value:.1f}" if column.startswith("avg") else f"{100 * value:.2f}")
    return cells + [f"{seconds:.0f}"]


def choose_default(results: list[tuple[str, dict]], k: int) -> str:
    """The rule: the largest validation coverage gain that costs at most 0.5 point of
    validation HR@K; the baseline when nothing gains coverage within that budget."""
    base_label, base = results[0]
    best_label, best_gain = base_label, 0.0
    for label, figures in results[1:]:
        valid = figures["valid"]
        gain = valid[f"coverage@{k}"] - base["valid"][f"coverage@{k}"]
        if valid[f"HR@{k}"] >= base["valid"][f"HR@{k}"] - HR_BUDGET and gain > best_gain:
            best_label, best_gain = label, gain
    if best_label == base_label:
        return "no setting gains coverage within 0.5 point of validation HR: both stay off"
    return f"{best_label} (validation coverage +{100 * best_gain:.2f} points)"


def main(argv=None) -> None:
    args = parse_args(argv)
    from srgnn.evaluation.evaluate import evaluate
    from srgnn.serving.recommender import Recommender
    from srgnn.training.loop import train

    run, base, load = start(args, "popularity")
    sets = held_out_sets(args, run)
    k = args.k
    results, rows = [], []
    for label, changes in settings(args):
        started = time.perf_counter()
        result = train(run.graphs("train"), run.graphs("valid"), run.num_items,
                       replace(base, **changes))
        recommender = Recommender.from_training(result.best_state_dict, result.model_config,
                                                run.vocabulary)
        figures = {split: evaluate(recommender, held_out, k) for split, held_out in sets.items()}
        seconds = time.perf_counter() - started
        results.append((label, figures))
        rows.append(row_of(label, figures, k, seconds))
        print(f"  {label}: valid HR@{k} {100 * figures['valid'][f'HR@{k}']:.2f}, coverage@{k} "
              f"{100 * figures['valid'][f'coverage@{k}']:.2f}, {seconds:.0f} s", flush=True)

    describe(args, run, load, "Percent, except avg pop (training clicks).")
    names = ["HR", "MRR", "cov", "avg pop", "LT share", "LT HR"]
    header = (["setting"] + [f"valid {n}" for n in names] + [f"test {n}" for n in names]
              + ["seconds"])
    print(text_table(header, rows))
    print(f"\nDefault by the rule (largest coverage@{k} gain costing at most 0.5 point of "
          f"validation HR@{k}): {choose_default(results, k)}")


if __name__ == "__main__":
    main()
