"""Offline evaluation: metrics of recommendation lists, a printable comparison table, and the
baselines run on a prepared run folder.

Recommendation lists of any model (SR-GNN's top-K, a baseline's) are scored the same way::

    results = {"sknn": evaluate_ranked(top_items, targets, prefix_lengths, item_popularity)}
    print(format_table(results))

and every baseline of :mod:`srgnn.baselines` can be compared on a run folder written by
``srgnn prepare`` (see docs/contracts.md)::

    python -c "from srgnn.evaluate import evaluate_baselines, format_table; \\
               print(format_table(evaluate_baselines('var/runs/<run>', ['pop', 'iknn'])))"

Baselines are fitted on ``sessions/train`` only, the data the model trains on, and evaluated
on the examples (prefix -> next item) of ``graphs/test`` (or ``graphs/valid``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srgnn import metrics

__all__ = [
    "EvalExamples",
    "TrainSessions",
    "evaluate_ranked",
    "format_table",
    "load_split",
    "load_sessions",
    "load_item_popularity",
    "evaluate_baselines",
]


@dataclass(frozen=True)
class EvalExamples:
    """Evaluation examples of one split, Arrow layout (prefix ``s`` is
    ``prefix_values[prefix_offsets[s]:prefix_offsets[s + 1]]``)."""

    prefix_values: np.ndarray  # (total_clicks,) int64 item indices
    prefix_offsets: np.ndarray  # (S + 1,) int64
    targets: np.ndarray  # (S,) int64 item index of the next click
    prefix_lengths: np.ndarray  # (S,) int64

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class TrainSessions:
    """Sessions of one split, Arrow layout, with each session's last click time."""

    values: np.ndarray  # (total_clicks,) int64 item indices
    offsets: np.ndarray  # (num_sessions + 1,) int64
    end_times: np.ndarray | None  # (num_sessions,) float64 epoch seconds, or None

    def __len__(self) -> int:
        return len(self.offsets) - 1


# --------------------------------------------------------------------------------------------
# Metrics of recommendation lists
# --------------------------------------------------------------------------------------------
def evaluate_ranked(top_items, targets, prefix_lengths, item_popularity, k: int = 20) -> dict:
    """All metrics of top-K lists against the true next items.

    Args:
        top_items: (S, >=K) recommended item indices, best first (only the first ``k`` count).
        targets: (S,) true next item indices.
        prefix_lengths: (S,) number of clicks each list was computed from.
        item_popularity: (N + 1,) training clicks per item index (entry 0, padding, ignored);
            gives N for coverage and the percentiles for popularity bias.
        k: cut-off.

    Returns:
        ``{"HR@K", "MRR@K", "NDCG@K", "coverage@K", "popularity_bias@K": float,
        "examples": int, "by_length": {bucket label: {"HR@K", "MRR@K", "examples"}}}``;
        accuracies are fractions (0..1), not percent.
    """
    top_items = np.asarray(top_items)
    targets = np.asarray(targets)
    prefix_lengths = np.asarray(prefix_lengths)
    if top_items.ndim != 2 or top_items.shape[1] < k:
        raise ValueError(f"top_items must be (S, K) with K >= {k}, got shape {top_items.shape}.")
    if not len(targets) == len(prefix_lengths) == len(top_items):
        raise ValueError("top_items, targets and prefix_lengths need one row per example.")
    top_items = top_items[:, :k]
    num_items = len(item_popularity) - 1
    ranks = metrics.ranks_from_topk(top_items, targets)
    out: dict = {
        f"HR@{k}": metrics.hit_rate_at_k(ranks, k),
        f"MRR@{k}": metrics.mrr_at_k(ranks, k),
        f"NDCG@{k}": metrics.ndcg_at_k(ranks, k),
        f"coverage@{k}": metrics.coverage_at_k(top_items, num_items, k),
        f"popularity_bias@{k}": metrics.popularity_bias_at_k(top_items, item_popularity, k),
        "examples": int(len(targets)),
    }
    hr = metrics.by_length_bucket(metrics.hit_rate_at_k, prefix_lengths, ranks, k=k)
    mrr = metrics.by_length_bucket(metrics.mrr_at_k, prefix_lengths, ranks, k=k)
    out["by_length"] = {
        label: {f"HR@{k}": hr[label][0], f"MRR@{k}": mrr[label][0], "examples": hr[label][1]}
        for label in metrics.length_bucket_labels()
    }
    return out


def _format_rows(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
    line = lambda cells: "  ".join(  # noqa: E731 - first column left-aligned, numbers right
        cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(cells, widths))
    )
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _number(value, percent: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.2f}" if percent else f"{value:.3f}"


