"""Nightly scoring: one day's raw clicks -> top-K recommendations in the warehouse.

    srgnn score --clicks PATH --ds YYYY-MM-DD [--model URI] [--top-k 20] [--engine local|spark]
    spark-submit jobs/score.py --clicks PATH --ds YYYY-MM-DD [...]

Steps: check, before Spark starts, the input files, the warehouse URL, that the warehouse
opens (a DuckDB file locked at that moment is no error yet: the load waits for it) and that
the model exists (:func:`locate_model`: the registry version an alias points to, or the local
folder); read the day's clicks with the same readers and quarantine as ``prepare``; order each
session's clicks and drop exact duplicates (:func:`srgnn.data.etl.sessionize`); score every
session with the model's :class:`~srgnn.serving.recommender.Recommender` (unknown items skipped and
counted; the clicks' times go along, for a model with ``temporal_edges`` to weigh its edges by
the gaps prepare computes; sessions without a known item get the popularity fallback; with a ``category``
column, a session whose last click is on an unknown item of a category the model knows gets
that category's popular items first, ``fallback:category``); replace the day in the
warehouse in one transaction, with the SQL checks, and log the run.

What a run reads and drops is counted, in its result and in ``scoring_runs``: ``clicks_read``
(input rows: parsed clicks plus quarantined rows), ``quarantined``, ``duplicates_dropped``
(exact duplicate clicks), ``unknown_clicks`` (clicks on items the model does not know) and
``category_fallbacks`` (sessions answered by ``fallback:category``, also in ``fallbacks``).

The day's quarantine (``<home>/quarantine/scoring/ds=DAY``) is replaced together with its
rows: it is written to a staging folder and moved into place only after the warehouse
committed the day, so a failed rerun leaves the previous quarantine, rows and counts as they
were. A failed run is logged in ``scoring_runs`` (by the warehouse, or here when it failed
before the load), or, when the warehouse cannot be opened, appended to
``<home>/logs/scoring_runs_failed.jsonl`` (:mod:`srgnn.warehouse.runlog`), which the error
names.

Two engines give the same rows, written as Parquet files into the run's staging folder
``<home>/scoring/_staging/ds=DAY-<id>/`` (removed when the run ends, committed or not) and
loaded from there by the warehouse (:mod:`srgnn.serving.rows`); no process holds the day:

``local``
    Spark writes the sessions there as Parquet; this process scores them ``batch_sessions``
    at a time with torch (all cores) and appends each batch's rows to Parquet files.
``spark``
    ``mapInArrow`` over the sessions, written by the executors (``.write.parquet``); each
    Python worker loads the model once and keeps it, for days larger than one machine. The
    driver collects no row (``spark.driver.maxResultSize`` does not bound the day).

The run's counts are added up from the files' rank-1 rows, batch by batch
(:func:`srgnn.serving.rows.count_rows`).

The model is an MLflow model URI (default ``models:/srgnn@champion``, resolved to a fixed
version before Spark starts) or a folder written by ``Recommender.save``.

Locating and loading the model is :mod:`srgnn.serving.models`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from srgnn.config import ENGINES, K, Settings
from srgnn.cpu import set_torch_threads
from srgnn.serving.models import locate_model, resolve_model
from srgnn.serving.recommender import SESSION_BATCH
from srgnn.serving.rows import (COUNT_COLUMNS, count_rows, merge_topk_reports, rows_schema,
                                score_files, spark_scorer)

logger = logging.getLogger(__name__)

FAILED_RUNS = Path("logs") / "scoring_runs_failed.jsonl"  # under the home: runs no table took
def check_warehouse_url(settings: Settings) -> str:
    """The warehouse URL, or a SettingError naming it (password hidden) when it cannot serve."""
    from srgnn.config import SettingError
    from srgnn.warehouse import WarehouseURL, redact_url

    url = settings.warehouse
    try:
        WarehouseURL.parse(url)
    except ValueError as exc:
        shown = redact_url(url)
        shown = "" if "<unparseable URL>" in shown else f" {shown}"  # the reason shows its scheme
        raise SettingError(f"bad warehouse URL{shown} (SRGNN_WAREHOUSE_URL or --warehouse): "
                           f"{exc}") from None
    return url


def check_warehouse(settings: Settings, url: str) -> None:
    """Open the warehouse and apply its DDL, without waiting for a lock: a warehouse that
    cannot be opened fails here (WarehouseUnavailable); one locked now is only logged, since
    the load waits up to the lock wait for it."""
    from srgnn.warehouse import Warehouse, WarehouseLocked, redact_url

    try:
        Warehouse.connect(url, lock_wait_seconds=0).close()
    except WarehouseLocked as exc:
        logger.warning("the warehouse %s is locked now%s; the load will wait up to %g s for it",
                       redact_url(url), f" (held by {exc.holder})" if exc.holder else "",
                       settings.warehouse_lock_wait_seconds)


def _parquet_rows(folder) -> int:
    """Rows of a Parquet folder written by Spark, from the file footers (no Spark job)."""
    import pyarrow.dataset as pads

    return pads.dataset(str(folder), format="parquet").count_rows()


def _timed(function, *args):
    """``(function(*args), seconds it took)``."""
    started = time.perf_counter()
    result = function(*args)
    return result, round(time.perf_counter() - started, 1)


def _publish(staging: Path, target: Path) -> None:
    """Move the staged quarantine folder to ``target``, replacing the one there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        os.replace(staging, target)
        return
    replaced = staging.with_name(staging.name + ".replaced")
    os.replace(target, replaced)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(replaced, target)  # the previous quarantine back in place
        raise
    shutil.rmtree(replaced, ignore_errors=True)


