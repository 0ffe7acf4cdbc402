"""Neighbourhood baselines: item-KNN, session-KNN and vector session-KNN."""

from __future__ import annotations

import numpy as np

from srgnn.data.ragged import counts_to_offsets, expand_ranges, position_in_group, row_of_value
from srgnn.model.baselines.base import SessionRecommender, chunks_by_budget, group_sum, last_items

__all__ = ["ItemKNN", "SessionKNN", "VectorSessionKNN"]


class ItemKNN(SessionRecommender):
    """Item-KNN (Hidasi et al., "Session-based recommendations with recurrent neural
    networks", ICLR 2016): recommends the items most similar to the prefix's last item.

    With ``c_i`` the number of training sessions holding item ``i`` and ``c_ij`` those holding
    both ``i`` and ``j != i``::

        sim(i, j) = c_ij / ((c_i + lambda)^alpha * (c_j + lambda)^(1 - alpha))

    ``alpha = 0.5, lambda = 0`` is the cosine between the items' session-incidence vectors;
    ``lambda`` damps coincidental high similarities of rarely seen items.

    Args:
        num_neighbors: neighbours kept per item after fitting (lists longer than this are cut).
        regularization: ``lambda``.
        alpha: the exponent above.
    """

    name = "iknn"

    def __init__(self, num_neighbors: int = 100, regularization: float = 20.0, alpha: float = 0.5):
        if num_neighbors < 1:
            raise ValueError("num_neighbors must be at least 1.")
        self.num_neighbors = num_neighbors
        self.regularization = regularization
        self.alpha = alpha

    def _fit(self, values, offsets, session_times, pair_budget: int = 20_000_000):
        span = self.num_items_ + 1
        session, item = self._distinct_session_items(values, offsets)
        session_support = np.bincount(item, minlength=span).astype(np.float64)
        lengths = np.bincount(session, minlength=len(offsets) - 1)
        starts = counts_to_offsets(lengths)
        # Every ordered pair (i, j), i != j, of distinct items of a session, in session chunks
        # so that at most ~pair_budget pairs live at once.
        pair_keys, pair_counts = [], []
        for first, stop in chunks_by_budget(lengths**2, pair_budget):
            lo, hi = starts[first], starts[stop]
            element = np.arange(lo, hi, dtype=np.int64)
            owner, partner = expand_ranges(starts[session[element]], lengths[session[element]])
            left, right = item[element[owner]], item[partner]
            distinct = left != right
            keys, counts, _ = group_sum(left[distinct] * span + right[distinct])
            pair_keys.append(keys)
            pair_counts.append(counts)
        keys, _, together = group_sum(
            np.concatenate(pair_keys), np.concatenate(pair_counts).astype(np.float64)
        )
        left, right = keys // span, keys % span
        lam, alpha = self.regularization, self.alpha
        similarity = together / (
            (session_support[left] + lam) ** alpha * (session_support[right] + lam) ** (1.0 - alpha)
        )
        order = np.lexsort((self.popularity_rank_[right], -similarity, left))
        left, right, similarity = left[order], right[order], similarity[order]
        position, _ = position_in_group(left, span)
        keep = position < self.num_neighbors
        self.neighbor_indptr_ = counts_to_offsets(np.bincount(left[keep], minlength=span))
        self.neighbor_items_ = right[keep]
        self.neighbor_scores_ = similarity[keep]

    def _recommend(self, values, offsets, k):
        return self._top_k_by_key_item(
            self.neighbor_indptr_, self.neighbor_items_, self.neighbor_scores_,
            last_items(values, offsets), k,
        )

    def augment(self, values, offsets, neighbors: int, rows=None):
        """Sessions with their co-click neighbours prepended (older positions than any click).

        A session's candidates are the items outside it, scored by the sum of their
        similarity to each distinct item of the session (the fitted neighbour lists); the
        ``neighbors`` best (ties: the more popular) go before the first click, the best one
        nearest to it, so the clicks keep their order and the last click stays last. A
        session whose items have no neighbours is left as it is.

        Args:
            values, offsets: sessions of item indices (CSR).
            neighbors: items added at most per session.
            rows: (S,) bool, the sessions to augment; ``None``: all.

        Returns:
            ``(values, offsets)`` of the augmented sessions, in the same order.
        """
        values = np.asarray(values, dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64)
        num_rows = len(offsets) - 1
        span = self.num_items_ + 1
        row_of, item = self._distinct_session_items(values, offsets)
        if rows is not None:
            chosen = np.asarray(rows, dtype=bool)[row_of]
            row_of, item = row_of[chosen], item[chosen]
        indptr = self.neighbor_indptr_
        owner, position = expand_ranges(indptr[item], indptr[item + 1] - indptr[item])
        keys = row_of[owner] * span + self.neighbor_items_[position]
        outside = ~np.isin(keys, row_of * span + item)  # items of the session are no candidates
        keys, _, scores = group_sum(keys[outside], self.neighbor_scores_[position][outside])
        cand_rows, cand_items = keys // span, keys % span
        order = np.lexsort((self.popularity_rank_[cand_items], -scores, cand_rows))
        cand_rows, cand_items = cand_rows[order], cand_items[order]
        rank, _ = position_in_group(cand_rows, num_rows)
        keep = rank < neighbors
        cand_rows, cand_items, rank = cand_rows[keep], cand_items[keep], rank[keep]
        added = np.bincount(cand_rows, minlength=num_rows)
        lengths = np.diff(offsets)
        new_offsets = counts_to_offsets(added + lengths)
        out = np.empty(new_offsets[-1], dtype=np.int64)
        out[new_offsets[cand_rows] + added[cand_rows] - 1 - rank] = cand_items  # best one last
        click_row = row_of_value(offsets)
        out[new_offsets[click_row] + added[click_row] + np.arange(len(values)) - offsets[click_row]] = values
        return out, new_offsets

    def save(self, path) -> None:
        """Write the fitted model (neighbour lists, training clicks, parameters) as ``.npz``."""
        if not hasattr(self, "neighbor_indptr_"):
            raise RuntimeError("ItemKNN must be fitted before save().")
        np.savez(path, indptr=self.neighbor_indptr_, items=self.neighbor_items_,
                 scores=self.neighbor_scores_, item_clicks=self.item_clicks_,
                 params=np.array([self.num_neighbors, self.regularization, self.alpha], dtype=np.float64))

    @classmethod
    def load(cls, path) -> "ItemKNN":
        """A fitted model from :meth:`save`'s file (no pickled objects are read)."""
        with np.load(path, allow_pickle=False) as data:
            num_neighbors, regularization, alpha = data["params"]
            model = cls(int(num_neighbors), float(regularization), float(alpha))
            model._set_popularity(data["item_clicks"])
            model.neighbor_indptr_ = data["indptr"].astype(np.int64)
            model.neighbor_items_ = data["items"].astype(np.int64)
            model.neighbor_scores_ = data["scores"].astype(np.float64)
        if len(model.neighbor_indptr_) != model.num_items_ + 2 or (  # one list per index 0..N
                len(model.neighbor_items_) and model.neighbor_items_.max() > model.num_items_):
            raise ValueError(f"{path}: inconsistent item-KNN arrays.")
        return model


