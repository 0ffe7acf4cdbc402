"""The one evaluation path: a recommender on held-out examples -> the metric table.

:func:`evaluate` gives the prefixes of a :class:`~srgnn.evaluation.heldout.HeldOut` to a
recommender in batches (:func:`srgnn.serving.recommender.recommend_batches`), compares its
top-K raw ids with the raw target ids and returns :func:`metric_table`'s figures. Every caller
uses it: the training run (validation by session length for the short-session fallback), the
training DAG's ``evaluate`` task and the gate (candidate, champion and baselines on the same
examples), ``srgnn evaluate`` (a run folder's split, or raw held-out clicks) and the
benchmarks. The baselines take the same path: :func:`fit_baselines` wraps each fitted
baseline in a :class:`~srgnn.serving.recommender.Recommender` over the run's vocabulary::

    held_out = heldout.from_run("var/runs/<run>", "test")
    models = {"srgnn": champion, **fit_baselines(RunFolder("var/runs/<run>"), ["pop", "sknn"])}
    results = evaluate_all(models, held_out)
    print(format_table(results))

The training loop's per-epoch validation ranks every target under the model's full score
matrix instead (no recommender exists yet); it reports through the same :func:`metric_table`.
"""

from __future__ import annotations

import math
import time

import numpy as np

from srgnn.config import K
from srgnn.data.runfolder import RunFolder
from srgnn.evaluation import metrics
from srgnn.evaluation.heldout import HeldOut
from srgnn.serving.recommender import SESSION_BATCH, recommend_batches

__all__ = ["metric_table", "evaluate_ranked", "evaluate_graphs", "evaluate", "evaluate_all",
           "fit_baselines", "DEFAULT_BASELINES"]

DEFAULT_BASELINES = ("pop", "iknn", "sknn", "markov")


def metric_table(ranks, prefix_lengths, k: int = K, *, top_items=None, popularity=None,
                 targets=None) -> dict:
    """Every figure of one model on ``S`` examples.

    Args:
        ranks: (S,) 1-based rank of each target in its list, 0 when absent
            (:mod:`srgnn.evaluation.metrics`).
        prefix_lengths: (S,) clicks each list was computed from.
        k: cut-off.
        top_items: (S, >=K) the lists as catalogue indices (entries outside ``1..N`` are
            ignored), for ``coverage@K``, ``popularity_bias@K``, ``avg_popularity@K`` and
            ``long_tail@K``; ``None`` leaves them out.
        popularity: (N + 1,) training clicks per catalogue index (gives ``N``, the
            popularity percentiles and the long tail, :func:`metrics.long_tail_items`).
        targets: (S,) catalogue index of each target (0 or ``None`` entries: not in the
            catalogue), for ``long_tail_HR@K``; ``None`` leaves it out.

    Returns:
        ``{"HR@K", "MRR@K", "NDCG@K"[, "coverage@K", "popularity_bias@K",
        "avg_popularity@K", "long_tail@K"][, "long_tail_HR@K"]: float, "examples": int,
        "by_length": {bucket: {"HR@K", "MRR@K", "examples"}}}``; accuracies and shares are
        fractions (0..1), not percent; ``avg_popularity@K`` is in training clicks.
    """
    ranks = np.asarray(ranks)
    prefix_lengths = np.asarray(prefix_lengths)
    if len(ranks) != len(prefix_lengths):
        raise ValueError("ranks and prefix_lengths need one row per example.")
    out: dict = {
        f"HR@{k}": metrics.hit_rate_at_k(ranks, k),
        f"MRR@{k}": metrics.mrr_at_k(ranks, k),
        f"NDCG@{k}": metrics.ndcg_at_k(ranks, k),
    }
    if top_items is not None:
        num_items = len(popularity) - 1
        out[f"coverage@{k}"] = (metrics.coverage_at_k(top_items, num_items, k)
                                if len(top_items) else math.nan)
        out[f"popularity_bias@{k}"] = metrics.popularity_bias_at_k(top_items, popularity, k)
        out[f"avg_popularity@{k}"] = metrics.average_popularity_at_k(top_items, popularity, k)
        out[f"long_tail@{k}"] = metrics.long_tail_share_at_k(top_items, popularity, k)
    if targets is not None:
        out[f"long_tail_HR@{k}"] = metrics.long_tail_hit_rate_at_k(ranks, targets, popularity, k)
    out["examples"] = int(len(ranks))
    hr = metrics.by_length_bucket(metrics.hit_rate_at_k, prefix_lengths, ranks, k=k)
    mrr = metrics.by_length_bucket(metrics.mrr_at_k, prefix_lengths, ranks, k=k)
    out["by_length"] = {
        label: {f"HR@{k}": hr[label][0], f"MRR@{k}": mrr[label][0], "examples": hr[label][1]}
        for label in metrics.length_bucket_labels()
    }
    return out


def evaluate_ranked(top_items, targets, prefix_lengths, item_popularity, k: int = K) -> dict:
    """:func:`metric_table` of lists of item indices against target indices.

    Args:
        top_items: (S, >=K) recommended item indices, best first (only the first ``k`` count).
        targets: (S,) true next item indices.
        prefix_lengths: (S,) clicks each list was computed from.
        item_popularity: (N + 1,) training clicks per item index (entry 0, padding, ignored).
        k: cut-off.
    """
    top_items = np.asarray(top_items)
    if top_items.ndim != 2 or top_items.shape[1] < k:
        raise ValueError(f"top_items must be (S, K) with K >= {k}, got shape {top_items.shape}.")
    if not len(targets) == len(prefix_lengths) == len(top_items):
        raise ValueError("top_items, targets and prefix_lengths need one row per example.")
    top_items = top_items[:, :k]
    ranks = metrics.ranks_from_topk(top_items, np.asarray(targets))
    return metric_table(ranks, prefix_lengths, k, top_items=top_items, popularity=item_popularity,
                        targets=targets)


