"""Nightly scoring: one day's raw clicks -> top-K recommendations in the warehouse.

    srgnn score --clicks PATH --ds YYYY-MM-DD [--model URI] [--top-k 20] [--engine local|spark]
    spark-submit jobs/score.py --clicks PATH --ds YYYY-MM-DD [...]

Steps: check, before Spark starts, the input files, the warehouse URL, that the warehouse
opens (a DuckDB file locked at that moment is no error yet: the load waits for it) and that
the model exists (:func:`locate_model`: the registry version an alias points to, or the local
folder); read the day's clicks with the same readers and quarantine as ``prepare``; order each
session's clicks and drop exact duplicates (:func:`srgnn.data.etl.sessionize`); score every
session with the model's :class:`~srgnn.serving.recommender.Recommender` (unknown items skipped and
counted; sessions without a known item get the popularity fallback); replace the day in the
warehouse in one transaction, with the SQL checks, and log the run.

What a run reads and drops is counted, in its result and in ``scoring_runs``: ``clicks_read``
(input rows: parsed clicks plus quarantined rows), ``quarantined``, ``duplicates_dropped``
(exact duplicate clicks), ``unknown_clicks`` (clicks on items the model does not know).

The day's quarantine (``<home>/quarantine/scoring/ds=DAY``) is replaced together with its
rows: it is written to a staging folder and moved into place only after the warehouse
committed the day, so a failed rerun leaves the previous quarantine, rows and counts as they
were. A failed run is logged in ``scoring_runs`` (by the warehouse, or here when it failed
before the load), or, when the warehouse cannot be opened, appended to
``<home>/logs/scoring_runs_failed.jsonl`` (:mod:`srgnn.warehouse.runlog`), which the error
names.

Two engines give the same rows:

``local``
    the sessions are collected to the driver as Arrow and scored in batches by torch in
    this process (all cores).
``spark``
    ``mapInArrow`` over the sessions; each Python worker loads the model once and keeps it,
    for days larger than one machine. The rows come back to the driver as Arrow for the
    warehouse's bulk load.

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

import numpy as np

from srgnn.config import ENGINES, K, Settings
from srgnn.cpu import set_torch_threads
from srgnn.serving.models import locate_model, resolve_model
from srgnn.serving.recommender import SOURCE_MODEL, recommend_batches

logger = logging.getLogger(__name__)

FAILED_RUNS = Path("logs") / "scoring_runs_failed.jsonl"  # under the home: runs no table took
# Columns of the scored rows that only feed the run's counts (one value per session).
_COUNT_COLUMNS = ("unknown_clicks", "raw_clicks", "duplicate_clicks")

_ROWS_SCHEMA = None


def rows_schema():
    import pyarrow as pa

    global _ROWS_SCHEMA
    if _ROWS_SCHEMA is None:
        _ROWS_SCHEMA = pa.schema([
            ("session_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()),
            ("score", pa.float64()), ("model_version", pa.string()),
            *[(name, pa.int32()) for name in _COUNT_COLUMNS],
        ])
    return _ROWS_SCHEMA


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


def recommend_table(recommender, sessions, k: int, model_label: str):
    """Arrow table ``session_id, items[, raw_clicks]`` -> recommendation rows (one per session
    and rank), with the session's counts: unknown clicks, clicks before de-duplication
    (``raw_clicks``, default: its items) and duplicates dropped."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = []
    session_ids = sessions.column("session_id")
    items = sessions.column("items").combine_chunks()
    kept = pc.list_value_length(items).to_numpy(zero_copy_only=False).astype(np.int32)
    raw = (sessions.column("raw_clicks").to_numpy().astype(np.int32)
           if "raw_clicks" in sessions.column_names else kept)
    for start, out in recommend_batches(recommender, items, k):
        n, kk = out.item_ids.shape
        version = np.where(out.source == SOURCE_MODEL, model_label, out.source).astype(object)
        part_ids = session_ids.slice(start, n).to_numpy(zero_copy_only=False)
        part_raw, part_kept = raw[start:start + n], kept[start:start + n]
        parts.append(pa.table({
            "session_id": pa.array(np.repeat(part_ids, kk), pa.string()),
            "rank": pa.array(np.tile(np.arange(1, kk + 1, dtype=np.int32), n)),
            "item_id": pa.array(out.item_ids.reshape(-1).astype(str), pa.string()),
            "score": pa.array(out.scores.reshape(-1), pa.float64()),
            "model_version": pa.array(np.repeat(version, kk), pa.string()),
            "unknown_clicks": pa.array(np.repeat(out.unknown_clicks, kk).astype(np.int32)),
            "raw_clicks": pa.array(np.repeat(part_raw, kk)),
            "duplicate_clicks": pa.array(np.repeat(part_raw - part_kept, kk)),
        }, schema=rows_schema()))
    if not parts:
        return rows_schema().empty_table()
    return pa.concat_tables(parts)


# One recommender per Python worker process for the Spark engine, keyed by model URI.
_WORKER_MODELS: dict = {}


