"""End-to-end runs of both DAGs with ``dag.test()`` on generated clicks (slow, about 2 minutes).

One module fixture builds a private home (Airflow metadata in SQLite, the MLflow registry,
the run folders, the DuckDB warehouses), generates seven days of clicks with malformed lines,
runs ``airflow db migrate`` and then, in one fresh interpreter (``tests/airflow_env.py`` says
why the pytest process cannot host Airflow here):

1. the training DAG on the first four days (prepare with Spark local -> train one epoch ->
   evaluate -> gate -> publish the champion);
2. the scoring DAG for the fifth day, into the default warehouse;
3. the scoring DAG for the fifth, sixth and seventh days and the sixth once more, into a
   second warehouse: a three-day backfill with a rerun.

The tests read what those runs left behind (registry, run folder, warehouse tables) and
compare the warehouse with the day files as read here with the ``csv`` module, so that a
session lost, duplicated or invented by the pipeline shows up.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

import airflow_env

pytestmark = pytest.mark.slow

TOP_K = 10  # not the DAG's default (20), to see the environment reach the scoring params
TRAIN_DAYS = ["2026-11-22", "2026-11-23", "2026-11-24", "2026-11-25"]
SCORE_DAYS = ["2026-11-26", "2026-11-27", "2026-11-28"]
RERUN_DAY = SCORE_DAYS[1]
CHAMPION_URI = "srgnn://models/srgnn/champion"
# Epoch seconds from 2001 to 2096: well-formed timestamps of the generated data.
EPOCH_RANGE = (1_000_000_000, 4_000_000_000)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """Train once, score one day into one warehouse and backfill three days into another."""
    from srgnn.data.synth import SynthConfig, write_clickstream

    home = tmp_path_factory.mktemp("e2e-home").resolve()
    train_clicks, score_clicks = home / "data" / "train", home / "data" / "score"
    generated = write_clickstream(
        str(train_clicks),
        SynthConfig(sessions=3000, items=300, days=7, end_date=SCORE_DAYS[-1], seed=7),
        by_day=True,
    )
    assert generated.days == TRAIN_DAYS + SCORE_DAYS
    score_clicks.mkdir(parents=True)
    for day in SCORE_DAYS:  # the nights to score are not part of the training data
        shutil.move(str(train_clicks / f"ds={day}"), str(score_clicks / f"ds={day}"))

    backfill_warehouse = home / "backfill.duckdb"
    env = airflow_env.environment(home, SRGNN_SCORING_CLICKS=str(score_clicks), SRGNN_TOP_K=str(TOP_K))
    with pytest.MonkeyPatch.context() as patch:
        airflow_env.apply(patch, env)  # this process reads the same stores (Settings.from_env())

        airflow_env.migrate(env)
        runs = airflow_env.run_dags(env, [
            {"dag": "training", "conf": {"clicks": str(train_clicks), "format": "csv", "test_days": 1,
                                         "valid_days": 1, "min_item_support": 2, "epochs": 1,
                                         "candidates": "srgnn"}},  # SR-GNN, whatever wins
            {"dag": "scoring", "logical_date": SCORE_DAYS[0]},
            *[{"dag": "scoring", "logical_date": day,
               "env": {"SRGNN_WAREHOUSE_URL": f"duckdb:///{backfill_warehouse}"}}
              for day in [*SCORE_DAYS, RERUN_DAY]],
        ], timeout=480)  # the training DAG refits twice (train + valid, then every day)
        # The training run's `train` task once more, in the same DAG run: a retry.
        retried = airflow_env.test_task(env, "srgnn_training", "train", runs[0]["run_id"])
        yield SimpleNamespace(retried=retried,
            home=home, score_clicks=score_clicks, training=runs[0], scoring=runs[1], backfill=runs[2:],
            warehouse=home / "warehouse.duckdb", backfill_warehouse=backfill_warehouse,
        )


# -- independent readings ---------------------------------------------------------------------

def day_file_sessions(clicks_folder: Path, ds: str) -> tuple[set[str], int]:
    """Session ids with at least one well-formed click in a day's file, and the malformed lines."""
    sessions, malformed = set(), 0
    with open(clicks_folder / f"ds={ds}" / "clicks.csv", newline="") as handle:
        rows = csv.reader(handle)
        assert next(rows) == ["session_id", "timestamp", "item_id"]
        for row in rows:
            well_formed = (len(row) == 3 and row[0].strip() != "" and row[2].strip() != ""
                           and row[1].isdigit() and EPOCH_RANGE[0] <= int(row[1]) < EPOCH_RANGE[1])
            if well_formed:
                sessions.add(row[0])
            else:
                malformed += 1
    return sessions, malformed


def query(database: Path, sql: str, *params) -> list[tuple]:
    import duckdb

    with duckdb.connect(str(database), read_only=True) as connection:
        return connection.execute(sql, list(params)).fetchall()


