"""A scored day as Parquet files: the rows of every session, written batch by batch, and the
run's counts read back from the files.

Both engines of the nightly scoring (:mod:`srgnn.serving.score`) write the day's rows as
Parquet files into the run's staging folder, never holding the whole day in one process:

- ``spark``: :func:`spark_scorer` runs in ``mapInArrow`` on the executors, and Spark writes
  what it yields (``.write.parquet``); the driver only gets the tasks' commit messages.
- ``local``: Spark writes the sessions as Parquet; :func:`score_files` reads them back
  ``batch_sessions`` at a time and appends each batch's rows to one output file per input
  file, so that this process holds one batch of sessions and their rows at a time.

Each row carries, besides the warehouse's columns, the counts of its session
(:data:`COUNT_COLUMNS`, the same value on all its ranks); :func:`count_rows` adds them up over
the rank-1 rows, streaming over the files. The warehouse loads the files themselves
(``Warehouse.replace_day`` with ``ignore_columns=COUNT_COLUMNS``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from srgnn.config import Settings
from srgnn.cpu import set_torch_threads
from srgnn.serving.models import resolve_model
from srgnn.serving.recommender import SOURCE_CATEGORY, SOURCE_MODEL, recommend_batches

# Columns of the scored rows that only feed the run's counts (one value per session).
COUNT_COLUMNS = ("unknown_clicks", "raw_clicks", "duplicate_clicks")
# What the engines score; ``times`` (each click's timestamp) is read only for a recommender
# whose ranker uses it (an SR-GNN with temporal_edges).
SESSION_COLUMNS = ("session_id", "items", "raw_clicks", "last_category", "times")

_ROWS_SCHEMA = None


def rows_schema():
    import pyarrow as pa

    global _ROWS_SCHEMA
    if _ROWS_SCHEMA is None:
        _ROWS_SCHEMA = pa.schema([
            ("session_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()),
            ("score", pa.float64()), ("model_version", pa.string()),
            *[(name, pa.int32()) for name in COUNT_COLUMNS],
        ])
    return _ROWS_SCHEMA


def recommend_table(recommender, sessions, k: int, model_label: str):
    """Arrow table ``session_id, items[, raw_clicks, last_category, times]`` -> recommendation
    rows (one per session and rank), with the session's counts: unknown clicks, clicks before
    de-duplication (``raw_clicks``, default: its items) and duplicates dropped. ``times`` (the
    clicks' timestamps, laid out like ``items``) goes to a recommender that uses them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = []
    session_ids = sessions.column("session_id")
    items = sessions.column("items").combine_chunks()
    kept = pc.list_value_length(items).to_numpy(zero_copy_only=False).astype(np.int32)
    raw = (sessions.column("raw_clicks").to_numpy().astype(np.int32)
           if "raw_clicks" in sessions.column_names else kept)
    last_categories = None
    if "last_category" in sessions.column_names and sessions.column("last_category").null_count < len(sessions):
        last_categories = sessions.column("last_category").to_numpy(zero_copy_only=False)
    times = None
    if "times" in sessions.column_names and getattr(recommender, "uses_times", False):
        times = sessions.column("times").combine_chunks()
    for start, out in recommend_batches(recommender, items, k, last_categories=last_categories,
                                        times=times):
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


def spark_scorer(model_uri: str, tracking_uri: str | None, k: int, model_label: str,
                 report_dir: str | None = None):
    """The function ``mapInArrow`` runs on the executors: session batches in, rows out.

    With ``report_dir`` (a folder all nodes see), each Python worker writes how it found top-K
    (:meth:`~srgnn.serving.recommender.Recommender.topk_report`, cumulative over the tasks it
    ran) to ``report_dir/<host>-<pid>.json`` after each task; :func:`merge_topk_reports` adds
    them up for the run."""
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
        if report_dir:
            _write_report(Path(report_dir), recommender.topk_report())
    return score_batches


def _write_report(folder: Path, report: dict) -> None:
    import json
    import socket

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{socket.gethostname()}-{os.getpid()}.json"
    partial = target.with_suffix(".tmp")
    partial.write_text(json.dumps(report))
    partial.replace(target)  # a reader never sees half a report


def merge_topk_reports(folder: Path) -> dict:
    """One top-K report for a run scored by several workers (:func:`spark_scorer`'s files):
    ``exact`` when every worker ranked exactly; otherwise the approximate index's figures with
    the recall over all the sessions the workers measured (each worker measures its own first
    sessions), the ``nprobe`` values the workers chose and the number of ``workers``."""
    import json

    reports = [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]
    if not reports:
        return {}
    approximate = [r for r in reports if r.get("topk_index") not in (None, "exact")]
    if not approximate:
        return {**reports[0], "workers": len(reports)}
    measured = [r for r in approximate if r.get("recall_sessions")]
    sessions = sum(r["recall_sessions"] for r in measured)
    recall = (round(sum(r["recall"] * r["recall_sessions"] for r in measured) / sessions, 4)
              if sessions else None)
    merged = {key: value for key, value in approximate[0].items()
              if key in ("topk_index", "items", "nlist", "recall_target", "recall_at")}
    # A worker that scored fewer sessions than the sample has no nprobe yet (all exact).
    chosen = {r["nprobe"] for r in approximate if r.get("nprobe") is not None}
    return {**merged, "nprobe": sorted(chosen), "recall": recall,
            "recall_sessions": sessions, "workers": len(reports)}


def score_files(recommender, sessions: Iterable[Path], out: Path, k: int, model_label: str,
                batch_sessions: int) -> list[Path]:
    """Score the sessions of the Parquet files ``sessions``, ``batch_sessions`` at a time, into
    ``out/part-NNNNN.parquet`` (one file per input file, a row group per batch). Returns the
    files written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for index, path in enumerate(sessions):
        target = out / f"part-{index:05d}.parquet"
        with pq.ParquetFile(path) as parquet, pq.ParquetWriter(target, rows_schema()) as writer:
            present = set(parquet.schema_arrow.names)
            columns = [name for name in SESSION_COLUMNS if name in present
                       and (name != "times" or getattr(recommender, "uses_times", False))]
            for batch in parquet.iter_batches(batch_size=batch_sessions, columns=columns):
                writer.write_table(recommend_table(recommender, pa.Table.from_batches([batch]), k,
                                                   model_label))
        written.append(target)
    return written


def count_rows(files: list[Path], model_label: str) -> dict[str, int]:
    """The run's counts over the rank-1 rows of the scored ``files``, batch by batch:
    ``sessions``, ``fallbacks`` (sessions not answered by ``model_label``),
    ``category_fallbacks`` (those answered by ``fallback:category``) and the sums of
    :data:`COUNT_COLUMNS`."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    counts = dict.fromkeys(("sessions", "fallbacks", "category_fallbacks", *COUNT_COLUMNS), 0)
    if not files:
        return counts
    dataset = pads.dataset([str(path) for path in files], format="parquet", schema=rows_schema())
    scanner = dataset.scanner(columns=["model_version", *COUNT_COLUMNS],
                              filter=pads.field("rank") == 1)
    for batch in scanner.to_batches():
        counts["sessions"] += batch.num_rows
        counts["fallbacks"] += int(pc.sum(pc.not_equal(batch.column("model_version"),
                                                       model_label)).as_py() or 0)
        counts["category_fallbacks"] += int(pc.sum(pc.equal(batch.column("model_version"),
                                                            SOURCE_CATEGORY)).as_py() or 0)
        for name in COUNT_COLUMNS:
            counts[name] += int(pc.sum(batch.column(name)).as_py() or 0)
    return counts
