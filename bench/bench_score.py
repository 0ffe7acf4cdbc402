"""Benchmark: nightly scoring of Diginetica's 60,858 test prefixes (prints a table; not a test).

    .venv/bin/python bench/bench_score.py                    # quick model trained first
    .venv/bin/python bench/bench_score.py --model models:/srgnn/3 --home var

Each prefix in ``score_clicks.csv.gz`` is its own session; ``targets.csv.gz`` holds the next
item of each. The script

1. gets a model on the Diginetica vocabulary: ``--model`` or a quick training
   (``srgnn train`` on ``train_clicks.csv.gz``, ``--max-examples`` per epoch);
2. runs ``srgnn score`` for the day with the in-process engine and with the Spark engine
   (Spark local), in child processes, timing each and sampling the peak memory of the
   process tree;
3. computes HR@20 / MRR@20 from the warehouse rows against the targets, next to what
   ``srgnn evaluate --clicks score_clicks.csv.gz --targets targets.csv.gz`` reports for the
   same model: the figures must be equal.

Throughput is reported twice: the whole command (Spark start, reading, warehouse load
included) and the scoring stage alone (model + top-K, measured in-process).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import DIGINETICA as DATA, machine, run_measured

DAY = "2020-10-13"  # the day after the training clicks end


def read_prefixes():
    clicks = pd.read_csv(DATA / "score_clicks.csv.gz", dtype={"session_id": str, "item_id": str})
    clicks = clicks.sort_values(["session_id", "timestamp"], kind="stable")
    sessions = clicks.groupby("session_id", sort=False)["item_id"].agg(list)
    targets = pd.read_csv(DATA / "targets.csv.gz", dtype=str).set_index("session_id")["item_id"]
    return sessions, targets


def metrics_from_lists(top: dict[str, list[str]], targets: pd.Series, k: int = 20):
    """HR@K / MRR@K (percent) of stored top-K lists, computed plainly from the rows."""
    from srgnn.evaluation.metrics import hit_rate_at_k, mrr_at_k

    ranks = []
    for sid, target in targets.items():
        items = top.get(sid, [])[:k]
        ranks.append(items.index(target) + 1 if target in items else 0)
    ranks = np.asarray(ranks)
    return 100 * hit_rate_at_k(ranks, k), 100 * mrr_at_k(ranks, k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model URI; default: train a quick one")
    parser.add_argument("--home", default=None)
    parser.add_argument("--max-examples", type=int, default=100_000, help="quick model: examples per epoch")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} not found")
    home = Path(args.home or tempfile.mkdtemp(prefix="bench-score-")).resolve()
    env = {**os.environ, "SRGNN_HOME": str(home)}
    srgnn = [sys.executable, "-m", "srgnn.cli"]

    model = args.model
    if model is None:
        t = time.time()
        run_measured(srgnn + ["train", "--clicks", str(DATA / "train_clicks.csv.gz"), "--min-item-support", "1",
                              "--test-days", "0", "--valid-days", "3", "--epochs", str(args.epochs),
                              "--max-examples-per-epoch", str(args.max_examples), "--out", str(home / "run")], env)
        print(f"quick model trained in {time.time() - t:.0f} s")
        model = "models:/srgnn@champion"

    rows = []
    for engine in ("local", "spark"):
        warehouse = f"duckdb:///{home / f'warehouse-{engine}.duckdb'}"
        run = run_measured(
            srgnn + ["score", "--clicks", str(DATA / "score_clicks.csv.gz"), "--ds", DAY, "--model", model,
                     "--engine", engine, "--warehouse", warehouse], env)
        rows.append((engine, run.seconds, run.peak_gib, warehouse, run.output))

    # The scoring stage alone, in this process: model + top-K over the whole catalogue.
    os.environ["SRGNN_HOME"] = str(home)
    from srgnn.config import Settings
    from srgnn.serving.models import resolve_model
    from srgnn.serving.rows import recommend_table

    import pyarrow as pa

    sessions, targets = read_prefixes()
    recommender, ref = resolve_model(Settings.from_env(), model)
    table = pa.table({"session_id": pa.array(sessions.index.to_numpy(), pa.string()),
                      "items": pa.array(sessions.to_list(), pa.list_(pa.string()))})
    recommend_table(recommender, table.slice(0, 2000), 20, ref.label)  # warm-up
    # The default precision (bfloat16 candidates + float32 certificate where the CPU has
    # native bfloat16) next to plain float32 over every item, on the same prefixes.
    ranker, stage = recommender.ranker, {}
    loaded_precision = ranker.precision
    for precision in dict.fromkeys([ranker.precision, "float32"]):
        ranker.precision, ranker.certified, ranker.rescored = precision, 0, 0
        t = time.time()
        out = recommend_table(recommender, table, 20, ref.label)
        stage[precision] = (time.time() - t, ranker.certified, ranker.rescored,
                            out.column("item_id").to_numpy(zero_copy_only=False).reshape(len(sessions), -1))

    # What `srgnn evaluate --clicks ... --targets ...` reports for the same model and prefixes:
    # the prefixes read as scoring reads a day, then the one evaluation path.
    from srgnn.data.spark import get_spark
    from srgnn.evaluation import heldout
    from srgnn.evaluation.evaluate import evaluate

    ranker.precision = loaded_precision  # the model as loaded, as the command evaluates it
    held_out = heldout.from_clicks(get_spark(Settings.from_env(), app_name="bench-score-evaluate"),
                                   str(DATA / "score_clicks.csv.gz"), str(DATA / "targets.csv.gz"),
                                   recommender.vocabulary)
    evaluated = evaluate(recommender, held_out, 20)
    eval_hr, eval_mrr = 100 * evaluated["HR@20"], 100 * evaluated["MRR@20"]

    from srgnn.warehouse import Warehouse

    print()
    print(f"model {ref.uri} ({recommender.num_items:,} items), {len(sessions):,} sessions, top-20; "
          f"{machine()}")
    print(f"{'path':<34} {'wall s':>8} {'sessions/s':>11} {'peak GiB':>9} {'HR@20 %':>8} {'MRR@20 %':>9}")
    for engine, seconds, peak, warehouse, _ in rows:
        with Warehouse.connect(warehouse, read_only=True) as wh:
            stored = wh.run_query("day_recommendations", ds=DAY)
        frame = pd.DataFrame(stored.rows, columns=stored.columns).sort_values(["session_id", "rank"])
        top = frame.groupby("session_id")["item_id"].agg(list).to_dict()
        hr, mrr = metrics_from_lists(top, targets)
        print(f"{'srgnn score --engine ' + engine:<34} {seconds:>8.1f} {len(sessions) / seconds:>11,.0f} "
              f"{peak:>9.2f} {hr:>8.2f} {mrr:>9.2f}")
    for precision, (seconds, certified, rescored, _) in stage.items():
        print(f"{'scoring stage only, ' + precision:<34} {seconds:>8.1f} {len(sessions) / seconds:>11,.0f}")
    if len(stage) == 2:
        (_, certified, rescored, fast_items), (*_, exact_items) = stage.values()
        differ = int((fast_items != exact_items).any(axis=1).sum())
        print(f"  bfloat16: {certified:,} distinct prefixes certified, {rescored:,} rescored in float32; "
              f"{differ} of {len(sessions):,} top-20 lists differ from float32's (order of equal scores)")
    print(f"{'srgnn evaluate --clicks --targets':<34} {'':>8} {'':>11} {'':>9} {eval_hr:>8.2f} {eval_mrr:>9.2f}")
    print("target: >= 3,000 sessions/s in-process; warehouse HR/MRR must equal the evaluation path's")
    for engine, *_, out in rows:
        stages = [line.split("stage seconds", 1)[1].strip() for line in out.splitlines()
                  if "stage seconds" in line]
        if stages:  # load_model runs in a thread beside Spark's start and read
            print(f"stage seconds, --engine {engine}: {stages[-1]}")


if __name__ == "__main__":
    main()