class SessionKNN(SessionRecommender):
    """SKNN (Ludewig and Jannach, "Evaluation of session-based recommendation algorithms",
    UMUAI 2018): nearest neighbour sessions of the whole prefix.

    For a prefix ``s`` with distinct items ``I(s)``:

    1. candidates: training sessions sharing an item with ``s`` (via an item -> session
       index); of those, the ``sample_size`` most recent are kept;
    2. similarity to each sampled session ``n``:
       ``sim(s, n) = |I(s) & I(n)| / sqrt(|I(s)| * |I(n)|)`` (cosine of binary vectors);
    3. the ``num_neighbors`` most similar sessions ``N(s)`` (ties: the more recent);
    4. ``score(i) = sum_{n in N(s), i in I(n)} sim(s, n)``.

    Implementation note: the most recent ``m`` sessions of a union of item -> session lists
    are among the most recent ``m`` of each list, so only those are indexed per item; for a
    sampled session, its number of hits across the lists is exactly ``|I(s) & I(n)|``.

    Args:
        num_neighbors: ``k``, neighbour sessions used for scoring.
        sample_size: ``m``, most recent candidate sessions considered.
    """

    name = "sknn"

    def __init__(self, num_neighbors: int = 100, sample_size: int = 500):
        if num_neighbors < 1 or sample_size < 1:
            raise ValueError("num_neighbors and sample_size must be at least 1.")
        self.num_neighbors = num_neighbors
        self.sample_size = sample_size

    def _fit(self, values, offsets, session_times):
        num_sessions = len(offsets) - 1
        span = self.num_items_ + 1
        session, item = self._distinct_session_items(values, offsets)
        self.session_indptr_ = counts_to_offsets(np.bincount(session, minlength=num_sessions))
        self.session_items_ = item  # distinct items of each session (CSR by session)
        self.session_sizes_ = np.diff(self.session_indptr_).astype(np.float64)
        # Recency rank: 0 = most recent session (later input position wins ties).
        times = np.arange(num_sessions) if session_times is None else session_times
        by_recency = np.lexsort((-np.arange(num_sessions), -np.asarray(times, dtype=np.float64)))
        recency = np.empty(num_sessions, dtype=np.int64)
        recency[by_recency] = np.arange(num_sessions)
        self.session_recency_ = recency
        # item -> its sample_size most recent sessions (CSR by item, most recent first).
        order = np.lexsort((recency[session], item))
        item_sorted, session_sorted = item[order], session[order]
        position, _ = position_in_group(item_sorted, span)
        keep = position < self.sample_size
        self.item_indptr_ = counts_to_offsets(np.bincount(item_sorted[keep], minlength=span))
        self.item_sessions_ = session_sorted[keep]

    def _prefix_weights(self, values, offsets):
        """Distinct ``(row, item)`` of the prefixes with the item's weight (1 for SKNN)."""
        row, item = self._distinct_session_items(values, offsets)
        return row, item, np.ones(len(row))

    def _similarity(self, hits, weighted_hits, prefix_sizes, neighbor_sizes):
        return hits / np.sqrt(prefix_sizes * neighbor_sizes)

    def _candidates(self, values, offsets, candidate_budget: int = 4_000_000):
        num_rows = len(offsets) - 1
        row, item, weight = self._prefix_weights(values, offsets)
        prefix_sizes = np.bincount(row, minlength=num_rows).astype(np.float64)
        list_lengths = self.item_indptr_[item + 1] - self.item_indptr_[item]
        cost = np.bincount(row, weights=list_lengths, minlength=num_rows)
        pair_starts = counts_to_offsets(np.bincount(row, minlength=num_rows))
        out_rows, out_items, out_scores = [], [], []
        for first, stop in chunks_by_budget(cost, candidate_budget):
            lo, hi = pair_starts[first], pair_starts[stop]
            rows, scored_items, scores = self._score_chunk(
                row[lo:hi] - first, item[lo:hi], weight[lo:hi],
                prefix_sizes[first:stop], stop - first,
            )
            out_rows.append(rows + first)
            out_items.append(scored_items)
            out_scores.append(scores)
        if not out_rows:  # no prefixes at all
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
        return np.concatenate(out_rows), np.concatenate(out_items), np.concatenate(out_scores)

    def _score_chunk(self, row, item, weight, prefix_sizes, num_rows):
        num_sessions = len(self.session_recency_)
        recency = self.session_recency_
        # 1. every (prefix, candidate session) hit through the item -> session index
        list_starts = self.item_indptr_[item]
        owner, position = expand_ranges(list_starts, self.item_indptr_[item + 1] - list_starts)
        pair_keys = row[owner] * num_sessions + self.item_sessions_[position]
        keys, hits, weighted_hits = group_sum(pair_keys, weight[owner])
        pair_row, neighbor = keys // num_sessions, keys % num_sessions
        # 2. keep the sample_size most recent candidates per prefix
        order = np.lexsort((recency[neighbor], pair_row))
        pair_row, neighbor = pair_row[order], neighbor[order]
        hits, weighted_hits = hits[order], weighted_hits[order]
        position, _ = position_in_group(pair_row, num_rows)
        sampled = position < self.sample_size
        pair_row, neighbor = pair_row[sampled], neighbor[sampled]
        similarity = self._similarity(
            hits[sampled].astype(np.float64),
            weighted_hits[sampled],
            prefix_sizes[pair_row],
            self.session_sizes_[neighbor],
        )
        # 3. the num_neighbors most similar (ties: more recent first)
        order = np.lexsort((recency[neighbor], -similarity, pair_row))
        pair_row, neighbor, similarity = pair_row[order], neighbor[order], similarity[order]
        position, _ = position_in_group(pair_row, num_rows)
        nearest = position < self.num_neighbors
        pair_row, neighbor, similarity = pair_row[nearest], neighbor[nearest], similarity[nearest]
        # 4. item scores: sum of the similarities of the neighbours holding the item
        session_starts = self.session_indptr_[neighbor]
        owner, position = expand_ranges(
            session_starts, self.session_indptr_[neighbor + 1] - session_starts
        )
        span = self.num_items_ + 1
        item_keys = pair_row[owner] * span + self.session_items_[position]
        keys, _, scores = group_sum(item_keys, similarity[owner])
        return keys // span, keys % span, scores


