"""Which recommender a training registers on a first-order clickstream, and by how much.

    .venv/bin/python bench/bench_champion.py                       # successor share 0.9
    .venv/bin/python bench/bench_champion.py --successor-share 0.55 --epochs 5

Generates 7 days of clicks (:mod:`srgnn.data.synth`) where ``--successor-share`` of the next
clicks follow the current item in its browsing order (near 1: the next item depends mostly on
the last one), prepares them with Spark (``prepare_step``: the last day is the test split, the
one before it validation, the rest training), trains SR-GNN and lets the run choose what to
register (``TrainConfig.candidates = "auto"``, :mod:`srgnn.evaluation.selection`). Prints every candidate's validation HR@20 / MRR@20 and the
winner's margin over SR-GNN. Everything lives in a temporary home folder.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

from common import machine, text_table
from srgnn.config import PrepareConfig, Settings, Source, TrainConfig
from srgnn.data.synth import SynthConfig, write_clickstream
from srgnn.pipeline import prepare_step
from srgnn.training.run import run_training


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--successor-share", type=float, default=0.9)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--hidden-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-champion-") as tmp:
        home = Path(tmp) / "home"
        settings = Settings(home=home)
        clicks = Path(tmp) / "clicks.csv"
        write_clickstream(str(clicks), SynthConfig(sessions=args.sessions, items=args.items,
                                                   successor_share=args.successor_share,
                                                   seed=args.seed))
        prepared = prepare_step(Source(clicks=str(clicks)), PrepareConfig(test_days=1, valid_days=1),
                                str(home / "runs" / "bench"), settings)
        prepare_s = time.perf_counter() - started
        # The model registered is the one validation judged (no refit on train + valid).
        no_refit = {"refit": False} if "refit" in {f.name for f in fields(TrainConfig)} else {}
        config = TrainConfig(epochs=args.epochs, hidden_size=args.hidden_size, progress=False,
                             seed=args.seed, **no_refit)
        trained = run_training(settings, prepared["run_dir"], config)
        train_s = time.perf_counter() - started - prepare_s
    selection = trained["selection"]
    rows = selection["candidates"]
    srgnn_hr, srgnn_mrr = rows["srgnn"]["HR@20"], rows["srgnn"]["MRR@20"]
    header = ["candidate", "HR@20", "MRR@20", "HR@20 - SR-GNN", "MRR@20 - SR-GNN"]
    table = []
    for name, row in rows.items():
        table.append([name + (" *" if name == _winner_row(selection) else ""),
                      f"{100 * row['HR@20']:.2f}", f"{100 * row['MRR@20']:.2f}",
                      f"{100 * (row['HR@20'] - srgnn_hr):+.2f}",
                      f"{100 * (row['MRR@20'] - srgnn_mrr):+.2f}"])
    print(f"first-order clickstream: {args.sessions:,} sessions, {args.items:,} items, successor "
          f"share {args.successor_share}; SR-GNN {trained['epochs']} epoch(s) (best "
          f"{trained['best_epoch']}), hidden {args.hidden_size}; validation examples "
          f"{rows['srgnn']['examples']:,}")
    print(text_table(header, table))
    print(f"registered kind: {trained['kind']} (* above); prepare {prepare_s:.0f} s, "
          f"train + selection {train_s:.0f} s")
    print(machine())
    return 0


def _winner_row(selection: dict) -> str:
    """The candidate row of the registered kind (a blend's row carries its weight)."""
    if selection["blend_weight"] is not None:
        return f"{selection['kind']}@{selection['blend_weight']:g}"
    return selection["kind"]


if __name__ == "__main__":
    sys.exit(main())