@dataclass
class _Attempt:
    """One scoring attempt, for its failure record (see :meth:`record_failure`)."""

    settings: Settings
    url: str
    day: dt.date
    run: dict = field(default_factory=dict)  # model and counts so far (scoring_runs columns)
    logged: bool = False  # the warehouse took over logging (replace_day logs its failures)

    def record_failure(self, error: Exception) -> None:
        """Log the failed attempt in ``scoring_runs``, or when the warehouse cannot take it,
        in the failed-runs file, which the error's message then names (and its attribute
        ``recorded_in``)."""
        from srgnn.warehouse import Warehouse, WarehouseLocked, WarehouseUnavailable, redact_url
        from srgnn.warehouse.errors import first_line
        from srgnn.warehouse.runlog import record_failed_run
        from srgnn.warehouse.tables import run_row

        if self.logged:
            return
        message = f"{type(error).__name__}: {error}"[:4000]
        reason = first_line(error)
        if not isinstance(error, (WarehouseLocked, WarehouseUnavailable)):
            wait = min(self.settings.warehouse_lock_wait_seconds, 5.0)  # a short one: it failed
            try:
                with Warehouse.connect(self.url, lock_wait_seconds=wait) as warehouse:
                    warehouse.log_run(self.day, self.run, status="failed", message=message)
                return
            except Exception as exc:  # noqa: BLE001 - the file below takes the record then
                reason = first_line(exc)
        try:
            path = record_failed_run(self.settings.home / FAILED_RUNS,
                                     run_row(uuid.uuid4().hex, self.day, self.run, expected_k=None),
                                     message=message, warehouse=redact_url(self.url),
                                     not_logged_because=reason)
        except OSError:  # the error being reported matters more than its record
            logger.warning("could not record the failed run of %s", self.day, exc_info=True)
            return
        logger.warning("the failed run of %s is recorded in %s", self.day, path)
        if error.args and isinstance(error.args[0], str):
            error.args = (f"{error.args[0]} (this run is recorded in {path})",) + error.args[1:]
        try:
            error.recorded_in = str(path)  # for callers (an Airflow task) that want the file
        except AttributeError:  # an exception type without a __dict__
            pass


