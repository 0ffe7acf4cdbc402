"""Short sessions by length: SR-GNN alone, item-KNN routing and augmentation with co-clicks.

    .venv/bin/python bench/bench_short_sessions.py
    .venv/bin/python bench/bench_short_sessions.py --sessions 40000 --epochs 4 --neighbors 1 3 5
    .venv/bin/python bench/bench_short_sessions.py --data diginetica --epochs 2 \\
        --max-examples 60000 --max-valid-examples 10000

``--data synth`` (the default) generates 7 days of clicks (:mod:`srgnn.data.synth`) and
prepares them with ``srgnn prepare`` (the last day is the test split, the one before it
validation, the rest training); ``--data diginetica`` prepares Diginetica's training clicks
(the last 3 days validation) and tests on the 60,858 published prefixes, as
bench/bench_popularity.py does (run folders reused from ``--home``, default
``var/bench/short/<data>``). It trains SR-GNN on the training split (``--threads``, the epoch
chosen on validation, no MLflow) and fits item-KNN on the same sessions. On the test split it
prints HR@20 by prefix length (1, 2, 3, 4+) of:

* ``srgnn``: the model alone;
* ``iknn routing``: lengths 1-3 answered by item-KNN;
* ``augmented +m``: lengths 1-3 scored by SR-GNN with the m items co-clicked most with the
  session's clicks prepended (``TrainConfig.short_augment``);
* ``chosen on valid``: each length answered the way the validation split shows best
  (:func:`srgnn.training.fallback.short_session_routes`, what a training registers).

Lengths 4+ are the model's in every row.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import replace

os.environ.setdefault("OMP_NUM_THREADS", "1")

from bench_popularity import data_arguments, describe, held_out_sets, start  # noqa: E402
from common import text_table  # noqa: E402
from srgnn.evaluation.evaluate import evaluate, fit_baselines  # noqa: E402
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
    parser.add_argument("--data", choices=("synth", "diginetica"), default="synth")
    parser.add_argument("--neighbors", type=int, nargs="+", default=[1, 3, 5],
                        help="neighbours prepended (one row each)")
    parser.add_argument("--seed", type=int, default=0)
    args = data_arguments(parser, sessions=30_000, epochs=3, threads=1).parse_args(argv)
    started = time.perf_counter()
    run, base, load = start(args, "short")
    logging.getLogger("srgnn").setLevel(logging.WARNING)
    result = train(run.graphs("train"), run.graphs("valid"), run.num_items,
                   replace(base, seed=args.seed))
    model = Recommender.from_training(result.best_state_dict, result.model_config, run.vocabulary)
    knn = fit_baselines(run, ["iknn"])[0]["iknn"].ranker.baseline
    sets = held_out_sets(args, run)
    test, valid = sets["test"], sets["valid"]

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
    describe(args, run, load, f"SR-GNN {len(result.history)} epoch(s) (best "
             f"{result.best_epoch}); test split by prefix length.")
    print(text_table(header, table))
    chosen = ", ".join(f"{n}: {way}" for n, way in routes.items()) or "SR-GNN for every length"
    print(f"chosen on validation (augmentation +{best_m}): {chosen}")
    print(f"total {total_s:.0f} s (prepare included unless reused)")
    return 0


def _valid_short_hr(model, knn, valid, m: int) -> float:
    """Validation HR@K of the augmented model over lengths 1-3 (picks the m the row uses)."""
    by_length = compare_short_ways(model, knn, valid, K, use_item_knn=False, augment=m)[WAY_AUGMENTED]
    rows = [by_length[str(n)] for n in SHORT_LENGTHS]
    examples = sum(r["examples"] for r in rows)
    return sum(r[f"HR@{K}"] * r["examples"] for r in rows) / max(1, examples)


if __name__ == "__main__":
    sys.exit(main())
