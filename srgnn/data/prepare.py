"""``prepare``: raw clicks -> sessions -> train/valid/test session graphs (Parquet).

Extract (:mod:`srgnn.data.readers`), transform (:mod:`srgnn.data.etl`) and load (this module) as separate
steps. Run it as ``srgnn prepare --clicks PATH --out DIR`` or
``spark-submit jobs/prepare.py --clicks PATH --out DIR``. The output folder layout is in
docs/contracts.md; ``summary.json`` accounts for every click read:

    clicks_read = clicks_kept + clicks_quarantined + sum(clicks_removed.values())

An example's prefix keeps at most ``PrepareConfig.max_prefix_length`` clicks (the last ones
before its target); ``summary.json`` counts the prefixes cut and the clicks they lost, per
split (``prefixes_cut``, ``prefix_clicks_cut``) and in all. Sessions keep every click.

A run folder is complete only when prepare finished: the job first writes the marker
``_PREPARING`` and removes an earlier ``summary.json``, and at the end writes ``summary.json``
(to a temporary name, then renamed) and removes the marker; :class:`RunFolder
<srgnn.data.runfolder.RunFolder>` refuses a folder that still holds the marker. Spark's
failures to read the input become one-line :class:`InputError` exceptions
(:func:`srgnn.data.readers.spark_input_errors`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from srgnn.config import PrepareConfig, config_dict
from srgnn.data.readers import InputError, read_clicks, spark_input_errors
from srgnn.data.runfolder import CATEGORIES_FILE, IN_PROGRESS, SUMMARY

logger = logging.getLogger(__name__)
# On a cluster the split frames keep the shuffle's partitions (dozens for a small day); each
# split is written in ceil(examples / this) files instead, but never in fewer than the
# application's task slots: the coalesced tasks also build the graphs, which then use every
# core. Local mode keeps its layout.
CLUSTER_EXAMPLES_PER_FILE = 1_000_000

__all__ = ["PrepareResult", "run_prepare"]


@dataclass
class PrepareResult:
    out_dir: str
    summary: dict


def _out_path(out_dir: str, *parts: str) -> str:
    return "/".join([out_dir.rstrip("/"), *parts])


class _Markers:
    """The completion markers of an output folder, local or remote (Hadoop file systems)."""

    def __init__(self, spark, out_dir: str) -> None:
        self.spark, self.out_dir = spark, out_dir
        self.local = "://" not in out_dir

    def _hadoop(self, name: str):
        jvm = self.spark._jvm
        path = jvm.org.apache.hadoop.fs.Path(_out_path(self.out_dir, name))
        return path.getFileSystem(self.spark._jsc.hadoopConfiguration()), path

    def started(self, clicks_path: str) -> None:
        """Mark the folder as being prepared, then remove an earlier run's summary."""
        note = json.dumps({"input": clicks_path, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                          time.gmtime())})
        if self.local:
            Path(self.out_dir).mkdir(parents=True, exist_ok=True)
            Path(self.out_dir, IN_PROGRESS).write_text(note + "\n")
            Path(self.out_dir, SUMMARY).unlink(missing_ok=True)
            return
        fs, path = self._hadoop(IN_PROGRESS)
        stream = fs.create(path, True)
        stream.write(bytearray(note.encode()))
        stream.close()
        fs.delete(self._hadoop(SUMMARY)[1], True)

    def finished(self, summary: dict) -> None:
        """Write ``summary.json`` whole (write, then rename), then remove the marker."""
        text = json.dumps(summary, indent=2) + "\n"
        if self.local:
            final = Path(self.out_dir, SUMMARY)
            partial = Path(self.out_dir, f".{SUMMARY}.partial")
            partial.write_text(text)
            os.replace(partial, final)
            Path(self.out_dir, IN_PROGRESS).unlink(missing_ok=True)
            return
        # remote output: Spark's writer commits the folder when the job succeeds
        self.spark.createDataFrame([(text,)], "value string").coalesce(1) \
            .write.mode("overwrite").text(_out_path(self.out_dir, SUMMARY))
        fs, path = self._hadoop(IN_PROGRESS)
        fs.delete(path, False)