def format_table(results: dict[str, dict]) -> str:
    """Two plain-text tables of :func:`evaluate_ranked` results, one row per model.

    The first has HR@K, MRR@K, NDCG@K, coverage@K (in percent) and the popularity bias (a
    0..1 percentile); the second HR@K / MRR@K (percent) per session-length bucket, with the
    number of examples per bucket in its header. Extra numeric keys a caller adds to a
    model's dict (e.g. ``"fit_s"``) are appended as columns of the first table.
    """
    if not results:
        return "(no results)"
    first = next(iter(results.values()))
    k = next(int(key.split("@")[1]) for key in first if key.startswith("HR@"))
    percent_keys = [f"HR@{k}", f"MRR@{k}", f"NDCG@{k}", f"coverage@{k}"]
    bias_key = f"popularity_bias@{k}"
    known = {*percent_keys, bias_key, "examples", "by_length"}
    extra = [key for key in first if key not in known and isinstance(first[key], (int, float))]

    header = ["model", *(f"{key} %" for key in percent_keys), bias_key, *extra]
    rows = []
    for name, result in results.items():
        row = [name, *(_number(result.get(key), True) for key in percent_keys)]
        row.append(_number(result.get(bias_key), False))
        row.extend(_number(float(result.get(key, float("nan"))), False) for key in extra)
        rows.append(row)
    overall = _format_rows(header, rows)

    labels = metrics.length_bucket_labels()
    counts = first.get("by_length", {})
    bucket_header = ["model"]
    for label in labels:
        n = counts.get(label, {}).get("examples", 0)
        bucket_header += [f"HR {label} (n={n})", f"MRR {label}"]
    bucket_rows = []
    for name, result in results.items():
        by_length = result.get("by_length", {})
        row = [name]
        for label in labels:
            bucket = by_length.get(label, {})
            row += [_number(bucket.get(f"HR@{k}"), True), _number(bucket.get(f"MRR@{k}"), True)]
        bucket_rows.append(row)
    by_bucket = _format_rows(bucket_header, bucket_rows)

    n = first.get("examples", "?")
    return (
        f"Top-{k} metrics over {n} examples (percent; popularity bias = mean popularity "
        f"percentile of recommended items, 0.5 = uniform)\n{overall}\n\n"
        f"HR@{k} / MRR@{k} (percent) by session length (prefix clicks)\n{by_bucket}"
    )


# --------------------------------------------------------------------------------------------
# Reading a prepare run folder (docs/contracts.md)
# --------------------------------------------------------------------------------------------
def _list_column(table, name: str) -> tuple[np.ndarray, np.ndarray]:
    column = table.column(name).combine_chunks()
    offsets = np.asarray(column.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    values = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.int64)
    return values, offsets - offsets[0]


def _read_parquet(path: Path, columns: list[str]):
    import pyarrow.parquet as pq

    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; is this a prepare run folder?")
    return pq.read_table(path, columns=columns)


def load_split(run_dir, split: str = "test") -> EvalExamples:
    """Evaluation examples of ``graphs/<split>/``: prefix, target and prefix length."""
    table = _read_parquet(Path(run_dir) / "graphs" / split, ["prefix", "target", "prefix_length"])
    values, offsets = _list_column(table, "prefix")
    return EvalExamples(
        prefix_values=values,
        prefix_offsets=offsets,
        targets=table.column("target").to_numpy().astype(np.int64),
        prefix_lengths=table.column("prefix_length").to_numpy().astype(np.int64),
    )


def load_sessions(run_dir, split: str = "train") -> TrainSessions:
    """Sessions of ``sessions/<split>/`` as flat item indices, with their end times."""
    table = _read_parquet(Path(run_dir) / "sessions" / split, ["items", "end_ts"])
    values, offsets = _list_column(table, "items")
    end = table.column("end_ts")
    end_times = None
    if end.null_count == 0 and hasattr(end.type, "unit"):
        import pyarrow as pa
        import pyarrow.compute as pc

        # stored ticks of any unit (time zones do not change them) -> epoch seconds
        ticks_per_second = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[end.type.unit]
        end_times = pc.cast(end, pa.int64()).to_numpy() / ticks_per_second
    return TrainSessions(values=values, offsets=offsets, end_times=end_times)


def load_item_popularity(run_dir, sessions: TrainSessions | None = None) -> np.ndarray:
    """(N + 1,) training clicks per item index from ``vocab.parquet`` (entry 0 = 0); when the
    vocabulary is missing, counted from ``sessions``."""
    path = Path(run_dir) / "vocab.parquet"
    if path.exists():
        table = _read_parquet(path, ["item_index", "train_clicks"])
        index = table.column("item_index").to_numpy().astype(np.int64)
        clicks = table.column("train_clicks").to_numpy().astype(np.int64)
        popularity = np.zeros(int(index.max()) + 1 if len(index) else 1, dtype=np.int64)
        popularity[index] = clicks
        return popularity
    if sessions is None:
        raise FileNotFoundError(f"{path} does not exist and no sessions were given to count from.")
    popularity = np.bincount(sessions.values).astype(np.int64)
    popularity[0:1] = 0
    return popularity


def evaluate_baselines(
    run_dir, names=None, k: int = 20, split: str = "test", params: dict | None = None
) -> dict[str, dict]:
    """Fit each named baseline on ``sessions/train`` and evaluate it on ``graphs/<split>``.

    Args:
        run_dir: a prepare run folder.
        names: registry names of :data:`srgnn.baselines.BASELINES` (default: all of them).
        k: list length and metric cut-off.
        split: ``"test"`` or ``"valid"``.
        params: optional ``{name: {hyperparameter: value}}`` overriding the defaults.

    Returns:
        ``{name: evaluate_ranked(...) + {"fit_s", "recommend_s"}}``, ready for :func:`format_table`.
    """
    from srgnn.baselines import BASELINES, make_baseline

    names = list(BASELINES) if names is None else list(names)
    params = params or {}
    sessions = load_sessions(run_dir, "train")
    examples = load_split(run_dir, split)
    popularity = load_item_popularity(run_dir, sessions)
    num_items = len(popularity) - 1
    results = {}
    for name in names:
        model = make_baseline(name, **params.get(name, {}))
        started = time.perf_counter()
        model.fit_flat(
            sessions.values, sessions.offsets,
            num_items=num_items, session_times=sessions.end_times,
        )
        fitted = time.perf_counter()
        top_items, _ = model.recommend(examples.prefix_values, examples.prefix_offsets, k)
        done = time.perf_counter()
        result = evaluate_ranked(
            top_items, examples.targets, examples.prefix_lengths, popularity, k
        )
        result["fit_s"] = fitted - started
        result["recommend_s"] = done - fitted
        results[name] = result
    return results