def _spark_scorer(model_uri: str, tracking_uri: str | None, k: int, model_label: str):
    def score_batches(batches):
        import pyarrow as pa

        recommender = _WORKER_MODELS.get(model_uri)
        if recommender is None:
            # Spark runs one task per core at once (spark.task.cpus = 1): one torch thread
            # each, unless the user said otherwise (SRGNN_NUM_THREADS, OMP_NUM_THREADS).
            set_torch_threads(default=1)
            if tracking_uri:
                os.environ.setdefault("MLFLOW_TRACKING_URI", tracking_uri)
            settings = Settings.from_env()
            recommender, _ = resolve_model(settings, model_uri)
            _WORKER_MODELS[model_uri] = recommender
        for batch in batches:
            table = recommend_table(recommender, pa.Table.from_batches([batch]), k, model_label)
            yield from table.to_batches()
    return score_batches


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
              engine: str = "local", fmt: str = "auto", spark=None, encoding: str = "utf-8") -> dict:
    """Score one day and replace it in the warehouse. Returns the run's counts.

    Raises, before Spark starts: InputError (bad arguments or input files, no such model),
    SettingError (a warehouse URL that cannot serve), WarehouseUnavailable,
    :class:`ModelUnavailable`; later InputError (no valid click), WarehouseLocked (the lock
    wait ran out), DataQualityError and WarehouseLoadError (the load was rolled back). ``spark``
    is an existing session (default: started here, after the checks).
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
    check_input(clicks, fmt, encoding)
    url = check_warehouse_url(settings)
    started_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    attempt = _Attempt(settings, url, day, {"started_at": started_at})
    staging = settings.home / "quarantine" / "scoring" / "_staging" / f"ds={day}-{uuid.uuid4().hex[:12]}"
    try:
        return _score(settings, clicks, day, attempt, staging, model_uri=model_uri, top_k=top_k,
                      engine=engine, fmt=fmt, spark=spark, encoding=encoding)
    except Exception as error:
        attempt.record_failure(error)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # a failed run's quarantine, never published
        try:
            staging.parent.rmdir()  # when no other run is staging
        except OSError:
            pass


def _score(settings: Settings, clicks: str, day: dt.date, attempt: _Attempt, staging: Path, *,
           model_uri, top_k, engine, fmt, spark, encoding) -> dict:
    import pyarrow.compute as pc
    from pyspark.sql import functions as F

    from srgnn.data import etl
    from srgnn.data.readers import InputError, read_clicks, spark_input_errors
    from srgnn.data.spark import get_spark
    from srgnn.warehouse import Warehouse

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

                sessions = etl.sessionize(raw.clicks).select(
                    "session_id", F.transform("events", lambda e: e["item_id"]).alias("items"),
                    "raw_clicks")
                if engine == "local":
                    table = sessions.toArrow()
                    stage("sessionize")
                    (recommender, model), stages["load_model"] = loading.result()
                    stage("wait_for_model")
                    set_torch_threads()  # the cores this process may use (srgnn.cpu)
                    rows = recommend_table(recommender, table, top_k, model.label)
                else:
                    from pyspark.sql.pandas.types import from_arrow_schema

                    (recommender, model), stages["load_model"] = loading.result()
                    stage("wait_for_model")
                    schema = from_arrow_schema(rows_schema())  # the rows recommend_table builds
                    scorer = _spark_scorer(model.uri, settings.tracking_uri if model.version != "local" else None,
                                           top_k, model.label)
                    rows = sessions.mapInArrow(scorer, schema).toArrow()
            finally:
                raw.release()
    stage("score")
    first_rank = pc.equal(rows.column("rank"), 1)
    per_session = rows.filter(first_rank)
    sessions_in = per_session.num_rows

    def total(column: str) -> int:
        return int(pc.sum(per_session.column(column)).as_py() or 0)

    counts = {"clicks_read": total("raw_clicks") + int(quarantined), "quarantined": int(quarantined),
              "duplicates_dropped": total("duplicate_clicks"), "unknown_clicks": total("unknown_clicks")}
    fallbacks = int(pc.sum(pc.not_equal(per_session.column("model_version"), model.label)).as_py() or 0)
    run = {"model_name": model.name, "model_version": model.label, "sessions_in": sessions_in,
           "sessions_scored": sessions_in, "fallbacks": fallbacks, **counts, "started_at": attempt.run["started_at"]}
    attempt.run.update(run)
    if sessions_in == 0:
        raise InputError(f"{clicks}: no valid click to score for {ds} ({quarantined} rows quarantined)")

    k_eff = min(top_k, recommender.num_items)
    load_rows = rows.drop_columns(list(_COUNT_COLUMNS))
    failed_runs = settings.home / FAILED_RUNS
    with Warehouse.connect(attempt.url, lock_wait_seconds=settings.warehouse_lock_wait_seconds,
                           failed_runs=failed_runs) as warehouse:
        try:
            result = warehouse.replace_day(day, load_rows, expected_k=k_eff, run=run)
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
        "rows_written": result.rows_written, "rows_replaced": result.rows_replaced, "top_k": k_eff,
        "warehouse": warehouse.url, "quarantine": str(quarantine_dir), "run_id": result.run_id,
        "seconds": round(time.time() - clock, 1), "stage_seconds": stages,
        "topk": recommender.topk_report(),  # exact, or the approximate index and its recall
    }