def score_day(settings: Settings, clicks: str, ds: str, *, model_uri: str | None = None, top_k: int = K,
              engine: str = "local", fmt: str = "auto", spark=None, encoding: str = "utf-8",
              batch_sessions: int = SESSION_BATCH) -> dict:
    """Score one day and replace it in the warehouse. Returns the run's counts.

    Raises, before Spark starts: InputError (bad arguments or input files, no such model),
    SettingError (a warehouse URL that cannot serve), WarehouseUnavailable,
    :class:`ModelUnavailable`; later InputError (no valid click), WarehouseLocked (the lock
    wait ran out), DataQualityError and WarehouseLoadError (the load was rolled back). ``spark``
    is an existing session (default: started here, after the checks). ``batch_sessions``:
    sessions the local engine scores at a time (its memory bound).
    """
    from srgnn.data.readers import InputError, check_input

    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    try:
        day = dt.date.fromisoformat(ds)
    except ValueError:
        raise InputError(f"--ds must be a date YYYY-MM-DD, got {ds!r}") from None
    if top_k < 1:
        raise InputError(f"--top-k must be at least 1, got {top_k}")
    if batch_sessions < 1:
        raise InputError(f"batch_sessions must be at least 1, got {batch_sessions}")
    check_input(clicks, fmt, encoding)
    url = check_warehouse_url(settings)
    started_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    attempt = _Attempt(settings, url, day, {"started_at": started_at})
    name = f"ds={day}-{uuid.uuid4().hex[:12]}"
    staging = settings.home / "quarantine" / "scoring" / "_staging" / name
    rows_staging = settings.home / "scoring" / "_staging" / name  # the day's sessions and rows
    try:
        return _score(settings, clicks, day, attempt, staging, rows_staging, model_uri=model_uri,
                      top_k=top_k, engine=engine, fmt=fmt, spark=spark, encoding=encoding,
                      batch_sessions=batch_sessions)
    except Exception as error:
        attempt.record_failure(error)
        raise
    finally:
        for folder in (staging, rows_staging):  # a failed run's quarantine is never published
            shutil.rmtree(folder, ignore_errors=True)
            try:
                folder.parent.rmdir()  # when no other run is staging
            except OSError:
                pass


