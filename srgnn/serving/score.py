"""Nightly scoring: one day's raw clicks -> top-K recommendations in the warehouse.

    srgnn score --clicks PATH --ds YYYY-MM-DD [--model URI] [--top-k 20] [--engine local|spark]
    spark-submit jobs/score.py --clicks PATH --ds YYYY-MM-DD [...]

Steps: read the day's clicks with the same readers and quarantine as ``prepare``; order each
session's clicks and drop exact duplicates (:func:`srgnn.data.etl.sessionize`); score every
session with the model's :class:`~srgnn.serving.recommender.Recommender` (unknown items skipped and
counted; sessions without a known item get the popularity fallback); replace the day in the
warehouse in one transaction, with the SQL checks, and log the run.

Two engines give the same rows:

``local``
    the sessions are collected to the driver as Arrow and scored in batches by torch in
    this process (all cores).
``spark``
    ``mapInArrow`` over the sessions; each Python worker loads the model once and keeps it,
    for days larger than one machine. The rows come back to the driver as Arrow for the
    warehouse's bulk load.

The model is an MLflow model URI (default ``models:/srgnn@champion``, resolved to a fixed
version before scoring starts) or a folder written by ``Recommender.save``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from srgnn.config import ENGINES, K, Settings
from srgnn.serving.recommender import SOURCE_MODEL, recommend_batches

logger = logging.getLogger(__name__)

DEFAULT_MODEL_URI = "models:/srgnn@champion"

_ROWS_SCHEMA = None


def rows_schema():
    import pyarrow as pa

    global _ROWS_SCHEMA
    if _ROWS_SCHEMA is None:
        _ROWS_SCHEMA = pa.schema([
            ("session_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()),
            ("score", pa.float64()), ("model_version", pa.string()), ("unknown_clicks", pa.int32()),
        ])
    return _ROWS_SCHEMA


@dataclass(frozen=True)
class ModelRef:
    """A model fixed for one scoring run."""

    uri: str  # a concrete URI (models:/srgnn/7) or a local folder
    name: str  # registered model name, e.g. "srgnn"
    version: str  # registry version, e.g. "7" ("local" for a folder)

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"


def resolve_model(settings: Settings, model_uri: str | None):
    """Load the recommender and pin the model version. Returns ``(recommender, ModelRef)``."""
    from srgnn.serving.recommender import Recommender

    model_uri = model_uri or DEFAULT_MODEL_URI
    if os.path.isdir(model_uri):
        return Recommender.load(model_uri), ModelRef(uri=os.path.abspath(model_uri), name="srgnn", version="local")
    from srgnn.serving import registry

    try:
        recommender, info = registry.load_recommender(model_uri, settings=settings)
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds for a missing model
        from srgnn.data.inputs import InputError

        first_line = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:300]
        raise InputError(f"cannot load model {model_uri} ({first_line}); train and register one first "
                         "(srgnn train) or pass --model") from None
    return recommender, ModelRef(uri=info.resolved_uri, name=info.name or "srgnn",
                                 version=str(info.version or info.run_id or "unknown"))


def recommend_table(recommender, sessions, k: int, model_label: str):
    """Arrow table ``session_id, items`` -> recommendation rows (one per session and rank)."""
    import pyarrow as pa

    parts = []
    session_ids = sessions.column("session_id")
    for start, out in recommend_batches(recommender, sessions.column("items").combine_chunks(), k):
        n, kk = out.item_ids.shape
        version = np.where(out.source == SOURCE_MODEL, model_label, out.source).astype(object)
        part_ids = session_ids.slice(start, n).to_numpy(zero_copy_only=False)
        parts.append(pa.table({
            "session_id": pa.array(np.repeat(part_ids, kk), pa.string()),
            "rank": pa.array(np.tile(np.arange(1, kk + 1, dtype=np.int32), n)),
            "item_id": pa.array(out.item_ids.reshape(-1).astype(str), pa.string()),
            "score": pa.array(out.scores.reshape(-1), pa.float64()),
            "model_version": pa.array(np.repeat(version, kk), pa.string()),
            "unknown_clicks": pa.array(np.repeat(out.unknown_clicks, kk).astype(np.int32)),
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


def score_day(settings: Settings, clicks: str, ds: str, *, model_uri: str | None = None, top_k: int = K,
              engine: str = "local", fmt: str = "auto", spark=None) -> dict:
    """Score one day and replace it in the warehouse. Returns the run's counts."""
    import pyarrow.compute as pc
    from pyspark.sql import functions as F

    from srgnn.data import etl
    from srgnn.data.readers import InputError, check_input, read_clicks
    from srgnn.data.spark import get_spark
    from srgnn.warehouse import Warehouse

    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    try:
        day = dt.date.fromisoformat(ds)
    except ValueError:
        raise InputError(f"--ds must be a date YYYY-MM-DD, got {ds!r}") from None
    if top_k < 1:
        raise InputError(f"--top-k must be at least 1, got {top_k}")
    started_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    clock = time.time()
    stages: dict[str, float] = {}
    mark = [clock]

    def stage(name: str) -> None:
        now = time.time()
        stages[name] = round(now - mark[0], 1)
        mark[0] = now
        logger.info("score %s: %s %.1f s", ds, name.replace("_", " "), stages[name])

    check_input(clicks, fmt)
    # The model loads (MLflow, torch) in a thread while the JVM starts and Spark reads the day;
    # its errors surface at result().
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="srgnn-load-model") as pool:
        loading = pool.submit(_timed, resolve_model, settings, model_uri)
        spark = spark or get_spark(settings, app_name="srgnn-score")
        stage("start_spark")
        raw = read_clicks(spark, clicks, fmt, cache=True)  # one parse for quarantine and clicks
        try:
            quarantine_dir = settings.home / "quarantine" / "scoring" / f"ds={day.isoformat()}"
            raw.quarantine.write.mode("overwrite").parquet(str(quarantine_dir))
            quarantined = _parquet_rows(quarantine_dir)
            stage("read_and_quarantine")

            sessions = etl.sessionize(raw.clicks).select(
                "session_id", F.transform("events", lambda e: e["item_id"]).alias("items"))
            if engine == "local":
                table = sessions.toArrow()
                stage("sessionize")
                (recommender, model), stages["load_model"] = loading.result()
                stage("wait_for_model")
                rows = recommend_table(recommender, table, top_k, model.label)
                sessions_in = table.num_rows
            else:
                from pyspark.sql.pandas.types import from_arrow_schema

                (recommender, model), stages["load_model"] = loading.result()
                stage("wait_for_model")
                schema = from_arrow_schema(rows_schema())  # the rows recommend_table builds
                scorer = _spark_scorer(model.uri, settings.tracking_uri if model.version != "local" else None,
                                       top_k, model.label)
                rows = sessions.mapInArrow(scorer, schema).toArrow()
                sessions_in = int(pc.sum(pc.equal(rows.column("rank"), 1)).as_py() or 0)
        finally:
            raw.release()
    stage("score")
    if sessions_in == 0:
        raise InputError(f"{clicks}: no valid click to score for {ds} ({quarantined} rows quarantined)")

    k_eff = min(top_k, recommender.num_items)
    first_rank = pc.equal(rows.column("rank"), 1)
    fallbacks = int(pc.sum(pc.and_(first_rank, pc.not_equal(rows.column("model_version"), model.label))).as_py() or 0)
    unknown_clicks = int(pc.sum(pc.filter(rows.column("unknown_clicks"), first_rank)).as_py() or 0)
    load_rows = rows.drop_columns(["unknown_clicks"])
    run = {"model_name": model.name, "model_version": model.label, "sessions_in": sessions_in,
           "sessions_scored": sessions_in, "fallbacks": fallbacks, "quarantined": int(quarantined),
           "started_at": started_at}
    with Warehouse.connect(settings.warehouse) as warehouse:
        result = warehouse.replace_day(day, load_rows, expected_k=k_eff, run=run)
    stage("warehouse_load")
    return {
        "ds": day.isoformat(), "engine": engine, "model_uri": model.uri, "model_version": model.label,
        "sessions_in": sessions_in, "sessions_scored": sessions_in, "fallbacks": fallbacks,
        "unknown_clicks_skipped": unknown_clicks, "quarantined": int(quarantined),
        "rows_written": result.rows_written, "rows_replaced": result.rows_replaced, "top_k": k_eff,
        "warehouse": warehouse.url, "seconds": round(time.time() - clock, 1), "stage_seconds": stages,
    }
