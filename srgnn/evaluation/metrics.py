"""Top-K evaluation metrics for next-item recommendation, as pure numpy functions.

Everything here works on the **rank** of the true next item in each recommendation list: a
1-based position, with ``0`` meaning "not in the list". A rank greater than ``K`` counts as not
found at cut-off ``K``, so the same ranks can be scored at several cut-offs. With ``S``
examples and ``r_s`` the rank of example ``s``:

* hit rate      ``HR@K   = 1/S * sum_s 1[1 <= r_s <= K]``  (the SR-GNN paper's "P@20")
* reciprocal    ``MRR@K  = 1/S * sum_s 1[1 <= r_s <= K] / r_s``
* discounted    ``NDCG@K = 1/S * sum_s 1[1 <= r_s <= K] / log2(r_s + 1)``
  (one relevant item per list, so the ideal DCG is 1)

Two list-level measures look at what is recommended rather than at the target:

* ``coverage@K``: share of the catalogue's ``N`` items that appear in at least one top-K list;
* ``popularity_bias@K``: mean training-popularity percentile of the recommended items (see
  :func:`popularity_percentiles`): about 0.5 for items drawn uniformly from the catalogue,
  close to 1 for a recommender that only suggests best-sellers;
* ``avg_popularity@K``: mean training clicks of the recommended items;
* ``long_tail@K``: share of the recommended items that are in the long tail
  (:func:`long_tail_items`: the items outside the most popular ones that together make 80% of
  the training clicks).

One target-level measure does the same for accuracy: ``long_tail_HR@K`` is ``HR@K`` over the
examples whose target is a long-tail item (:func:`long_tail_hit_rate_at_k`).

Each metric can also be computed per session-length bucket (:data:`LENGTH_BUCKETS`, where the
length is the prefix length, i.e. the number of clicks the recommender saw) with
:func:`by_length_bucket`.

Ranks come from :func:`ranks_from_topk` (recommendation lists) or :func:`ranks_from_scores`
(a full score matrix: ``1 +`` the number of items scoring strictly higher than the target,
which is the position ``torch.topk`` gives the target when there are no ties, as in the
reference SR-GNN evaluation).

Example::

    >>> ranks = np.array([1, 3, 0, 21])
    >>> hit_rate_at_k(ranks, 20), mrr_at_k(ranks, 20)
    (0.5, 0.3333333333333333)
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = [
    "LENGTH_BUCKETS",
    "ranks_from_topk",
    "ranks_from_scores",
    "hit_rate_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "coverage_at_k",
    "popularity_percentiles",
    "popularity_bias_at_k",
    "HEAD_SHARE",
    "long_tail_items",
    "average_popularity_at_k",
    "long_tail_share_at_k",
    "long_tail_hit_rate_at_k",
    "length_bucket_labels",
    "length_bucket_index",
    "by_length_bucket",
]

# (label, smallest length, largest length) of each session-length bucket; lengths are prefix
# lengths (clicks seen before the target).
LENGTH_BUCKETS: tuple[tuple[str, int, float], ...] = (
    ("1", 1, 1),
    ("2", 2, 2),
    ("3", 3, 3),
    ("4-5", 4, 5),
    ("6-10", 6, 10),
    (">10", 11, np.inf),
)


# --------------------------------------------------------------------------------------------
# Ranks
# --------------------------------------------------------------------------------------------
def ranks_from_topk(top_items, targets) -> np.ndarray:
    """Rank of each target in its recommendation list.

    Args:
        top_items: (S, K) recommended item indices, best first.
        targets: (S,) true next item of each example.

    Returns:
        (S,) int64: ``1 + j`` for the first column ``j`` with ``top_items[s, j] == targets[s]``,
        ``0`` when the target is not in the list.
    """
    top_items = np.asarray(top_items)
    targets = np.asarray(targets)
    if top_items.ndim != 2 or targets.shape != (top_items.shape[0],):
        raise ValueError(
            "top_items must be (S, K) and targets (S,); "
            f"got {top_items.shape} and {targets.shape}."
        )
    match = top_items == targets[:, None]  # (S, K)
    found = match.any(axis=1)
    return np.where(found, match.argmax(axis=1) + 1, 0).astype(np.int64)


def ranks_from_scores(scores, targets, first_item: int = 1) -> np.ndarray:
    """Rank of each target under a full score matrix.

    ``rank_s = 1 + #{j : scores[s, j] > scores[s, c_s]}`` with ``c_s = targets[s] - first_item``
    the target's column: ties are resolved in the target's favour. The default
    ``first_item=1`` matches scores over items ``1..N`` (column ``j`` is item ``j + 1``, the
    padding index 0 has no column), as the SR-GNN model produces them; use ``first_item=0``
    when column ``j`` is item ``j`` (then give the padding column ``-inf``).

    Args:
        scores: (S, C) numpy array or torch tensor (counted on its own device).
        targets: (S,) item indices with ``first_item <= target < first_item + C``.
        first_item: the item index of column 0.

    Returns:
        (S,) int64 numpy array of ranks ``>= 1``.

    Raises:
        ValueError: on mismatched shapes, a target outside the columns or a NaN target score.
    """
    if hasattr(scores, "detach"):  # a torch tensor: compare where it lives, return numpy
        import torch

        columns = torch.as_tensor(np.asarray(targets) - first_item, device=scores.device).long()
        _check_score_shapes(tuple(scores.shape), tuple(columns.shape), columns.cpu().numpy())
        target_scores = scores.gather(1, columns[:, None])  # (S, 1)
        if torch.isnan(target_scores).any():
            raise ValueError("a target has a NaN score; ranks would be meaningless.")
        higher = (scores > target_scores).sum(dim=1)
        return (higher + 1).cpu().numpy().astype(np.int64)

    scores = np.asarray(scores)
    columns = np.asarray(targets, dtype=np.int64) - first_item
    _check_score_shapes(scores.shape, columns.shape, columns)
    target_scores = scores[np.arange(len(columns)), columns][:, None]  # (S, 1)
    if np.isnan(target_scores).any():
        raise ValueError("a target has a NaN score; ranks would be meaningless.")
    return (scores > target_scores).sum(axis=1).astype(np.int64) + 1


def _check_score_shapes(score_shape, column_shape, columns: np.ndarray) -> None:
    if len(score_shape) != 2 or column_shape != (score_shape[0],):
        raise ValueError(
            f"scores must be (S, C) and targets (S,); got {score_shape} and {column_shape}."
        )
    if len(columns) and (columns.min() < 0 or columns.max() >= score_shape[1]):
        raise ValueError("every target must have a column in scores (check first_item).")


# --------------------------------------------------------------------------------------------
# Accuracy at K
# --------------------------------------------------------------------------------------------
def _hits(ranks, k: int) -> tuple[np.ndarray, np.ndarray]:
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}.")
    ranks = np.asarray(ranks, dtype=np.int64)
    if ranks.ndim != 1:
        raise ValueError(f"ranks must be one-dimensional, got shape {ranks.shape}.")
    return ranks, (ranks >= 1) & (ranks <= k)


def hit_rate_at_k(ranks, k: int = 20) -> float:
    """``HR@K = mean(1[1 <= rank <= K])``: share of examples whose target is in the top K.

    Returns ``nan`` for an empty input.
    """
    ranks, hit = _hits(ranks, k)
    return float(hit.mean()) if len(ranks) else float("nan")


def mrr_at_k(ranks, k: int = 20) -> float:
    """``MRR@K = mean(1[1 <= rank <= K] / rank)``: reciprocal rank, 0 beyond K or not found."""
    ranks, hit = _hits(ranks, k)
    if not len(ranks):
        return float("nan")
    return float(np.where(hit, 1.0 / np.maximum(ranks, 1), 0.0).mean())


def ndcg_at_k(ranks, k: int = 20) -> float:
    """``NDCG@K = mean(1[1 <= rank <= K] / log2(rank + 1))``.

    With one relevant item per list the ideal DCG is ``1 / log2(2) = 1``, so the normalised
    gain is the discounted gain itself.
    """
    ranks, hit = _hits(ranks, k)
    if not len(ranks):
        return float("nan")
    return float(np.where(hit, 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0).mean())


# --------------------------------------------------------------------------------------------
# What gets recommended
# --------------------------------------------------------------------------------------------
def coverage_at_k(top_items, num_items: int, k: int = 20) -> float:
    """Catalogue coverage: ``|{i in 1..N : i appears in some top_items[s, :K]}| / N``.

    Entries outside ``1..num_items`` (padding 0, ``-1`` placeholders) are ignored.
    """
    if num_items < 1:
        raise ValueError(f"num_items must be positive, got {num_items}.")
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}.")
    shown = np.asarray(top_items)[:, :k].ravel()
    shown = shown[(shown >= 1) & (shown <= num_items)]
    return float(len(np.unique(shown)) / num_items)


def popularity_percentiles(item_popularity) -> np.ndarray:
    """Mid-rank popularity percentile of every item, in ``[0, 1]``.

    For items ``i = 1..N`` with training popularity ``p_i`` (clicks), ::

        q_i = (#{j : p_j < p_i} + (#{j : p_j == p_i} - 1) / 2) / (N - 1)

    so the most popular item gets 1 (when unique), the least popular 0, items with equal
    popularity share the same value, and the catalogue average is exactly 0.5.

    Args:
        item_popularity: (N + 1,) popularity per item index; entry 0 (padding) is ignored.

    Returns:
        (N + 1,) float64 percentiles, entry 0 set to ``nan``.
    """
    popularity = np.asarray(item_popularity, dtype=np.float64)
    if popularity.ndim != 1 or len(popularity) < 2:
        raise ValueError("item_popularity must be (N + 1,) with at least one item after padding 0.")
    items = popularity[1:]
    num_items = len(items)
    ordered = np.sort(items)
    lower = np.searchsorted(ordered, items, side="left")
    equal = np.searchsorted(ordered, items, side="right") - lower
    out = np.full(len(popularity), np.nan)
    out[1:] = (lower + (equal - 1) / 2.0) / max(num_items - 1, 1)
    if num_items == 1:
        out[1] = 0.5
    return out


def popularity_bias_at_k(top_items, item_popularity, k: int = 20) -> float:
    """Mean popularity percentile (:func:`popularity_percentiles`) of the recommended items.

    ``bias@K = mean over all valid entries top_items[s, j], j < K, of q_{top_items[s, j]}``.
    About 0.5 for a uniform random recommender; near 1 for one that recommends best-sellers.
    Entries outside ``1..N`` are ignored; ``nan`` when no entry is valid.
    """
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}.")
    percentiles = popularity_percentiles(item_popularity)
    shown = np.asarray(top_items)[:, :k].ravel()
    shown = shown[(shown >= 1) & (shown < len(percentiles))]
    return float(percentiles[shown].mean()) if len(shown) else float("nan")


HEAD_SHARE = 0.8  # the most popular items that together make this share of clicks are the head


def long_tail_items(item_popularity, head_share: float = HEAD_SHARE) -> np.ndarray:
    """Which items are in the long tail: ``(N + 1,)`` booleans, entry 0 (padding) ``False``.

    Items ``1..N`` are sorted by training clicks, most popular first (equal clicks: lower index
    first). The head is the shortest run of that order whose clicks add up to at least
    ``head_share`` (80%) of all clicks; every other item is long tail. With clicks
    ``[0, 50, 30, 10, 6, 4]`` (items 1..5, 100 in all) the head is items 1 and 2 (80 clicks)
    and the tail items 3, 4 and 5. Without any click nothing is long tail.
    """
    if not 0 < head_share <= 1:
        raise ValueError(f"head_share must be in (0, 1], got {head_share}.")
    popularity = np.asarray(item_popularity, dtype=np.float64)
    if popularity.ndim != 1 or len(popularity) < 2:
        raise ValueError("item_popularity must be (N + 1,) with at least one item after padding 0.")
    items = popularity[1:]
    tail = np.zeros(len(popularity), dtype=bool)
    total = items.sum()
    if not total > 0:
        return tail
    order = np.argsort(-items, kind="stable")  # most popular first, ties by index
    before = np.cumsum(items[order]) - items[order]  # clicks of the items ahead of each one
    tail[1:][order] = before >= head_share * total * (1 - 1e-12)  # the head already reached it
    return tail


def _shown(top_items, size: int, k: int) -> np.ndarray:
    """The valid entries (``1..size - 1``) of the first ``k`` columns, flattened."""
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}.")
    shown = np.asarray(top_items)[:, :k].ravel()
    return shown[(shown >= 1) & (shown < size)].astype(np.int64)


def average_popularity_at_k(top_items, item_popularity, k: int = 20) -> float:
    """``avg_popularity@K``: mean training clicks ``p_i`` over the valid entries of the lists.

    ``mean over top_items[s, j], j < K, of p_{top_items[s, j]}``; entries outside ``1..N`` are
    ignored; ``nan`` when none is valid. Compare it with the catalogue's mean ``p`` (what a
    uniform random recommender gets) or between models on the same data.
    """
    popularity = np.asarray(item_popularity, dtype=np.float64)
    shown = _shown(top_items, len(popularity), k)
    return float(popularity[shown].mean()) if len(shown) else float("nan")


def long_tail_share_at_k(top_items, item_popularity, k: int = 20,
                         head_share: float = HEAD_SHARE) -> float:
    """``long_tail@K``: share of the valid list entries that are long-tail items
    (:func:`long_tail_items`); ``nan`` when no entry is valid."""
    tail = long_tail_items(item_popularity, head_share)
    shown = _shown(top_items, len(tail), k)
    return float(tail[shown].mean()) if len(shown) else float("nan")


def long_tail_hit_rate_at_k(ranks, targets, item_popularity, k: int = 20,
                            head_share: float = HEAD_SHARE) -> float:
    """``long_tail_HR@K``: :func:`hit_rate_at_k` over the examples whose target is a long-tail
    item (:func:`long_tail_items`); targets outside ``1..N`` count as not long tail; ``nan``
    when no target is in the long tail."""
    ranks, hit = _hits(ranks, k)
    targets = np.asarray(targets, dtype=np.int64)
    if targets.shape != ranks.shape:
        raise ValueError(f"ranks and targets need one entry per example; got {ranks.shape} "
                         f"and {targets.shape}.")
    tail = long_tail_items(item_popularity, head_share)
    valid = (targets >= 1) & (targets < len(tail))
    in_tail = np.zeros(len(targets), dtype=bool)
    in_tail[valid] = tail[targets[valid]]
    return float(hit[in_tail].mean()) if in_tail.any() else float("nan")


# --------------------------------------------------------------------------------------------
# Per session-length bucket
# --------------------------------------------------------------------------------------------
def length_bucket_labels() -> list[str]:
    """Labels of :data:`LENGTH_BUCKETS`, in order: ``["1", "2", "3", "4-5", "6-10", ">10"]``."""
    return [label for label, _, _ in LENGTH_BUCKETS]


def length_bucket_index(prefix_lengths) -> np.ndarray:
    """(S,) index into :data:`LENGTH_BUCKETS` of each prefix length; ``-1`` for length < 1."""
    lengths = np.asarray(prefix_lengths, dtype=np.int64)
    out = np.full(lengths.shape, -1, dtype=np.int64)
    for index, (_, low, high) in enumerate(LENGTH_BUCKETS):
        out[(lengths >= low) & (lengths <= high)] = index
    return out


def by_length_bucket(
    metric: Callable[..., float], prefix_lengths, *per_example, **options
) -> dict[str, tuple[float, int]]:
    """Evaluate ``metric`` separately on the examples of each session-length bucket.

    Args:
        metric: one of the metric functions above (or any ``f(*arrays, **options) -> float``).
        prefix_lengths: (S,) prefix length of each example.
        *per_example: arrays with one row per example (``ranks``, or ``top_items``), each
            restricted to the bucket's rows before ``metric`` is called.
        **options: passed on unchanged (``k=20``, ``num_items=...``, ``item_popularity=...``).

    Returns:
        ``{label: (value, number_of_examples)}`` for every bucket, in bucket order; the value
        is ``nan`` for an empty bucket.

    Example::

        by_length_bucket(hit_rate_at_k, lengths, ranks, k=20)
        by_length_bucket(coverage_at_k, lengths, top_items, num_items=n, k=20)
    """
    bucket = length_bucket_index(prefix_lengths)
    arrays = [np.asarray(a) for a in per_example]
    for array in arrays:
        if len(array) != len(bucket):
            raise ValueError("every per-example array needs one row per prefix length.")
    out: dict[str, tuple[float, int]] = {}
    for index, label in enumerate(length_bucket_labels()):
        rows = bucket == index
        count = int(rows.sum())
        value = metric(*(a[rows] for a in arrays), **options) if count else float("nan")
        out[label] = (float(value), count)
    return out