def scoring_log(database: Path, ds: str) -> list[dict]:
    """The day's rows of the run log, through the named query users run."""
    from srgnn.warehouse import Warehouse

    with Warehouse.connect(f"duckdb:///{database}", read_only=True) as warehouse:
        return warehouse.run_query("scoring_runs", start_ds=ds, end_ds=ds).to_dicts()


def per_session(database: Path, ds: str) -> dict[str, tuple]:
    """session_id -> (rows, distinct ranks, min rank, max rank, distinct items, model versions)."""
    rows = query(database, """
        SELECT session_id, COUNT(*), COUNT(DISTINCT rank), MIN(rank), MAX(rank), COUNT(DISTINCT item_id),
               LIST(DISTINCT model_version), LIST(DISTINCT model_name)
        FROM recommendations WHERE ds = CAST(? AS DATE) GROUP BY session_id""", ds)
    return {row[0]: row[1:] for row in rows}


def champion():
    """The registry's champion version, through an MLflow client on this test's store."""
    import mlflow

    from srgnn.serving import registry
    from srgnn.config import Settings

    uri = Settings.from_env().tracking_uri
    tracking = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    return tracking, registry.champion_version(tracking)


def assert_day_is_complete(database: Path, clicks_folder: Path, ds: str, version: str) -> int:
    """Every valid session of the day has TOP_K distinct items ranked 1..TOP_K; returns the sessions."""
    expected, _ = day_file_sessions(clicks_folder, ds)
    stored = per_session(database, ds)
    assert expected, f"no well-formed session in the generated file of {ds}"
    assert set(stored) == expected
    shapes = {session: counts[:5] for session, counts in stored.items()}
    assert set(shapes.values()) == {(TOP_K, TOP_K, 1, TOP_K, TOP_K)}
    versions = {v for counts in stored.values() for v in counts[5]}
    assert f"srgnn:{version}" in versions
    # fallback:iknn only where the training routed short sessions to item-KNN
    assert versions <= {f"srgnn:{version}", "fallback:pop", "fallback:iknn"}
    assert all(len(counts[5]) == 1 for counts in stored.values())  # one source per session
    assert {n for counts in stored.values() for n in counts[6]} == {"srgnn"}
    return len(expected)


# -- training -----------------------------------------------------------------------------------

def test_training_dag_run_succeeds_and_publishes_the_champion(e2e):
    run = e2e.training
    assert run["state"] == "success"
    assert run["tasks"] == {"prepare": "success", "train": "success", "evaluate": "success",
                            "gate": "success", "final_refit": "success",
                            "publish_champion": "success"}
    _, version = champion()
    assert version is not None
    assert [event["uri"] for event in run["asset_events"]] == [CHAMPION_URI]
    event = run["asset_events"][0]
    assert event["task_id"] == "publish_champion"
    assert event["extra"]["version"] == str(version.version)
    assert event["extra"]["model_uri"] == f"models:/srgnn/{version.version}"
    assert event["extra"]["run_id"] == version.run_id


def test_training_registers_a_champion_through_the_gate(e2e):
    import pyarrow.parquet as pq

    tracking, version = champion()
    assert version is not None, "no model version holds the alias 'champion'"
    # A fresh registry: the first model (version 1, refitted on train + valid) wins the gate on
    # the test day, and the final refit on every day (version 2) becomes the champion.
    assert str(version.version) == "2"
    candidate = tracking.get_model_version("srgnn", "1")
    assert candidate.tags["trained_on"] == "train+valid" and candidate.tags["final_refit.version"] == "2"
    assert version.tags["trained_on"] == "train+valid+test" and version.tags["refit_of"] == "1"
    assert version.tags["trained_days"] == f"{TRAIN_DAYS[0]}..{TRAIN_DAYS[-1]}"
    assert candidate.tags["trained_days"] == f"{TRAIN_DAYS[0]}..{TRAIN_DAYS[-2]}"
    run_dirs = sorted((e2e.home / "runs" / "srgnn_training").iterdir())
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]
    assert run_dir.name.startswith("manual__") and not {":", "+"} & set(run_dir.name)
    for split in ("train", "valid", "test"):
        assert list((run_dir / "graphs" / split).glob("*.parquet")), f"no {split} graph Parquet in {run_dir}"
    graphs = pq.read_table(run_dir / "graphs" / "train")
    summary = json.loads((run_dir / "summary.json").read_text())  # counted by Spark
    assert graphs.num_rows == summary["splits"]["train"]["examples"] > 1000
    assert {"nodes", "alias", "edge_src", "edge_dst", "target"} <= set(graphs.schema.names)
    test_examples = pq.read_table(run_dir / "graphs" / "test").num_rows
    assert test_examples == summary["splits"]["test"]["examples"] > 100

    tags = version.tags
    assert tags["gate.decision"] == "first model"
    assert tags["gate.reason"]
    assert tags["gate.split"] == "test"
    assert int(tags["gate.examples"]) == test_examples
    assert 0.0 < float(tags["gate.candidate_hr_at_20"]) <= 1.0
    assert 0.0 < float(tags["gate.candidate_mrr_at_20"]) <= float(tags["gate.candidate_hr_at_20"])
    # The champion was trained on this run folder, and its params say what it was trained on.
    mlflow_run = tracking.get_run(version.run_id)
    assert Path(mlflow_run.data.tags["run_dir"]) == run_dir
    assert mlflow_run.data.params["epochs"] == "1"
    assert mlflow_run.data.params["prepare.min_item_support"] == "2"
    assert int(mlflow_run.data.params["data.train_examples"]) == graphs.num_rows
    assert mlflow_run.data.tags["trained_on"] == "train+valid+test"


