"""Training against popularity bias: a popularity penalty and inverse-propensity weights.

Both come from ``count_j``, how often item ``j`` is a target in the training split
(:func:`srgnn.model.sampled.target_counts`), and both are off by default.

**Popularity penalty** (``TrainConfig.popularity_penalty`` = ``lambda``). With ``p_b`` the
model's softmax over the catalogue for example ``b`` and the normalised log-popularity
``a_j = log(1 + count_j) / log(1 + max_i count_i)`` (in ``[0, 1]``), the loss gains the
expected ``a`` of the predicted distribution::

    penalty = lambda * mean_b sum_j p_bj a_j
    d penalty / d z_bj = lambda / B * p_bj (a_j - sum_i p_bi a_i)     # z: the scores

which pushes probability mass from popular items to rare ones. It needs every item's
probability, so it exists for the full softmax only (:class:`~srgnn.model.kernels._CatalogueCrossEntropy`
computes it on the scores it already has); sampled softmax refuses it.

**Inverse-propensity weights** (``TrainConfig.propensity_weighting`` = ``p``,
``propensity_clip`` = ``c``). Example ``b`` with target ``t_b`` weighs::

    w_b = min((count_{t_b} + 1) ** -p, c * median)   # median: of w over the training examples
    w_b = w_b / mean_{b' in batch} w_b'              # mean 1 per batch

and the cross-entropy becomes ``mean_b w_b * ce_b``: rare targets count more, up to ``c``
times a typical example (the clip bounds the variance that a few rare targets would add).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["PopularityLoss", "normalised_log_popularity", "propensity_weights",
           "expected_log_popularity"]


def normalised_log_popularity(counts) -> np.ndarray:
    """``a_j = log(1 + count_j) / log(1 + max count)`` of items ``1..N``: ``(N,)`` float32.

    ``counts`` is ``(N + 1,)`` (entry 0, padding, ignored); all zeros give zeros.
    """
    counts = np.asarray(counts, dtype=np.float64)[1:]
    if (counts < 0).any():
        raise ValueError("counts must be non-negative.")
    top = np.log1p(counts.max()) if len(counts) else 0.0
    return (np.log1p(counts) / top if top > 0 else np.zeros_like(counts)).astype(np.float32)


def propensity_weights(counts, power: float, clip: float) -> np.ndarray:
    """Per-item weights ``min((count_j + 1) ** -power, clip * median)``: ``(N + 1,)`` float32.

    ``median`` is the median weight over the training examples (item ``j`` counted
    ``count_j`` times); entry 0 (padding) is 0. The batch normalisation to mean 1 happens in
    :meth:`PopularityLoss.weights`.
    """
    if not 0 <= power <= 1:
        raise ValueError(f"propensity_weighting must be in [0, 1], got {power}.")
    if not clip >= 1:
        raise ValueError(f"propensity_clip must be at least 1, got {clip}.")
    counts = np.asarray(counts, dtype=np.float64)
    weights = (counts + 1.0) ** -power
    weights[0] = 0.0
    targets = counts[1:]
    if targets.sum() > 0:  # median over examples: sort the items' weights, walk the counts
        order = np.argsort(weights[1:], kind="stable")
        cumulative = np.cumsum(targets[order])
        median = weights[1:][order][np.searchsorted(cumulative, cumulative[-1] / 2.0)]
        weights = np.minimum(weights, clip * median)
    return weights.astype(np.float32)


def expected_log_popularity(scores: torch.Tensor, log_popularity: torch.Tensor) -> torch.Tensor:
    """``sum_j softmax(scores)_bj a_j`` of every row: ``(B, N), (N,) -> (B,)`` (tests, checks)."""
    return torch.softmax(scores, dim=1) @ log_popularity


@dataclass
class PopularityLoss:
    """What the training loss needs to act on popularity (see the module docstring).

    ``penalty`` is ``lambda`` (0: none); ``log_popularity`` the ``(N,)`` ``a_j``;
    ``item_weights`` the ``(N + 1,)`` clipped propensity weights, or ``None`` for none.
    """

    penalty: float
    log_popularity: torch.Tensor | None
    item_weights: torch.Tensor | None

    @classmethod
    def from_counts(cls, counts, penalty: float = 0.0, power: float = 0.0,
                    clip: float = 10.0) -> "PopularityLoss | None":
        """The loss terms for training-target ``counts`` (``(N + 1,)``); ``None`` when both
        options are off, so that the ordinary loss runs untouched."""
        if penalty < 0:
            raise ValueError(f"popularity_penalty must be non-negative, got {penalty}.")
        if penalty == 0 and power == 0:
            return None
        log_popularity = (torch.from_numpy(normalised_log_popularity(counts))
                          if penalty > 0 else None)
        item_weights = (torch.from_numpy(propensity_weights(counts, power, clip))
                        if power > 0 else None)
        return cls(float(penalty), log_popularity, item_weights)

    def weights(self, targets: torch.Tensor) -> torch.Tensor | None:
        """``(B,)`` weights of the batch's examples, mean 1; ``None`` without weighting."""
        if self.item_weights is None:
            return None
        weights = self.item_weights[targets]
        return weights / weights.mean()