class VectorSessionKNN(SessionKNN):
    """V-SKNN (Ludewig and Jannach, UMUAI 2018): SKNN with a position-weighted prefix.

    The prefix is a real-valued vector: the item at (1-based) position ``p`` of a prefix of
    length ``L`` weighs ``w(p) = p / L`` (linear decay towards the start; the last click
    weighs 1; a repeated item takes the weight of its latest position). Training sessions
    stay binary, and the similarity is the dot product

        sim(s, n) = sum_{i in I(s) & I(n)} w_s(i)

    Sampling, neighbour selection and item scoring are as in :class:`SessionKNN`.
    """

    name = "vsknn"

    def _prefix_weights(self, values, offsets):
        span = self.num_items_ + 1
        row = row_of_value(offsets)
        lengths = np.diff(offsets).astype(np.float64)
        position = np.arange(len(values)) - offsets[row] + 1
        weight = position / lengths[row] if len(values) else np.zeros(0)
        keys = row * span + values
        # latest position of each (row, item): sort by key then weight, keep each group's last
        order = np.lexsort((weight, keys))
        keys, weight = keys[order], weight[order]
        last = np.append(keys[1:] != keys[:-1], True) if len(keys) else np.zeros(0, dtype=bool)
        keys, weight = keys[last], weight[last]
        return keys // span, keys % span, weight

    def _similarity(self, hits, weighted_hits, prefix_sizes, neighbor_sizes):
        return weighted_hits
