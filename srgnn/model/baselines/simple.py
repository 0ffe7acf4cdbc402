"""Baselines without neighbours: popularity, session popularity, first-order Markov chain."""

from __future__ import annotations

import numpy as np

from srgnn.data.ragged import counts_to_offsets, row_of_value
from srgnn.model.baselines.base import SessionRecommender, group_sum, last_items

__all__ = ["Popularity", "SessionPopularity", "FirstOrderMarkov"]


class Popularity(SessionRecommender):
    """POP: the same K most clicked training items for every prefix; score = training clicks."""

    name = "pop"

    def _recommend(self, values, offsets, k):
        num_rows = len(offsets) - 1
        items = self.popularity_order_[:k]
        top_items = np.repeat(items[None, :], num_rows, axis=0)
        scores = self.item_clicks_[items].astype(np.float64)
        top_scores = np.repeat(scores[None, :], num_rows, axis=0)
        return top_items, top_scores


class SessionPopularity(SessionRecommender):
    """S-POP: the prefix's own items by in-prefix click count (ties: global popularity),
    then the globally most popular items. Score = in-prefix count, fillers 0."""

    name = "spop"

    def _candidates(self, values, offsets):
        span = self.num_items_ + 1
        keys, counts, _ = group_sum(row_of_value(offsets) * span + values)
        return keys // span, keys % span, counts.astype(np.float64)


class FirstOrderMarkov(SessionRecommender):
    """First-order Markov chain on the last item.

    ``score(j | prefix) = n(last -> j) / sum_j' n(last -> j')`` where ``n(i -> j)`` counts
    consecutive training clicks ``i, j`` (repeats ``i, i`` included). A last item never
    followed by anything in training gets the popularity list.
    """

    name = "markov"

    def _fit(self, values, offsets, session_times):
        session = row_of_value(offsets)
        same = session[:-1] == session[1:]
        span = self.num_items_ + 1
        keys, counts, _ = group_sum(values[:-1][same] * span + values[1:][same])
        source = keys // span
        out_degree = np.bincount(source, weights=counts, minlength=span)
        self.transition_indptr_ = counts_to_offsets(np.bincount(source, minlength=span))
        self.transition_items_ = keys % span
        self.transition_probs_ = counts / out_degree[source]

    def _recommend(self, values, offsets, k):
        return self._top_k_by_key_item(
            self.transition_indptr_, self.transition_items_, self.transition_probs_,
            last_items(values, offsets), k,
        )
