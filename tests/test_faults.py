"""Faults of the environment and mistakes in the configuration of a scoring run: each ends in
one line (``error: ...`` and exit code 1 on the command line), nothing is changed silently and
no attempt goes unrecorded.

- a DuckDB file another process holds (open read-only, as an analyst's session, or for
  writing): the writer waits for it, logging who holds it, and either goes on when it is
  released or fails in one line when the lock wait runs out; the failed run is recorded in
  ``<home>/logs/scoring_runs_failed.jsonl`` and the day's rows, run log and quarantine stay as
  they were;
- a malformed warehouse URL, an unreachable PostgreSQL server, a model that does not exist:
  found before Spark starts;
- a rerun refused by a data-quality check keeps the previous quarantine.

    .venv/bin/python -m pytest -q tests/test_faults.py
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from srgnn.config import Settings, SettingError
from srgnn.data.inputs import InputError
from srgnn.data.vocab import Vocabulary
from srgnn.model.network import SRGNN, ModelConfig
from srgnn.serving.predict import Scorer
from srgnn.serving.recommender import Recommender
from srgnn.serving.score import FAILED_RUNS, score_day
from srgnn.warehouse import (DataQualityError, Warehouse, WarehouseLocked,
                             WarehouseUnavailable)
from srgnn.warehouse.runlog import read_failed_runs

from cluster import free_port
from conftest import write_text

ITEMS = ["a", "b", "c", "d", "e"]
DAY = "2024-05-02"
T = 1714608000  # 2024-05-02 00:00:00 UTC

HOLDER = textwrap.dedent("""
    import sys
    import duckdb

    connection = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "read_only")
    print("holding", flush=True)
    sys.stdin.read()  # until the test closes this process's stdin
""")


@contextmanager
def held(path: Path, mode: str):
    """A second process holding the DuckDB file ``path`` open (``read_only`` or ``write``)."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), mode],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "holding"
        yield process
    finally:
        release(process)


