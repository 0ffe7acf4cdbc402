"""A blend of SR-GNN and a baseline: one ranker whose scores mix both.

For each prefix both rankers give their ``pool`` best items (at least ``k``) with scores; each
list is min-max normalised inside the prefix (its best item 1, its ``pool``-th 0, items
outside the list 0), and an item's blended score is

    weight * srgnn_normalised + (1 - weight) * baseline_normalised

Ties go to the order of the ranker with the larger weight (SR-GNN at 0.5). ``weight = 1``
gives SR-GNN's ranking and ``weight = 0`` the baseline's (for ``k`` below the pool size).
Working on the two top lists, never on a prefix-by-catalogue matrix, keeps the memory of a
blend that of its parts, and SR-GNN's top list may come from its approximate index.

The training run chooses the weight on the validation split (:mod:`srgnn.evaluation.selection`);
saved with :meth:`srgnn.serving.recommender.Recommender.save` as SR-GNN's ``model.pt``, the
baseline's ``baseline.npz`` and the weight in ``recommender.json``.
"""

from __future__ import annotations

import numpy as np

from srgnn.data.ragged import position_in_group
from srgnn.serving.predict import TopK

__all__ = ["BlendRanker", "DEFAULT_POOL", "blend_kind"]

DEFAULT_POOL = 100  # items of each ranker's list that take part in the blend


def blend_kind(baseline_kind: str) -> str:
    """The ``kind`` of a blend of SR-GNN with ``baseline_kind``, e.g. ``blend:srgnn+markov``."""
    return f"blend:srgnn+{baseline_kind}"


def _min_max(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Row-wise min-max of ``scores`` over the entries where ``valid``; 0 elsewhere and in a
    row whose valid scores are all equal."""
    scores = scores.astype(np.float64)
    low = np.where(valid, scores, np.inf).min(axis=1, keepdims=True)
    high = np.where(valid, scores, -np.inf).max(axis=1, keepdims=True)
    span = high - low  # -inf for a row without valid entries
    good = valid & (span > 0)
    return np.where(good, (np.where(valid, scores, 0.0) - np.where(good, low, 0.0))
                    / np.where(good, span, 1.0), 0.0)


class BlendRanker:
    """``weight`` x SR-GNN + ``(1 - weight)`` x a baseline (module docstring).

    Args:
        srgnn: an SR-GNN :class:`srgnn.serving.predict.Scorer`.
        baseline: a :class:`srgnn.serving.recommender.BaselineRanker` over the same items.
        weight: SR-GNN's share, in ``[0, 1]``.
        pool: items of each ranker's list blended (at least ``k`` are used).
    """

    def __init__(self, srgnn, baseline, weight: float, pool: int = DEFAULT_POOL) -> None:
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"the blend weight must lie in [0, 1], got {weight}.")
        if pool < 1:
            raise ValueError(f"the blend pool must be at least 1, got {pool}.")
        if srgnn.num_items != baseline.num_items:
            raise ValueError(f"SR-GNN scores {srgnn.num_items} items but the baseline "
                             f"{baseline.num_items}.")
        self.srgnn = srgnn
        self.baseline = baseline
        self.weight = float(weight)
        self.pool = int(pool)

    @property
    def kind(self) -> str:
        return blend_kind(self.baseline.kind)

    @property
    def num_items(self) -> int:
        return self.srgnn.num_items

    def topk_report(self) -> dict:
        return self.srgnn.topk_report()

    @property
    def uses_times(self) -> bool:
        return self.srgnn.uses_times

    def top_k(self, values, offsets, k: int = 20, times=None) -> TopK:
        k = min(k, self.num_items)
        m = min(max(self.pool, k), self.num_items)
        ours = self.srgnn.top_k(values, offsets, m, times=times)  # the baseline has no use for times
        theirs = self.baseline.top_k(values, offsets, m)
        rows = len(ours.empty)
        # Both lists side by side: (S, 2m) items, blended parts, and each list's positions.
        items = np.concatenate([ours.items, theirs.items], axis=1)
        filled = ~ours.empty[:, None]
        parts = np.concatenate([
            self.weight * _min_max(ours.scores, np.broadcast_to(filled, ours.items.shape)),
            (1.0 - self.weight) * _min_max(theirs.scores, theirs.items > 0)], axis=1)
        row = np.repeat(np.arange(rows), 2 * m)
        span = self.num_items + 1
        keys, inverse = np.unique(row * span + items.ravel(), return_inverse=True)
        score = np.bincount(inverse, weights=parts.ravel(), minlength=len(keys))
        # Each list holds an item once, so its position is a plain assignment ("not in the
        # list" = m).
        inverse = inverse.reshape(rows, 2 * m)
        positions = np.tile(np.arange(m), rows)
        first_ours = np.full(len(keys), m)
        first_ours[inverse[:, :m].ravel()] = positions
        first_theirs = np.full(len(keys), m)
        first_theirs[inverse[:, m:].ravel()] = positions
        key_row, key_item = keys // span, keys % span
        keep = key_item > 0  # the rows of empty prefixes hold index 0
        key_row, key_item = key_row[keep], key_item[keep]
        score, first_ours, first_theirs = score[keep], first_ours[keep], first_theirs[keep]
        ties = (first_theirs, first_ours) if self.weight >= 0.5 else (first_ours, first_theirs)
        order = np.lexsort((*ties, -score, key_row))
        key_row, key_item, score = key_row[order], key_item[order], score[order]
        position, _ = position_in_group(key_row, rows)
        take = position < k
        top_items = np.zeros((rows, k), dtype=np.int64)
        top_scores = np.full((rows, k), np.nan)
        top_items[key_row[take], position[take]] = key_item[take]
        top_scores[key_row[take], position[take]] = score[take]
        return TopK(items=top_items, scores=top_scores, empty=ours.empty)

    # --- persistence (srgnn.serving.recommender.save_ranker / load_ranker) ---------------------
    def save(self, path) -> dict:
        from srgnn.serving.recommender import save_ranker

        return {"kind": self.kind, "weight": self.weight, "pool": self.pool,
                "srgnn": save_ranker(self.srgnn, path), "baseline": self.baseline.save(path)}

    @classmethod
    def load(cls, path, spec: dict, **scorer_options) -> "BlendRanker":
        from srgnn.serving.recommender import load_ranker

        return cls(load_ranker(path, spec["srgnn"], **scorer_options),
                   load_ranker(path, spec["baseline"]), float(spec["weight"]),
                   int(spec.get("pool", DEFAULT_POOL)))
