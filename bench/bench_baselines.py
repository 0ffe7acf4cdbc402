"""Accuracy and speed of the baselines on the Diginetica benchmark, without Spark.

    .venv/bin/python bench/bench_baselines.py                      # published test prefixes
    .venv/bin/python bench/bench_baselines.py --protocol holdout   # last 2 train days as test
    .venv/bin/python bench/bench_baselines.py --models pop iknn --k 20

Protocols:

* ``published`` (default): fit on ``train_clicks.csv.gz`` and predict the next item of the
  60,858 prefixes of ``score_clicks.csv.gz`` (truth in ``targets.csv.gz``): the exact test
  examples of the SR-GNN paper, so HR@20 / MRR@20 compare with the published figures
  (Item-KNN 35.75 / 11.57, POP 0.89 / 0.20).
* ``holdout``: sessions starting in the last ``--holdout-days`` days of the training clicks
  become test sessions (every prefix predicts its next item, targets unseen in the remaining
  training part dropped), the rest is training data.

Item ids are mapped to 1..N from the training part only. Prints one table of metrics with fit
and recommend times, then HR / MRR per session-length bucket. Needs ../shared/data/diginetica.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import DIGINETICA, machine
from srgnn.data.ragged import counts_to_offsets, expand_ranges
from srgnn.evaluation.evaluate import evaluate_ranked
from srgnn.evaluation.report import format_table
from srgnn.model.baselines import BASELINES, make_baseline

PUBLISHED = {"iknn": (35.75, 11.57), "pop": (0.89, 0.20)}  # HR@20, MRR@20 in percent


def to_flat(clicks: pd.DataFrame, vocab: pd.Index) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """Clicks sorted by (session, time) -> flat item indices (0 = unknown), offsets, session ids."""
    clicks = clicks.sort_values(["session_id", "timestamp"], kind="stable")
    values = vocab.get_indexer(clicks["item_id"]) + 1  # -1 (unknown) becomes 0
    sessions, counts = np.unique(clicks["session_id"].to_numpy(), return_counts=True)
    return values.astype(np.int64), counts_to_offsets(counts), pd.Index(sessions)


def load_published(data: Path):
    train = pd.read_csv(data / "train_clicks.csv.gz")
    vocab = pd.Index(np.sort(train["item_id"].unique()))
    train_values, train_offsets, train_sessions = to_flat(train, vocab)
    end_times = train.groupby("session_id")["timestamp"].max().reindex(train_sessions).to_numpy()

    score = pd.read_csv(data / "score_clicks.csv.gz")
    score["session_id"] = score["session_id"].str[1:].astype(np.int64)  # "p17" -> 17
    prefix_values, prefix_offsets, prefix_sessions = to_flat(score, vocab)
    targets = pd.read_csv(data / "targets.csv.gz")
    targets["session_id"] = targets["session_id"].str[1:].astype(np.int64)
    target_ids = targets.set_index("session_id")["item_id"].reindex(prefix_sessions)
    target_index = vocab.get_indexer(target_ids.to_numpy()) + 1
    return (train_values, train_offsets, end_times, len(vocab),
            prefix_values, prefix_offsets, target_index.astype(np.int64))


def load_holdout(data: Path, days: float):
    clicks = pd.read_csv(data / "train_clicks.csv.gz")
    start = clicks.groupby("session_id")["timestamp"].min()
    cut = clicks["timestamp"].max() - days * 86400
    test_ids = start.index[start >= cut]
    is_test = clicks["session_id"].isin(test_ids)
    train, test = clicks[~is_test], clicks[is_test]
    vocab = pd.Index(np.sort(train["item_id"].unique()))
    train_values, train_offsets, train_sessions = to_flat(train, vocab)
    end_times = train.groupby("session_id")["timestamp"].max().reindex(train_sessions).to_numpy()

    test_values, test_offsets, _ = to_flat(test, vocab)
    # every prefix of every test session: position t >= 1 predicts click t from clicks < t
    session = np.repeat(np.arange(len(test_offsets) - 1), np.diff(test_offsets))
    position = np.arange(len(test_values)) - test_offsets[session]
    example = np.flatnonzero((position >= 1) & (test_values > 0))
    lengths = position[example]
    _, gather = expand_ranges(test_offsets[session[example]], lengths)
    return (train_values, train_offsets, end_times, len(vocab),
            test_values[gather], counts_to_offsets(lengths), test_values[example])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=["published", "holdout"], default="published")
    parser.add_argument("--holdout-days", type=float, default=2.0)
    parser.add_argument("--models", nargs="+", default=list(BASELINES), choices=list(BASELINES))
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--data", type=Path, default=DIGINETICA)
    args = parser.parse_args(argv)

    if not (args.data / "train_clicks.csv.gz").exists():
        sys.exit(f"Diginetica not found under {args.data.resolve()}")
    started = time.perf_counter()
    if args.protocol == "published":
        loaded = load_published(args.data)
    else:
        loaded = load_holdout(args.data, args.holdout_days)
    train_values, train_offsets, end_times, num_items, prefix_values, prefix_offsets, targets = loaded
    print(machine())
    prefix_lengths = np.diff(prefix_offsets)
    popularity = np.bincount(train_values, minlength=num_items + 1)
    popularity[0] = 0
    print(
        f"{args.protocol}: {len(train_offsets) - 1:,} train sessions, {len(train_values):,} clicks, "
        f"{num_items:,} items; {len(targets):,} test prefixes ({(targets == 0).sum()} with an "
        f"unknown target); loaded in {time.perf_counter() - started:.1f}s",
        flush=True,
    )

    results = {}
    for name in args.models:
        model = make_baseline(name)
        t0 = time.perf_counter()
        model.fit_flat(train_values, train_offsets, num_items=num_items, session_times=end_times)
        t1 = time.perf_counter()
        top_items, _ = model.recommend(prefix_values, prefix_offsets, args.k)
        t2 = time.perf_counter()
        result = evaluate_ranked(top_items, targets, prefix_lengths, popularity, args.k)
        result["fit_s"], result["recommend_s"] = t1 - t0, t2 - t1
        results[name] = result
        print(f"  {name:7s} {model!r}: HR@{args.k} {100 * result[f'HR@{args.k}']:.2f}  "
              f"MRR@{args.k} {100 * result[f'MRR@{args.k}']:.2f}  fit {t1 - t0:.1f}s  "
              f"recommend {t2 - t1:.1f}s", flush=True)

    print()
    print(format_table(results))
    if args.protocol == "published" and args.k == 20:
        print("\nPublished on the same prefixes (HR@20 / MRR@20 %): "
              + ", ".join(f"{n} {hr:.2f} / {mrr:.2f}" for n, (hr, mrr) in PUBLISHED.items()))


if __name__ == "__main__":
    main()
