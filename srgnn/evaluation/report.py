"""Results for people: the comparison table ``srgnn evaluate`` prints and the by-length plot.

Both take :func:`srgnn.evaluation.evaluate.evaluate` results, one per model, in the order
they should appear.
"""

from __future__ import annotations

import math

import numpy as np

from srgnn.config import K
from srgnn.evaluation.metrics import length_bucket_labels

__all__ = ["format_table", "plot_metric_by_length"]


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
    """Two plain-text tables of :func:`~srgnn.evaluation.evaluate.evaluate` results, one row per model.

    The first has HR@K, MRR@K, NDCG@K, coverage@K, the long-tail share of the lists and the
    long-tail HR@K (in percent), the popularity bias (a 0..1 percentile) and the average
    training clicks of the recommended items; the second HR@K / MRR@K (percent) per
    session-length bucket, with the number of examples per bucket in its header. Extra numeric
    keys a caller adds to a model's dict (e.g. ``"fit_s"``) are appended as columns of the
    first table.
    """
    if not results:
        return "(no results)"
    first = next(iter(results.values()))
    k = next(int(key.split("@")[1]) for key in first if key.startswith("HR@"))
    percent_keys = [f"HR@{k}", f"MRR@{k}", f"NDCG@{k}", f"coverage@{k}", f"long_tail@{k}",
                    f"long_tail_HR@{k}"]
    plain_keys = [f"popularity_bias@{k}", f"avg_popularity@{k}"]
    known = {*percent_keys, *plain_keys, "examples", "by_length"}
    extra = [key for key in first if key not in known and isinstance(first[key], (int, float))]

    header = ["model", *(f"{key} %" for key in percent_keys), *plain_keys, *extra]
    rows = []
    for name, result in results.items():
        row = [name, *(_number(result.get(key), True) for key in percent_keys)]
        row.extend(_number(result.get(key), False) for key in plain_keys)
        row.extend(_number(float(result.get(key, float("nan"))), False) for key in extra)
        rows.append(row)
    overall = _format_rows(header, rows)

    labels = length_bucket_labels()
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
        f"percentile of recommended items, 0.5 = uniform; avg_popularity = their mean training "
        f"clicks; long tail = items outside the most popular ones that make 80% of training "
        f"clicks)\n{overall}\n\n"
        f"HR@{k} / MRR@{k} (percent) by session length (prefix clicks)\n{by_bucket}"
    )


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value))


def plot_metric_by_length(results: dict[str, dict], k: int = K, metric: str = "HR",
                          split: str = "test"):
    """Figure: ``metric``@K per session-length bucket, one bar per model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = length_bucket_labels()
    first = next(iter(results.values()))
    counts = [first["by_length"][label]["examples"] for label in labels]
    figure = Figure(figsize=(10, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    width = 0.8 / max(len(results), 1)
    x = np.arange(len(labels))
    for n, (name, result) in enumerate(results.items()):
        values = [result["by_length"][label][f"{metric}@{k}"] for label in labels]
        values = [100 * v if _finite(v) else 0.0 for v in values]
        axes.bar(x + (n - (len(results) - 1) / 2) * width, values, width, label=name)
    axes.set_xticks(x, [f"{label}\n(n={c})" for label, c in zip(labels, counts)])
    axes.set(title=f"{metric}@{k} by session length ({split} split)",
             xlabel="prefix length (clicks seen)", ylabel=f"{metric}@{k} (%)")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")  # beside the bars
    axes.grid(axis="y", alpha=0.3)
    return figure