def evaluate_graphs(model, source, item_popularity, k: int = K, *, batch_size: int = 500,
                    max_examples: int | None = None) -> dict:
    """:func:`evaluate_ranked` of an SR-GNN model's top-K lists (every item scored) on a
    session-graph Parquet split, with the list-level and long-tail measures that the training
    loop's per-epoch validation leaves out.

    Args:
        model: an :class:`~srgnn.model.network.SRGNN`.
        source: a session-graph Parquet split (file, folder or list of files).
        item_popularity: (N + 1,) training clicks (or training-target counts) per item index.
        k: cut-off; batch_size, max_examples: as for the reader.
    """
    import torch

    from srgnn.model.reader import GraphParquetReader

    reader = GraphParquetReader(source, batch_size, shuffle=False, max_examples=max_examples)
    was_training = model.training
    model.eval()
    tops, targets, lengths = [], [], []
    try:
        with torch.inference_mode():
            for batch in reader.batches():
                scores = model(batch)  # (B, N): column j is item j + 1
                top = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices + 1
                tops.append(np.pad(top.numpy(), ((0, 0), (0, k - top.shape[1]))))
                targets.append(batch.targets.numpy())
                lengths.append(batch.prefix_lengths.numpy())
    finally:
        model.train(was_training)
    if not tops:
        return metric_table(np.zeros(0, np.int64), np.zeros(0, np.int64), k)
    return evaluate_ranked(np.concatenate(tops), np.concatenate(targets),
                           np.concatenate(lengths), item_popularity, k)


def evaluate(recommender, held_out: HeldOut, k: int = K, batch_size: int = SESSION_BATCH) -> dict:
    """HR@K, MRR@K and more of ``recommender`` on ``held_out``.

    The recommender sees the prefixes as raw item ids and its top-K raw ids are compared with
    the raw target ids, so a recommender with another vocabulary is judged on exactly the same
    examples; prefixes it cannot map at all get its popularity fallback, as in production.
    List-level measures are taken over ``held_out.catalogue``.

    Returns:
        :func:`metric_table`'s keys plus ``fallback_share`` (share of prefixes not answered by
        the model itself) and ``recommend_s``.
    """
    started = time.perf_counter()
    parts, fallbacks = [], 0
    for _, recs in recommend_batches(recommender, held_out.sessions, k, batch_size,
                                     times=held_out.times):
        parts.append(np.asarray(recs.item_ids, dtype=object))
        fallbacks += recs.fallbacks
    seconds = time.perf_counter() - started
    top = np.concatenate(parts) if parts else np.empty((0, k), dtype=object)
    if top.shape[1] < k:  # a catalogue smaller than k: shorter lists
        top = np.pad(top, ((0, 0), (0, k - top.shape[1])), constant_values=None)
    top = top[:, :k]
    if held_out.absent is not None:
        top[held_out.absent] = None  # no session: nothing was recommended
    ranks = metrics.ranks_from_topk(top, held_out.targets)  # raw ids against raw ids
    filled = top.astype(str)
    top_indices = held_out.catalogue.indices(filled.ravel()).reshape(top.shape)
    top_indices[top == None] = 0  # noqa: E711 - elementwise on an object array
    target_indices = held_out.catalogue.indices(held_out.targets)
    result = metric_table(ranks, held_out.prefix_lengths, k, top_items=top_indices,
                          popularity=held_out.catalogue.popularity, targets=target_indices)
    result["fallback_share"] = fallbacks / len(ranks) if len(ranks) else math.nan
    result["recommend_s"] = seconds
    return result


def evaluate_all(recommenders: dict, held_out: HeldOut, k: int = K) -> dict[str, dict]:
    """:func:`evaluate` of each named recommender on the same examples, in order."""
    return {name: evaluate(recommender, held_out, k) for name, recommender in recommenders.items()}


def fit_baselines(run: RunFolder, names=DEFAULT_BASELINES, *, splits=("train",),
                  params: dict | None = None) -> tuple[dict, dict[str, float]]:
    """Fit each named baseline on the run's ``sessions/<split>`` (default: train only, the data
    the model trains on) as a recommender over the run's vocabulary.

    Returns:
        ``({name: Recommender}, {name: fit seconds})``.
    """
    from srgnn.data.ragged import concat_lists
    from srgnn.model.baselines import make_baseline
    from srgnn.serving.recommender import BaselineRanker, Recommender

    params = params or {}
    parts = [run.sessions(split) for split in splits]
    values, offsets = concat_lists([(p.values, p.offsets) for p in parts])
    times = None
    if all(p.end_times is not None for p in parts):
        times = np.concatenate([p.end_times for p in parts])
    vocabulary = run.vocabulary
    fitted, seconds = {}, {}
    for name in names:
        started = time.perf_counter()
        baseline = make_baseline(name, **params.get(name, {})).fit_flat(
            values, offsets, num_items=vocabulary.num_items, session_times=times)
        seconds[name] = time.perf_counter() - started
        fitted[name] = Recommender(BaselineRanker(baseline), vocabulary)
    return fitted, seconds
