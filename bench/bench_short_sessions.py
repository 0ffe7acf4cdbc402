"""Short sessions by length: SR-GNN alone, item-KNN routing and augmentation with co-clicks.

    .venv/bin/python bench/bench_short_sessions.py
    .venv/bin/python bench/bench_short_sessions.py --sessions 40000 --epochs 4 --neighbors 1 3 5

Generates 7 days of clicks (:mod:`srgnn.data.synth`), prepares them with Spark (``local[1]``;
the last day is the test split, the one before it validation, the rest training), trains
SR-GNN on the training split (one torch thread, the epoch chosen on validation, no MLflow) and
fits item-KNN on the same sessions. On the test split it prints HR@20 by prefix length
(1, 2, 3, 4+) of:

* ``srgnn``: the model alone;
* ``iknn routing``: lengths 1-3 answered by item-KNN;
* ``augmented +m``: lengths 1-3 scored by SR-GNN with the m items co-clicked most with the
  session's clicks prepended (``TrainConfig.short_augment``);
* ``chosen on valid``: each length answered the way the validation split shows best
  (:func:`srgnn.training.fallback.short_session_routes`, what a training registers).

Lengths 4+ are the model's in every row. Everything lives in a temporary home folder.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from common import machine, text_table  # noqa: E402
from srgnn.config import PrepareConfig, Settings, Source, TrainConfig  # noqa: E402
from srgnn.data.runfolder import RunFolder  # noqa: E402
from srgnn.data.synth import SynthConfig, write_clickstream  # noqa: E402
from srgnn.evaluation import heldout  # noqa: E402
from srgnn.evaluation.evaluate import evaluate, fit_baselines  # noqa: E402
from srgnn.pipeline import prepare_step  # noqa: E402
from srgnn.serving.recommender import Recommender, ShortSessionFallback  # noqa: E402
from srgnn.training.fallback import (SHORT_LENGTHS, WAY_AUGMENTED, WAY_ITEM_KNN,  # noqa: E402
                                     compare_short_ways, short_session_routes)
from srgnn.training.loop import train  # noqa: E402

K = 20
BUCKETS = ("1", "2", "3", "4+")


def hr_by_bucket(by_length: dict) -> list[tuple[float, int]]:
    """(HR@K, examples) of lengths 1, 2, 3 and 4+ (the longer buckets pooled)."""
    out = [(by_length[b][f"HR@{K}"], by_length[b]["examples"]) for b in BUCKETS[:3]]
    longer = [row for label, row in by_length.items() if label not in BUCKETS[:3]]
    examples = sum(row["examples"] for row in longer)
    hits = sum(row[f"HR@{K}"] * row["examples"] for row in longer if row["examples"])
    out.append((hits / examples if examples else float("nan"), examples))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=30_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--hidden-size", type=int, default=100)
    parser.add_argument("--neighbors", type=int, nargs="+", default=[1, 3, 5],
                        help="neighbours prepended (one row each)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-short-") as tmp:
        home = Path(tmp) / "home"
        settings = Settings(home=home, spark_master="local[1]")
        clicks = Path(tmp) / "clicks.csv"
        write_clickstream(str(clicks), SynthConfig(sessions=args.sessions, items=args.items,
                                                   seed=args.seed))
        prepared = prepare_step(Source(clicks=str(clicks)), PrepareConfig(test_days=1, valid_days=1),
                                str(home / "runs" / "bench"), settings)
        prepare_s = time.perf_counter() - started
        run = RunFolder(prepared["run_dir"])
        config = TrainConfig(epochs=args.epochs, hidden_size=args.hidden_size, progress=False,
                             seed=args.seed, num_threads=1, refit=False)
        result = train(run.graphs("train"), run.graphs("valid"), run.num_items, config,
                       output_dir=Path(tmp) / "model")
        train_s = time.perf_counter() - started - prepare_s
        model = Recommender.from_training(result.best_state_dict, result.model_config, run.vocabulary)
        knn = fit_baselines(run, ["iknn"])[0]["iknn"].ranker.baseline
        test, valid = heldout.from_run(run, "test"), heldout.from_run(run, "valid")

        rows = {"srgnn": model,
                "iknn routing": model.with_short_fallback(ShortSessionFallback(knn, SHORT_LENGTHS, {}))}
        for m in args.neighbors:
            rows[f"augmented +{m}"] = model.with_short_fallback(
                ShortSessionFallback(knn, (), {}, SHORT_LENGTHS, m))
        best_m = max(args.neighbors, key=lambda m: _valid_short_hr(model, knn, valid, m))
        routes = short_session_routes(compare_short_ways(model, knn, valid, K, augment=best_m), K)
        if routes:
            rows["chosen on valid"] = model.with_short_fallback(ShortSessionFallback(
                knn, tuple(n for n, w in routes.items() if w == WAY_ITEM_KNN), {},
                tuple(n for n, w in routes.items() if w == WAY_AUGMENTED), best_m))
        figures = {name: hr_by_bucket(evaluate(rec, test, K)["by_length"]) for name, rec in rows.items()}
        total_s = time.perf_counter() - started

    counts = [examples for _, examples in figures["srgnn"]]
    header = ["way", *(f"HR@{K} len {b} (n={n:,})" for b, n in zip(BUCKETS, counts))]
    table = [[name, *(f"{100 * hr:.2f}" for hr, _ in values)] for name, values in figures.items()]
    print(f"generated clickstream: {args.sessions:,} sessions, {args.items:,} items; SR-GNN "
          f"{len(result.history)} epoch(s) (best {result.best_epoch}), hidden {args.hidden_size}, "
          f"1 thread; test split by prefix length")
    print(text_table(header, table))
    chosen = ", ".join(f"{n}: {way}" for n, way in routes.items()) or "SR-GNN for every length"
    print(f"chosen on validation (augmentation +{best_m}): {chosen}")
    print(f"prepare {prepare_s:.0f} s, train {train_s:.0f} s, total {total_s:.0f} s")
    print(machine())
    return 0


def _valid_short_hr(model, knn, valid, m: int) -> float:
    """Validation HR@K of the augmented model over lengths 1-3 (picks the m the row uses)."""
    by_length = compare_short_ways(model, knn, valid, K, use_item_knn=False, augment=m)[WAY_AUGMENTED]
    rows = [by_length[str(n)] for n in SHORT_LENGTHS]
    examples = sum(r["examples"] for r in rows)
    return sum(r[f"HR@{K}"] * r["examples"] for r in rows) / max(1, examples)


if __name__ == "__main__":
    sys.exit(main())