def release(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.stdin.close()
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(5)
    model = SRGNN(ModelConfig(num_items=len(ITEMS), hidden_size=8))
    path = tmp_path_factory.mktemp("model") / "recommender"
    Recommender(Scorer(model), Vocabulary(np.array(ITEMS, dtype=object),
                                          np.array([0, 5, 4, 3, 2, 1]))).save(path)
    return str(path)


def clicks_file(folder: Path, bad_lines: int) -> str:
    lines = ["session_id,timestamp,item_id", f"s1,{T},a", f"s1,{T + 60},b", f"s2,{T},c"]
    lines += [f"broken line {i}" for i in range(bad_lines)]
    return write_text(folder / "day.csv", "\n".join(lines) + "\n")


def settings_for(tmp_path: Path, lock_wait: float = 1.0, url: str | None = None) -> Settings:
    return Settings(home=tmp_path / "home", warehouse_lock_wait_seconds=lock_wait,
                    warehouse_url=url or f"duckdb:///{tmp_path / 'home' / 'warehouse.duckdb'}")


def warehouse_file(settings: Settings) -> Path:
    return Path(settings.warehouse[len("duckdb:///"):])


def quarantine_files(settings: Settings) -> dict[str, bytes]:
    folder = settings.home / "quarantine" / "scoring" / f"ds={DAY}"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def logged_runs(settings: Settings) -> list[dict]:
    with Warehouse.connect(settings.warehouse, read_only=True, lock_wait_seconds=30) as warehouse:
        return warehouse.run_query("scoring_runs", start_ds=DAY, end_ds=DAY).to_dicts()


class NoSpark:
    """Passed as ``spark=``: any use of it means the checks let Spark's work start."""

    def __getattr__(self, name):
        raise AssertionError(f"Spark was used (spark.{name}) before the checks failed")


@pytest.fixture
def no_spark(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("Spark was started before the checks failed")

    monkeypatch.setattr("srgnn.data.spark.get_spark", refuse)
    return NoSpark()


# ------------------------------------------------------------------------------------------
# The warehouse alone: a DuckDB file held by another process
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["read_only", "write"])
def test_a_duckdb_writer_gives_up_in_one_line_when_the_file_stays_held(tmp_path, mode, caplog):
    path = tmp_path / "warehouse.duckdb"
    Warehouse.connect(path).close()
    with held(path, mode) as holder:
        started = time.monotonic()
        with pytest.raises(WarehouseLocked) as caught:
            Warehouse.connect(path, lock_wait_seconds=1.5)
        waited = time.monotonic() - started
    assert 1.4 < waited < 5
    message = str(caught.value)
    assert message.startswith(f"the DuckDB file {path} is held by ")
    assert f"(PID {holder.pid})" in message and "\n" not in message
    assert caught.value.holder.endswith(f"(PID {holder.pid})")
    waits = [r.getMessage() for r in caplog.records if r.name == "srgnn.warehouse.locks"]
    assert len(waits) >= 2  # a line before each try again
    assert all(str(path) in line and f"PID {holder.pid}" in line for line in waits)


@pytest.mark.parametrize("mode", ["read_only", "write"])
def test_a_duckdb_writer_opens_the_file_once_the_other_process_lets_go(tmp_path, mode, caplog):
    path = tmp_path / "warehouse.duckdb"
    Warehouse.connect(path).close()
    with held(path, mode) as holder:
        threading.Timer(1.5, release, [holder]).start()
        started = time.monotonic()
        with Warehouse.connect(path, lock_wait_seconds=60) as warehouse:
            waited = time.monotonic() - started
            assert warehouse.list_queries()
    assert 1.0 < waited < 30
    assert any(f"PID {holder.pid}" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------
# Checks before Spark starts
# ------------------------------------------------------------------------------------------
def test_a_malformed_warehouse_url_fails_before_spark(tmp_path, model_dir, no_spark):
    settings = settings_for(tmp_path, url="postgresql+psycopg://srgnn:s3cret@db:port/warehouse")
    with pytest.raises(SettingError) as caught:
        score_day(settings, clicks_file(tmp_path / "clicks", 0), DAY, model_uri=model_dir,
                  spark=no_spark)
    message = str(caught.value)
    assert message.startswith("bad warehouse URL (SRGNN_WAREHOUSE_URL or --warehouse): cannot "
                              "parse the warehouse URL (postgresql+psycopg://...)")
    assert "s3cret" not in message


def test_an_unreachable_postgres_server_fails_before_spark_and_is_recorded(tmp_path, model_dir,
                                                                          no_spark):
    url = f"postgresql+psycopg://srgnn:s3cret@127.0.0.1:{free_port()}/warehouse"
    settings = settings_for(tmp_path, url=url)
    started = time.monotonic()
    with pytest.raises(WarehouseUnavailable) as caught:
        score_day(settings, clicks_file(tmp_path / "clicks", 0), DAY, model_uri=model_dir,
                  spark=no_spark)
    assert time.monotonic() - started < 15
    message = str(caught.value)
    assert message.startswith("cannot open the warehouse postgresql+psycopg://srgnn:***@127.0.0.1:")
    assert "s3cret" not in message and "\n" not in message
    failed_runs = settings.home / FAILED_RUNS
    assert message.endswith(f"(this run is recorded in {failed_runs})")
    assert caught.value.recorded_in == str(failed_runs)
    [record] = read_failed_runs(failed_runs)
    assert (record["ds"], record["status"]) == (DAY, "failed")
    assert "s3cret" not in Path(failed_runs).read_text()


@pytest.mark.parametrize("case", ["no_folder", "empty_folder", "not_registered"])
def test_a_model_that_does_not_exist_fails_before_spark(tmp_path, no_spark, case):
    settings = settings_for(tmp_path)
    (tmp_path / "empty").mkdir()
    model_uri = {"no_folder": str(tmp_path / "no-such-model"), "empty_folder": str(tmp_path / "empty"),
                 "not_registered": "models:/srgnn@champion"}[case]
    expected = {"no_folder": f"no model folder at {model_uri}",
                "empty_folder": f"{model_uri} holds no saved recommender",
                "not_registered": "no model models:/srgnn@champion in the MLflow registry at "
                                  f"sqlite:///{(settings.home / 'mlflow.db').resolve()}"}[case]
    with pytest.raises(InputError) as caught:
        score_day(settings, clicks_file(tmp_path / "clicks", 0), DAY, model_uri=model_uri,
                  spark=no_spark)
    assert str(caught.value).startswith(expected) and "\n" not in str(caught.value)
    # The warehouse was reachable: the failed attempt is in its run log.
    [run] = logged_runs(settings)
    assert run["status"] == "failed" and expected in run["message"]


# ------------------------------------------------------------------------------------------
# A locked warehouse and failed reruns keep the day as it was, quarantine included
# ------------------------------------------------------------------------------------------
@pytest.mark.spark
@pytest.mark.parametrize("mode", ["read_only", "write"])
def test_a_rerun_held_past_the_lock_wait_fails_in_one_line_and_keeps_the_day(
        spark, tmp_path, model_dir, mode, caplog):
    settings = settings_for(tmp_path, lock_wait=1.0)
    first = score_day(settings, clicks_file(tmp_path / "first", 2), DAY, model_uri=model_dir,
                      spark=spark)
    assert first["quarantined"] == 2
    quarantine = quarantine_files(settings)
    with held(warehouse_file(settings), mode) as holder:
        with pytest.raises(WarehouseLocked) as caught:
            score_day(settings, clicks_file(tmp_path / "rerun", 0), DAY, model_uri=model_dir,
                      spark=spark)
    message = str(caught.value)
    failed_runs = settings.home / FAILED_RUNS
    assert message.startswith(f"the DuckDB file {warehouse_file(settings)} is held by ")
    assert f"(PID {holder.pid})" in message and "\n" not in message
    assert message.endswith(f"(this run is recorded in {failed_runs})")
    assert any("is locked now" in r.getMessage() for r in caplog.records)  # seen by the checks

    # Nothing of the failed rerun is visible: rows, run log and quarantine are the first run's.
    assert quarantine_files(settings) == quarantine
    assert not (settings.home / "quarantine" / "scoring" / "_staging").exists()
    [run] = logged_runs(settings)
    assert (run["status"], run["quarantined"], run["clicks_read"]) == ("succeeded", 2, 5)
    [record] = read_failed_runs(failed_runs)
    assert {k: record[k] for k in ("ds", "status", "model_version", "clicks_read",
                                   "quarantined", "sessions_in")} == {
        "ds": DAY, "status": "failed", "model_version": "srgnn:local", "clicks_read": 3,
        "quarantined": 0, "sessions_in": 2}
    assert record["message"].startswith("WarehouseLocked: the DuckDB file")


@pytest.mark.spark
@pytest.mark.parametrize("mode", ["read_only", "write"])
def test_a_lock_released_during_the_wait_lets_the_run_finish(spark, tmp_path, model_dir, mode,
                                                              monkeypatch, caplog):
    settings = settings_for(tmp_path, lock_wait=60)
    Warehouse.connect(settings.warehouse).close()
    real_connect = Warehouse.connect.__func__

    with held(warehouse_file(settings), mode) as holder:
        def connect_then_release_soon(cls, url, **kwargs):
            if kwargs.get("lock_wait_seconds") == 60:  # the load's connect: let go in 1.5 s
                threading.Timer(1.5, release, [holder]).start()
            return real_connect(cls, url, **kwargs)

        monkeypatch.setattr(Warehouse, "connect", classmethod(connect_then_release_soon))
        result = score_day(settings, clicks_file(tmp_path / "clicks", 1), DAY,
                           model_uri=model_dir, spark=spark)
    assert (result["sessions_in"], result["quarantined"], result["clicks_read"]) == (2, 1, 4)
    waits = [r.getMessage() for r in caplog.records if r.name == "srgnn.warehouse.locks"]
    assert waits and all(f"PID {holder.pid}" in line for line in waits)
    monkeypatch.undo()
    [run] = logged_runs(settings)
    assert run["status"] == "succeeded"
    assert len(quarantine_files(settings)) >= 1
    assert not (settings.home / FAILED_RUNS).exists()


@pytest.mark.spark
def test_a_rerun_refused_by_a_check_keeps_the_previous_quarantine(spark, tmp_path, model_dir,
                                                                  monkeypatch):
    settings = settings_for(tmp_path)
    score_day(settings, clicks_file(tmp_path / "first", 3), DAY, model_uri=model_dir, spark=spark)
    quarantine = quarantine_files(settings)

    def refuse(self, table, ds, expected_k, expected_rows):
        raise DataQualityError("ranks_complete", ds, ("session_id",), [("s1",)], 1)

    monkeypatch.setattr(Warehouse, "_run_checks", refuse)
    with pytest.raises(DataQualityError, match="rolled back"):
        score_day(settings, clicks_file(tmp_path / "rerun", 0), DAY, model_uri=model_dir,
                  spark=spark)
    monkeypatch.undo()
    assert quarantine_files(settings) == quarantine
    assert not (settings.home / "quarantine" / "scoring" / "_staging").exists()
    runs = {r["status"]: r for r in logged_runs(settings)}
    assert (runs["succeeded"]["quarantined"], runs["failed"]["quarantined"]) == (3, 0)
    assert (runs["succeeded"]["clicks_read"], runs["failed"]["clicks_read"]) == (6, 3)
    assert not (settings.home / FAILED_RUNS).exists()  # the run log took the failure


# ------------------------------------------------------------------------------------------
# The command line: one line, exit code 1, no stack trace
# ------------------------------------------------------------------------------------------
def run_score(home: Path, *arguments: str, environ: dict | None = None):
    from srgnn.cli import cli

    return CliRunner().invoke(cli, ["--home", str(home), "score", *arguments],
                              env={"SRGNN_WAREHOUSE_URL": None, **(environ or {})})


def assert_one_error_line(result, starts: str) -> str:
    assert result.exit_code == 1, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert errors[0].startswith(f"error: {starts}"), errors[0]
    return errors[0]


@pytest.mark.parametrize("case", ["malformed_url", "unreachable_postgres", "missing_model"])
def test_the_score_command_reports_a_bad_configuration_in_one_line(tmp_path, model_dir,
                                                                   monkeypatch, case):
    def refuse(*args, **kwargs):
        raise AssertionError("Spark was started before the checks failed")

    monkeypatch.setattr("srgnn.data.spark.get_spark", refuse)
    clicks = clicks_file(tmp_path / "clicks", 0)
    warehouse, model, starts = {
        "malformed_url": ("postgresql://u:s3cret@db:port/w", model_dir, "bad warehouse URL"),
        "unreachable_postgres": (f"postgresql://u:s3cret@127.0.0.1:{free_port()}/w", model_dir,
                                 "cannot open the warehouse postgresql://u:***@127.0.0.1:"),
        "missing_model": (f"duckdb:///{tmp_path / 'w.duckdb'}", str(tmp_path / "nowhere"),
                          f"no model folder at {tmp_path / 'nowhere'}"),
    }[case]
    result = run_score(tmp_path / "home", "--clicks", clicks, "--ds", DAY, "--model", model,
                       "--warehouse", warehouse)
    assert_one_error_line(result, starts)
    assert "s3cret" not in result.output


@pytest.mark.spark
def test_the_score_command_reports_a_held_warehouse_in_one_line(spark, tmp_path, model_dir):
    home = tmp_path / "home"
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    Warehouse.connect(url).close()
    clicks = clicks_file(tmp_path / "clicks", 1)
    with held(tmp_path / "w.duckdb", "read_only") as holder:
        result = run_score(home, "--clicks", clicks, "--ds", DAY, "--model", model_dir,
                           "--warehouse", url,
                           environ={"SRGNN_WAREHOUSE_LOCK_WAIT_SECONDS": "1"})
    line = assert_one_error_line(result, f"the DuckDB file {tmp_path / 'w.duckdb'} is held by ")
    assert f"(PID {holder.pid})" in line
    assert line.endswith(f"(this run is recorded in {home / FAILED_RUNS})")
    [record] = read_failed_runs(home / FAILED_RUNS)
    assert (record["status"], record["clicks_read"], record["quarantined"]) == ("failed", 4, 1)