def test_retrying_train_in_the_same_run_registers_no_second_version(e2e):
    retried = e2e.retried
    assert retried.returncode == 0, retried.stderr[-3000:]
    assert "already registered srgnn version 1" in retried.stdout + retried.stderr
    tracking, version = champion()
    # version 1 the candidate, version 2 its final refit: no third
    assert sorted(str(v.version) for v in tracking.search_model_versions("name='srgnn'")) == ["1", "2"]
    assert str(version.version) == "2"


# -- scoring one day ---------------------------------------------------------------------------

def test_scoring_dag_writes_top_k_for_every_session_of_the_day(e2e):
    ds = SCORE_DAYS[0]
    run = e2e.scoring
    assert (run["state"], run["tasks"], run["logical_date"][:10]) == (
        "success", {"wait_for_clicks": "success", "score": "success"}, ds)
    _, version = champion()
    sessions = assert_day_is_complete(e2e.warehouse, e2e.score_clicks, ds, version.version)
    assert query(e2e.warehouse, "SELECT DISTINCT CAST(ds AS VARCHAR) FROM recommendations") == [(ds,)]

    _, malformed = day_file_sessions(e2e.score_clicks, ds)
    assert malformed > 0  # the generated file has bad lines: the quarantine is exercised
    (logged,) = scoring_log(e2e.warehouse, ds)
    assert logged["status"] == "succeeded"
    assert logged["model_version"] == f"srgnn:{version.version}"
    assert logged["sessions_in"] == logged["sessions_scored"] == sessions
    assert logged["quarantined"] == malformed
    assert logged["expected_k"] == TOP_K
    assert logged["rows_written"] == sessions * TOP_K
    assert logged["rows_replaced"] == 0
    fallbacks = query(e2e.warehouse, "SELECT COUNT(DISTINCT session_id) FROM recommendations "
                                     "WHERE model_version LIKE 'fallback:%'")[0][0]
    assert logged["fallbacks"] == fallbacks


# -- backfill ----------------------------------------------------------------------------------

def test_three_day_backfill_and_rerun_leave_one_copy_of_each_day(e2e):
    runs = e2e.backfill
    assert [(run["state"], run["logical_date"][:10]) for run in runs] == \
        [("success", day) for day in [*SCORE_DAYS, RERUN_DAY]]
    assert len({run["run_id"] for run in runs}) == 4  # the rerun was a DAG run of its own
    _, version = champion()

    database = e2e.backfill_warehouse
    assert [row[0] for row in query(database, "SELECT DISTINCT CAST(ds AS VARCHAR) FROM recommendations "
                                              "ORDER BY 1")] == SCORE_DAYS
    assert query(database, "SELECT ds, session_id, rank, COUNT(*) FROM recommendations "
                           "GROUP BY ds, session_id, rank HAVING COUNT(*) > 1") == []
    for ds in SCORE_DAYS:
        sessions = assert_day_is_complete(database, e2e.score_clicks, ds, version.version)
        stored = query(database, "SELECT COUNT(*) FROM recommendations WHERE ds = CAST(? AS DATE)", ds)[0][0]
        assert stored == sessions * TOP_K, ds

    # The run log keeps both attempts of the rerun day; the second replaced the first's rows.
    for ds in SCORE_DAYS:
        logged = scoring_log(database, ds)  # newest first
        assert {row["status"] for row in logged} == {"succeeded"}
        if ds != RERUN_DAY:
            assert [row["rows_replaced"] for row in logged] == [0]
    rerun, first = scoring_log(database, RERUN_DAY)
    assert first["rows_replaced"] == 0
    assert rerun["rows_replaced"] == first["rows_written"] == rerun["rows_written"]

    # The one-day scoring run went to the default warehouse only.
    assert query(e2e.warehouse, "SELECT DISTINCT CAST(ds AS VARCHAR) FROM recommendations") == [(SCORE_DAYS[0],)]