def _score(settings: Settings, clicks: str, day: dt.date, attempt: _Attempt, staging: Path,
           rows_staging: Path, *, model_uri, top_k, engine, fmt, spark, encoding,
           batch_sessions) -> dict:
    from pyspark.sql import functions as F

    from srgnn.data import etl
    from srgnn.data.readers import InputError, read_clicks, spark_input_errors
    from srgnn.data.spark import get_spark
    from srgnn.warehouse import Warehouse
    from srgnn.warehouse.tables import parquet_files

    ds = day.isoformat()
    clock = time.time()
    stages: dict[str, float] = {}
    mark = [clock]

    def stage(name: str) -> None:
        now = time.time()
        stages[name] = round(now - mark[0], 1)
        mark[0] = now
        logger.info("score %s: %s %.1f s", ds, name.replace("_", " "), stages[name])

    # The model is looked up (a registry request or a folder) while the warehouse is opened;
    # both before Spark starts. Then it loads (MLflow, torch) in the thread while the JVM starts
    # and Spark reads the day; its errors surface at result().
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="srgnn-load-model") as pool:
        looking = pool.submit(locate_model, settings, model_uri)
        check_warehouse(settings, attempt.url)
        pinned = looking.result()
        attempt.run.update(model_name=pinned.name, model_version=pinned.label)
        loading = pool.submit(_timed, resolve_model, settings, pinned.uri)
        stage("checks")
        if spark is None:
            spark = get_spark(settings, app_name="srgnn-score")
        stage("start_spark")
        with spark_input_errors(clicks):
            raw = read_clicks(spark, clicks, fmt, encoding, cache=True)  # one parse for both
            try:
                raw.quarantine.write.mode("overwrite").parquet(str(staging))
                quarantined = _parquet_rows(staging)
                stage("read_and_quarantine")

                sessions = etl.sessionize(raw.clicks, last_category=True).select(
                    "session_id", F.transform("events", lambda e: e["item_id"]).alias("items"),
                    "raw_clicks", "last_category",
                    F.transform("events", lambda e: e["ts"]).alias("times"))  # temporal_edges
                rows_dir = rows_staging / "rows"
                if engine == "local":
                    sessions.write.parquet(str(rows_staging / "sessions"))
                    stage("sessionize")
                    (recommender, model), stages["load_model"] = loading.result()
                    stage("wait_for_model")
                    set_torch_threads()  # the cores this process may use (srgnn.cpu)
                    score_files(recommender, parquet_files(rows_staging / "sessions", allow_empty=True),
                                rows_dir, top_k, model.label, batch_sessions)
                else:
                    from pyspark.sql.pandas.types import from_arrow_schema

                    (recommender, model), stages["load_model"] = loading.result()
                    stage("wait_for_model")
                    if not getattr(recommender, "uses_times", False):  # no click times needed
                        sessions = sessions.drop("times")
                    schema = from_arrow_schema(rows_schema())  # the rows recommend_table builds
                    scorer = spark_scorer(model.uri, settings.tracking_uri if model.version != "local" else None,
                                          top_k, model.label, str(rows_staging / "topk"))
                    sessions.mapInArrow(scorer, schema).write.parquet(str(rows_dir))
            finally:
                raw.release()
    stage("score")
    rows = parquet_files(rows_dir, allow_empty=True)
    totals = count_rows(rows, model.label)
    sessions_in, fallbacks = totals["sessions"], totals["fallbacks"]
    if totals["category_fallbacks"]:
        logger.info("score %s: %d session(s) whose last click is on an unknown item got the "
                    "popular items of its category", ds, totals["category_fallbacks"])
    counts = {"clicks_read": totals["raw_clicks"] + int(quarantined), "quarantined": int(quarantined),
              "duplicates_dropped": totals["duplicate_clicks"], "unknown_clicks": totals["unknown_clicks"],
              "category_fallbacks": totals["category_fallbacks"]}
    run = {"model_name": model.name, "model_version": model.label, "sessions_in": sessions_in,
           "sessions_scored": sessions_in, "fallbacks": fallbacks, **counts, "started_at": attempt.run["started_at"]}
    attempt.run.update(run)
    if sessions_in == 0:
        raise InputError(f"{clicks}: no valid click to score for {ds} ({quarantined} rows quarantined)")

    k_eff = min(top_k, recommender.num_items)
    failed_runs = settings.home / FAILED_RUNS
    with Warehouse.connect(attempt.url, lock_wait_seconds=settings.warehouse_lock_wait_seconds,
                           failed_runs=failed_runs) as warehouse:
        try:
            result = warehouse.replace_day(day, rows, expected_k=k_eff, run=run,
                                           ignore_columns=COUNT_COLUMNS)
        except Exception:
            attempt.logged = warehouse.failure_logged  # replace_day logs the failures of a load
            raise
    quarantine_dir = settings.home / "quarantine" / "scoring" / f"ds={ds}"
    _publish(staging, quarantine_dir)  # the day's quarantine goes with its committed rows
    stage("warehouse_load")
    return {
        "ds": ds, "engine": engine, "model_uri": model.uri, "model_version": model.label,
        "clicks_read": counts["clicks_read"], "quarantined": counts["quarantined"],
        "duplicates_dropped": counts["duplicates_dropped"], "unknown_clicks_skipped": counts["unknown_clicks"],
        "sessions_in": sessions_in, "sessions_scored": sessions_in, "fallbacks": fallbacks,
        "category_fallbacks": counts["category_fallbacks"], "rows_written": result.rows_written, "rows_replaced": result.rows_replaced, "top_k": k_eff,
        "warehouse": warehouse.url, "quarantine": str(quarantine_dir), "run_id": result.run_id,
        "seconds": round(time.time() - clock, 1), "stage_seconds": stages,
        # exact, or the approximate index and its recall (over the executors' on ``spark``)
        "topk": (recommender.topk_report() if engine == "local"
                 else merge_topk_reports(rows_staging / "topk")),
    }
