"""srgnn score --engine spark on a real Spark standalone cluster (the ``standalone_cluster``
fixture, tests/cluster.py) with ``spark.driver.maxResultSize`` far below the day's rows: the
executors write the scored rows as Parquet and the driver collects none of them, so the day
is scored and loaded whole where collecting its rows to the driver fails."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import torch

from srgnn.data.vocab import Vocabulary
from srgnn.model.network import SRGNN, ModelConfig
from srgnn.serving.predict import Scorer
from srgnn.serving.recommender import Recommender
from srgnn.serving.rows import recommend_table
from srgnn.warehouse import Warehouse

ITEMS = [f"item{i}" for i in range(30)]
DAY = "2024-05-02"
T = 1714608000  # 2024-05-02 00:00:00 UTC
SESSIONS = 20_000
TOP_K = 10  # 200,000 rows: about 11 MB as Arrow, against a 2 MB limit
MAX_RESULT_SIZE = "2m"


def day_of_clicks(path):
    """Three clicks per session; every 10th session adds a click on an unknown item, every 7th
    repeats its first click exactly. Returns the sessions' known items and the counts."""
    lines, sessions = ["session_id,timestamp,item_id"], {}
    unknown = duplicates = 0
    for s in range(SESSIONS):
        sid = f"s{s:05d}"
        items = [ITEMS[(s * 7 + j * 11) % len(ITEMS)] for j in range(3)]
        lines += [f"{sid},{T + 60 * j},{item}" for j, item in enumerate(items)]
        if s % 10 == 0:
            lines.append(f"{sid},{T + 500},unknown-{s}")
            unknown += 1
        if s % 7 == 0:
            lines.append(f"{sid},{T},{items[0]}")
            duplicates += 1
        sessions[sid] = items
    path.write_text("\n".join(lines) + "\n")
    return sessions, {"clicks_read": len(lines) - 1, "duplicates_dropped": duplicates,
                      "unknown_clicks_skipped": unknown, "sessions_in": SESSIONS,
                      "rows_written": SESSIONS * TOP_K, "quarantined": 0}


@pytest.mark.slow
def test_spark_scoring_on_a_cluster_writes_rows_on_the_executors(standalone_cluster, tmp_path):
    torch.manual_seed(5)
    model = SRGNN(ModelConfig(num_items=len(ITEMS), hidden_size=16))
    popularity = np.arange(len(ITEMS) + 1)[::-1].copy()
    model_dir = tmp_path / "recommender"
    Recommender(Scorer(model), Vocabulary(np.array(ITEMS, dtype=object), popularity)).save(model_dir)
    sessions, expected_counts = day_of_clicks(tmp_path / "day.csv")

    conf = tmp_path / "spark-conf"  # Spark's own configuration folder: spark-defaults.conf
    conf.mkdir()
    (conf / "spark-defaults.conf").write_text(f"spark.driver.maxResultSize {MAX_RESULT_SIZE}\n")
    env = standalone_cluster.env(SRGNN_HOME=str(tmp_path / "home"), SPARK_CONF_DIR=str(conf),
                                 SRGNN_SPARK_DRIVER_MEMORY="1g", SRGNN_SPARK_EXECUTOR_MEMORY="600m")
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    before = {app["id"] for app in standalone_cluster.completed_apps()}
    result = subprocess.run(
        [sys.executable, "-m", "srgnn.cli", "score", "--clicks", str(tmp_path / "day.csv"),
         "--ds", DAY, "--model", str(model_dir), "--engine", "spark", "--top-k", str(TOP_K),
         "--warehouse", url],
        env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    lines = result.stdout.splitlines()  # log lines, then what the command prints
    [first] = [i for i, line in enumerate(lines) if line.startswith(f"scored {DAY} with ")]
    assert lines[first].startswith(f"scored {DAY} with srgnn:local (spark, "), result.stdout
    printed = dict(line.split(None, 1) for line in lines[first + 1:first + 9])
    assert {k: int(printed[k].replace(",", "")) for k in expected_counts} == expected_counts
    assert printed["fallbacks"].strip() == "0"
    # How top-K was found comes from the executors' Python workers (exact: 30 items).
    [topk] = [json.loads(line.split(None, 1)[1]) for line in lines if line.strip().startswith("top-k ")]
    assert topk["topk_index"] == "exact" and topk["items"] == len(ITEMS)
    assert topk["workers"] >= 1, topk  # a report from each Python worker that scored
    apps = [app for app in standalone_cluster.completed_apps() if app["id"] not in before]
    assert [app["name"] for app in apps] == ["srgnn-score"], apps

    # The warehouse holds what the model gives every session, computed here in memory.
    recommender = Recommender.load(model_dir)
    table = pa.table({"session_id": list(sessions), "items": list(sessions.values())})
    want = recommend_table(recommender, table, TOP_K, "srgnn:local")
    with Warehouse.connect(url, read_only=True) as warehouse:
        got = warehouse.run_query("day_recommendations", ds=DAY).to_dicts()
    assert len(got) == SESSIONS * TOP_K
    assert sorted((r["session_id"], r["rank"], r["item_id"], r["model_version"]) for r in got) == \
        sorted(zip(want["session_id"].to_pylist(), want["rank"].to_pylist(),
                   want["item_id"].to_pylist(), want["model_version"].to_pylist()))
    scores = {(r["session_id"], r["rank"]): r["score"] for r in got}
    assert max(abs(scores[(s, r)] - v) for s, r, v in zip(
        want["session_id"].to_pylist(), want["rank"].to_pylist(), want["score"].to_pylist())) < 1e-4
    # The staged rows are gone with the run.
    assert not (tmp_path / "home" / "scoring" / "_staging").exists()

    # The limit is in force: collecting the same number of rows to the driver fails.
    collect = ("from srgnn.config import Settings\nfrom srgnn.data.spark import get_spark\n"
               "spark = get_spark(Settings.from_env(), app_name='srgnn-collect')\n"
               f"spark.range({SESSIONS * TOP_K}).selectExpr('id', 'uuid() AS u').toArrow()\n")
    refused = subprocess.run([sys.executable, "-c", collect], env=env, capture_output=True,
                             text=True, timeout=600)
    assert refused.returncode != 0 and "maxResultSize" in refused.stderr, refused.stderr[-3000:]