def run_prepare(spark, clicks_path: str, out_dir: str, config: PrepareConfig | None = None,
                fmt: str = "auto", encoding: str = "utf-8") -> PrepareResult:
    """Run the whole prepare job and return the output folder and its summary.

    ``encoding`` is the text encoding of CSV and JSON input (``Source.encoding``).

    Raises:
        InputError: for the user's mistakes and for input Spark cannot read; the output
            folder is then left without ``summary.json`` (incomplete) once writing began.
    """
    config = config or PrepareConfig()
    started = time.time()
    with spark_input_errors(clicks_path):
        raw = read_clicks(spark, clicks_path, fmt, encoding)
        markers = _Markers(spark, out_dir)
        markers.started(clicks_path)
        summary = _prepare(spark, raw, clicks_path, out_dir, config, started)
        markers.finished(summary)
    return PrepareResult(out_dir=out_dir, summary=summary)


def _prepare(spark, raw, clicks_path: str, out_dir: str, config: PrepareConfig,
             started: float) -> dict:
    """The job's stages on the read clicks; returns the summary."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from srgnn.data import etl

    min_len = config.min_session_length
    persisted = []
    stage_seconds: dict[str, float] = {}
    stage_start = [time.time()]

    def stage(name: str) -> None:
        now = time.time()
        stage_seconds[name] = round(now - stage_start[0], 1)
        logger.info("prepare: %s %.1f s", name.replace("_", " "), stage_seconds[name])
        stage_start[0] = now

    def keep(frame):
        persisted.append(frame.persist(StorageLevel.MEMORY_AND_DISK))
        return frame

    def size_stats(frame, column, prefix):
        """Aggregates of one pass: sessions, clicks, and sessions/clicks below min length."""
        size = F.size(column)
        short = size < min_len
        return [
            F.count(F.lit(1)).alias(f"{prefix}_n"),
            F.coalesce(F.sum(size), F.lit(0)).alias(f"{prefix}_clicks"),
            F.coalesce(F.sum(short.cast("long")), F.lit(0)).alias(f"{prefix}_short_n"),
            F.coalesce(F.sum(F.when(short, size).otherwise(0)), F.lit(0)).alias(f"{prefix}_short_clicks"),
        ]

    # Quarantine first; its counts are read back from the written files.
    quarantine_path = _out_path(out_dir, "quarantine")
    raw.quarantine.write.mode("overwrite").parquet(quarantine_path)
    by_reason = {r["reason"]: int(r["n"]) for r in spark.read.parquet(quarantine_path)
                 .groupBy("reason").agg(F.count(F.lit(1)).alias("n")).collect()}
    clicks_quarantined = sum(by_reason.values())
    stage("read_and_quarantine")

    # 1. sessions, duplicates, single-click sessions: one pass.
    sessions = keep(etl.sessionize(raw.clicks))
    row = sessions.agg(F.coalesce(F.sum("raw_clicks"), F.lit(0)).alias("raw"),
                       F.max(F.element_at("events", -1)["ts"]).alias("data_end"),
                       *size_stats(sessions, "events", "s")).collect()[0]
    clicks_parsed = int(row["raw"])
    clicks_read = clicks_parsed + clicks_quarantined
    if clicks_parsed == 0:
        raise InputError(f"{clicks_path}: no valid click in the input "
                         f"({clicks_quarantined} rows quarantined: {by_reason})")
    removed = {"duplicate_events": clicks_parsed - int(row["s_clicks"]),
               "short_sessions": int(row["s_short_clicks"])}
    sessions_removed = {"short_sessions": int(row["s_short_n"])}
    sessions_read = int(row["s_n"])
    # whether each known user comes back (return_weight's label), from every session
    labels = keep(etl.return_labels(sessions, config.return_days, row["data_end"]))
    label_counts = {r["returns"]: int(r["n"]) for r in labels.groupBy("returns").agg(
        F.count(F.lit(1)).alias("n")).collect()}
    long_sessions = etl.drop_short_sessions(sessions.drop("raw_clicks", "user_id"), min_len)
    clicks_long = int(row["s_clicks"]) - int(row["s_short_clicks"])
    stage("sessionize")

    # 2. rare items, then sessions left too short; and the last day of the data.
    filtered = keep(etl.drop_rare_items(long_sessions, config.min_item_support))
    row = filtered.agg(*size_stats(filtered, "events", "f"),
                       F.max(F.when(F.size("events") >= min_len, etl.session_end_day())).alias("last_day")).collect()[0]
    removed["rare_items"] = clicks_long - int(row["f_clicks"])
    removed["short_after_rare_items"] = int(row["f_short_clicks"])
    sessions_removed["short_after_rare_items"] = int(row["f_short_n"])
    last_day = row["last_day"]
    stage("rare_items")
    if last_day is None:
        raise InputError(f"{clicks_path}: no session is left after the filters "
                         f"(min session length {min_len}, min item support {config.min_item_support})")

    # 3. split by day; vocabulary from the training window (train and valid days, never test):
    # a model refitted on train + valid then knows the items that first appear in the
    # validation days, which are often the newest and most clicked of the following days.
    split = etl.assign_split(etl.drop_short_sessions(filtered, min_len), last_day,
                             config.test_days, config.valid_days)
    vocab_path = _out_path(out_dir, "vocab.parquet")
    vocab = etl.build_vocab(split.where(F.col("split") != "test"))
    vocab.orderBy("item_index").coalesce(1).write.mode("overwrite").parquet(vocab_path)
    vocab = keep(spark.read.parquet(vocab_path))
    vocab_size = vocab.count()
    if vocab_size == 0:
        raise InputError(f"{clicks_path}: the training window is empty (all sessions fall in the last "
                         f"{config.test_days + config.valid_days} days); lower --test-days/--valid-days")

    # The vocabulary's categories (the optional ``category`` column): the category each item
    # was clicked with most (ties: the smaller name); empty without the column.
    counted = (raw.clicks.where(F.col("category").isNotNull())
               .groupBy("item_id", "category").agg(F.count(F.lit(1)).alias("n"))
               .join(vocab.select("item_id", "item_index"), "item_id"))
    (counted.groupBy("item_index")
     .agg(F.min(F.struct((-F.col("n")).alias("n"), F.col("category")))["category"].alias("category"))
     .orderBy("item_index").coalesce(1).write.mode("overwrite")
     .parquet(_out_path(out_dir, CATEGORIES_FILE)))
    stage("split_and_vocab")

    # 4. item indices; items unseen in the training window leave test sessions; per-split counts.
    indexed = keep(etl.index_sessions(split, vocab))
    size = F.size("items")
    ok = size >= min_len
    # prefixes longer than the window, and the clicks they lose: k - N for k = N+1 .. n-1
    cut = F.greatest(size.cast("long") - 1 - config.max_prefix_length, F.lit(0).cast("long"))
    per_split = {r["split"]: r for r in indexed.groupBy("split").agg(
        F.sum(F.col("indexed_from") - 1).alias("examples_before"),
        F.sum(F.col("indexed_from") - size).alias("unseen"),
        F.sum((~ok).cast("long")).alias("short_n"),
        F.sum(F.when(~ok, size).otherwise(0)).alias("short_clicks"),
        F.sum(ok.cast("long")).alias("sessions"),
        F.sum(F.when(ok, size).otherwise(0)).alias("clicks"),
        F.sum(F.when(ok, size - 1).otherwise(0)).alias("examples"),
        F.sum(F.when(ok, cut).otherwise(0)).alias("prefixes_cut"),
        F.sum(F.when(ok, F.shiftright(cut * (cut + 1), 1)).otherwise(0)).alias("prefix_clicks_cut"),
    ).collect()}
    removed["unseen_items"] = sum(int(r["unseen"]) for r in per_split.values())
    removed["short_after_unseen_items"] = sum(int(r["short_clicks"]) for r in per_split.values())
    sessions_removed["short_after_unseen_items"] = sum(int(r["short_n"]) for r in per_split.values())
    splits = {}
    for name in etl.SPLITS:
        r = per_split.get(name)
        splits[name] = {key: int(r[key] or 0) if r else 0
                        for key in ("sessions", "clicks", "examples")}
        splits[name]["examples_before_unseen_filter"] = int(r["examples_before"] or 0) if r else 0
        for key in ("prefixes_cut", "prefix_clicks_cut"):
            splits[name][key] = int(r[key] or 0) if r else 0
    clicks_kept = sum(s["clicks"] for s in splits.values())
    stage("index_items")

    # 5. load: sessions and session graphs per split.
    indexed = keep(etl.drop_short_sessions(indexed, min_len, column="items")
                   .join(labels, "session_id", "left"))
    cluster = not spark.sparkContext.master.startswith("local")
    for name in etl.SPLITS:
        part = indexed.where(F.col("split") == name)
        if cluster:  # a split in as many files as its size needs, not one per shuffle partition
            files = -(-max(splits[name]["examples"], 1) // CLUSTER_EXAMPLES_PER_FILE)
            part = part.coalesce(max(files, spark.sparkContext.defaultParallelism))
        part.select("session_id", "items", "start_ts", "end_ts").write.mode("overwrite").parquet(
            _out_path(out_dir, "sessions", name))
        examples = etl.add_graph_columns(etl.prefix_examples(
            part.select("session_id", "split", "items", "gaps", "returns"), config.max_prefix_length))
        (examples.select("session_id", "prefix", "nodes", "alias", "edge_src", "edge_dst",
                         F.col("target").cast("int").alias("target"), "prefix_length",
                         "edge_gap", "remaining", "returns")
         .write.mode("overwrite").parquet(_out_path(out_dir, "graphs", name)))
    for frame in persisted:
        frame.unpersist()
    stage("write_sessions_and_graphs")

    total_removed = sum(removed.values())
    summary = {
        "input": clicks_path,
        "format": raw.format,
        "files": raw.files if len(raw.files) <= 20 else raw.files[:20] + [f"... {len(raw.files) - 20} more"],
        "config": config_dict(config),
        "clicks_read": clicks_read,
        "clicks_quarantined": clicks_quarantined,
        "quarantine_reasons": by_reason,
        "clicks_removed": removed,
        "sessions_removed": sessions_removed,
        "clicks_kept": clicks_kept,
        "balanced": clicks_read == clicks_kept + clicks_quarantined + total_removed,
        "sessions_read": sessions_read,
        # sessions with a user_id by their return label (return_days): 1, 0, unknown (null)
        "return_labels": {"returns": label_counts.get(1, 0), "stays": label_counts.get(0, 0),
                          "unknown": label_counts.get(None, 0),
                          "return_days": config.return_days},
        "last_day": str(last_day),
        "vocab_size": int(vocab_size),
        "splits": splits,
        "examples": sum(s["examples"] for s in splits.values()),
        "examples_lost_to_unseen_items": sum(s["examples_before_unseen_filter"] - s["examples"]
                                             for s in splits.values()),
        "prefixes_cut": sum(s["prefixes_cut"] for s in splits.values()),
        "prefix_clicks_cut": sum(s["prefix_clicks_cut"] for s in splits.values()),
        "seconds": round(time.time() - started, 1),
        "stage_seconds": stage_seconds,
        "out_dir": out_dir,
    }
    if not summary["balanced"]:
        raise AssertionError(f"click accounting does not add up: {summary}")
    return summary
