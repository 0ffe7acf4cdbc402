"""Non-neural session-based baselines, evaluated under the same protocol as SR-GNN.

Every baseline is fitted on training sessions (lists of item indices ``1..N``, time order
inside a session, sessions in chronological order) and recommends, for each prefix of a batch,
the top-K items over the whole catalogue:

    model = BASELINES["sknn"]().fit(train_sessions)
    top_items, top_scores = model.recommend(prefix_values, prefix_offsets, k=20)

Prefixes come the way Arrow stores a ``list<int>`` column: one flat array ``prefix_values``
and ``prefix_offsets`` such that prefix ``s`` is ``values[offsets[s]:offsets[s + 1]]``.
``top_items`` is ``(S, K)`` int64, best first; ``top_scores`` is ``(S, K)`` float64 and
non-increasing along each row. Rules shared by all models:

* items of a prefix outside ``1..N`` (unknown to the training data) are ignored;
* candidates a model scores are ranked by score, ties broken by training popularity (clicks,
  then the smaller item index);
* when a model has fewer than K candidates for a prefix (an unseen last item, an empty
  prefix) the list is completed with the most popular items it does not already hold; these
  fillers get score 0 (model scores of candidates are always positive);
* a list never holds the padding index 0 nor the same item twice (``k`` may not exceed N).

Models (:data:`BASELINES`), with their default hyperparameters:

* ``pop`` :class:`Popularity`: the K most clicked training items, for everybody.
* ``spop`` :class:`SessionPopularity`: the prefix's own items ranked by how often they were
  clicked in the prefix, then global popularity.
* ``iknn`` :class:`ItemKNN` (Hidasi et al., ICLR 2016): neighbours of the prefix's last
  item under ``sim(i, j) = c_ij / ((c_i + lambda)^alpha * (c_j + lambda)^(1 - alpha))``
  where ``c_ij`` counts training sessions holding both items and ``c_i`` those holding ``i``
  (``alpha = 0.5`` is a cosine regularised by ``lambda``). Defaults ``num_neighbors=100``,
  ``regularization=20``, ``alpha=0.5``.
* ``sknn`` :class:`SessionKNN` and ``vsknn`` :class:`VectorSessionKNN` (Ludewig and
  Jannach, UMUAI 2018): find the training sessions that share an item with the prefix
  through an item -> session index, keep the ``sample_size`` most recent, score them, keep
  the ``num_neighbors`` most similar, and score every item by the sum of the similarities of
  the neighbours that hold it. SKNN uses the cosine of binary item sets; V-SKNN encodes the
  prefix with linearly decaying position weights (see the class). Defaults
  ``num_neighbors=100``, ``sample_size=500``.
* ``markov`` :class:`FirstOrderMarkov`: ``P(next = j | last = i)`` from consecutive training
  clicks.

Everything is whole-array numpy (sort-based group-bys over flat ``(row, item)`` keys); the
only Python loops run over chunks of prefixes to bound memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "SessionRecommender",
    "Popularity",
    "SessionPopularity",
    "ItemKNN",
    "SessionKNN",
    "VectorSessionKNN",
    "FirstOrderMarkov",
    "BASELINES",
    "make_baseline",
    "flatten_sessions",
]


# --------------------------------------------------------------------------------------------
# Flat-array helpers
# --------------------------------------------------------------------------------------------
def flatten_sessions(sessions) -> tuple[np.ndarray, np.ndarray]:
    """``(values, offsets)`` of sessions given as a sequence of sequences or an Arrow list array.

    Accepts ``[[1, 2], [3]]``, a list of numpy arrays, a ``pyarrow.ListArray`` /
    ``LargeListArray`` or a ``pyarrow.ChunkedArray`` of either.
    """
    if hasattr(sessions, "combine_chunks"):  # pyarrow.ChunkedArray
        sessions = sessions.combine_chunks()
    if hasattr(sessions, "offsets") and hasattr(sessions, "flatten"):  # pyarrow list array
        offsets = np.asarray(sessions.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
        values = np.asarray(sessions.flatten().to_numpy(zero_copy_only=False), dtype=np.int64)
        return values, offsets - offsets[0]
    if not isinstance(sessions, Sequence) and not isinstance(sessions, np.ndarray):
        sessions = list(sessions)
    lengths = np.fromiter((len(s) for s in sessions), dtype=np.int64, count=len(sessions))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] == 0:
        return np.zeros(0, dtype=np.int64), offsets
    values = np.concatenate([np.asarray(s, dtype=np.int64).reshape(-1) for s in sessions])
    return values, offsets


def _check_offsets(values: np.ndarray, offsets: np.ndarray) -> None:
    if offsets.ndim != 1 or len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(values):
        raise ValueError(
            "offsets must start at 0 and end at len(values) "
            f"(got {len(offsets)} offsets for {len(values)} values)."
        )
    if (np.diff(offsets) < 0).any():
        raise ValueError("offsets must be non-decreasing.")


def _offsets_from_counts(counts: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def _row_of_value(offsets: np.ndarray) -> np.ndarray:
    """(len(values),) index of the row each flat value belongs to."""
    return np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))


def _expand_ranges(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ranges ``[starts[q], starts[q] + lengths[q])``: the owner ``q`` and the position of
    every element, concatenated (a vectorised ``for q: for p in range(...)``)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    owner = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    first_of_owner = np.repeat(np.cumsum(lengths) - lengths, lengths)
    positions = np.arange(len(owner), dtype=np.int64) - first_of_owner + np.repeat(starts, lengths)
    return owner, positions


def _group_sum(keys: np.ndarray, weights: np.ndarray | None = None):
    """Distinct keys (sorted) with the number of occurrences and, if given, the sum of weights."""
    unique, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    sums = None if weights is None else np.bincount(inverse, weights=weights, minlength=len(unique))
    return unique, counts, sums


def _position_in_group(sorted_groups: np.ndarray, num_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by group: 0-based position of each row in its group, and group sizes."""
    counts = np.bincount(sorted_groups, minlength=num_groups)
    starts = _offsets_from_counts(counts)[:-1]
    return np.arange(len(sorted_groups), dtype=np.int64) - starts[sorted_groups], counts


def _chunks_by_budget(cost: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Split rows ``0..len(cost)`` into consecutive ``[start, stop)`` chunks of total cost
    about ``budget`` (a row costlier than the budget gets a chunk of its own)."""
    bounds = [0]
    cumulative = np.cumsum(cost)
    while bounds[-1] < len(cost):
        start = bounds[-1]
        base = cumulative[start - 1] if start else 0
        stop = int(np.searchsorted(cumulative, base + budget, side="right"))
        bounds.append(max(stop, start + 1))
    return list(zip(bounds[:-1], bounds[1:]))


# --------------------------------------------------------------------------------------------
# Common interface
# --------------------------------------------------------------------------------------------
class SessionRecommender:
    """Base class: validation, training popularity, top-K selection and popularity filling.

    Subclasses implement ``_fit(values, offsets, session_times)`` and
    ``_candidates(values, offsets) -> (rows, items, scores)``: for each prefix row, its distinct
    candidate items with positive scores. Attributes set by :meth:`fit`:

    * ``num_items_``: N;
    * ``item_clicks_``: (N + 1,) training clicks per item (entry 0 is 0);
    * ``popularity_order_``: (N,) items by decreasing clicks, then increasing index;
    * ``popularity_rank_``: (N + 1,) position of each item in that order (padding last).
    """

    name = "base"

    def fit(self, train_sessions, *, num_items: int | None = None, session_times=None):
        """Fit on training sessions (sequence of item-index sequences or an Arrow list array).

        Args:
            train_sessions: sessions of item indices ``1..N``, in chronological order.
            num_items: catalogue size N; default the largest index seen.
            session_times: optional (num_sessions,) sortable times (e.g. each session's last
                click); only the session kNN models use them, to find recent sessions. When
                absent, later sessions in the input count as more recent.

        Returns:
            ``self``.
        """
        values, offsets = flatten_sessions(train_sessions)
        return self.fit_flat(values, offsets, num_items=num_items, session_times=session_times)

    def fit_flat(self, values, offsets, *, num_items: int | None = None, session_times=None):
        """:meth:`fit` on Arrow-style flat ``values`` + ``offsets``."""
        values = np.asarray(values, dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64)
        _check_offsets(values, offsets)
        if len(values) == 0:
            raise ValueError("cannot fit a recommender on no clicks.")
        if values.min() < 1:
            raise ValueError("training item indices must be >= 1 (0 is the padding index).")
        largest = int(values.max())
        if num_items is None:
            num_items = largest
        elif largest > num_items:
            raise ValueError(f"training data holds item {largest} but num_items is {num_items}.")
        if session_times is not None:
            session_times = np.asarray(session_times)
            if session_times.shape != (len(offsets) - 1,):
                raise ValueError("session_times needs one entry per training session.")

        self._set_popularity(np.bincount(values, minlength=int(num_items) + 1))
        self._fit(values, offsets, session_times)
        return self

    def _set_popularity(self, clicks: np.ndarray) -> None:
        """``num_items_``, ``item_clicks_``, ``popularity_order_`` and ``popularity_rank_``
        from the (N + 1,) training clicks per item."""
        self.num_items_ = len(clicks) - 1
        clicks = np.asarray(clicks, dtype=np.int64).copy()
        clicks[0] = 0
        self.item_clicks_ = clicks
        items = np.arange(1, self.num_items_ + 1, dtype=np.int64)
        self.popularity_order_ = items[np.lexsort((items, -clicks[1:]))]
        rank = np.full(self.num_items_ + 1, self.num_items_, dtype=np.int64)
        rank[self.popularity_order_] = np.arange(self.num_items_)
        self.popularity_rank_ = rank

    def recommend(
        self, prefix_values, prefix_offsets, k: int = 20
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items for every prefix.

        Args:
            prefix_values: (total_clicks,) item indices of all prefixes, concatenated.
            prefix_offsets: (S + 1,) prefix ``s`` is ``values[offsets[s]:offsets[s + 1]]``.
            k: list length, ``1 <= k <= N``.

        Returns:
            ``top_items`` (S, k) int64 in ``1..N``, distinct per row, best first, and
            ``top_scores`` (S, k) float64 (fillers score 0).
        """
        if not hasattr(self, "num_items_"):
            raise RuntimeError(f"{type(self).__name__} must be fitted before recommend().")
        if not 1 <= k <= self.num_items_:
            raise ValueError(
                f"k must be between 1 and the number of items ({self.num_items_}), got {k}."
            )
        values = np.asarray(prefix_values, dtype=np.int64)
        offsets = np.asarray(prefix_offsets, dtype=np.int64)
        _check_offsets(values, offsets)
        known = (values >= 1) & (values <= self.num_items_)
        if not known.all():  # drop unknown items, keep every prefix (possibly empty)
            kept_per_row = np.bincount(_row_of_value(offsets)[known], minlength=len(offsets) - 1)
            values, offsets = values[known], _offsets_from_counts(kept_per_row)
        return self._recommend(values, offsets, k)

    # -- to override ---------------------------------------------------------------------------
    def _fit(self, values: np.ndarray, offsets: np.ndarray, session_times) -> None:
        pass

    def _candidates(self, values: np.ndarray, offsets: np.ndarray):
        raise NotImplementedError

    def _recommend(self, values: np.ndarray, offsets: np.ndarray, k: int):
        rows, items, scores = self._candidates(values, offsets)
        return self._top_k(rows, items, scores, len(offsets) - 1, k)

    # -- shared machinery ----------------------------------------------------------------------
    def _top_k(self, rows, items, scores, num_rows: int, k: int):
        """Best ``k`` candidates per row (score desc, then popularity), filled with popular items.

        ``(rows, items)`` pairs must be distinct; non-positive scores are dropped.
        """
        positive = scores > 0
        rows, items, scores = rows[positive], items[positive], scores[positive]
        order = np.lexsort((self.popularity_rank_[items], -scores, rows))
        rows, items, scores = rows[order], items[order], scores[order]
        position, counts = _position_in_group(rows, num_rows)
        keep = position < k
        top_items = np.zeros((num_rows, k), dtype=np.int64)
        top_scores = np.zeros((num_rows, k), dtype=np.float64)
        top_items[rows[keep], position[keep]] = items[keep]
        top_scores[rows[keep], position[keep]] = scores[keep]
        self._fill_with_popular(top_items, np.minimum(counts, k))
        return top_items, top_scores

    def _fill_with_popular(
        self, top_items: np.ndarray, filled: np.ndarray, chunk: int = 4096
    ) -> None:
        """Complete rows holding ``filled[r] < k`` items with the most popular missing items.

        The ``k`` most popular items always suffice: a row already holds at most ``filled``
        of them and needs ``k - filled`` more.
        """
        k = top_items.shape[1]
        pool = self.popularity_order_[:k]  # (k,)
        rows_to_fill = np.flatnonzero(filled < k)
        for start in range(0, len(rows_to_fill), chunk):
            rows = rows_to_fill[start : start + chunk]
            held = top_items[rows]  # (R, k), zeros in free slots never match a pool item
            free = ~(held[:, None, :] == pool[None, :, None]).any(axis=2)  # (R, k) per pool item
            slot = filled[rows][:, None] + np.cumsum(free, axis=1) - 1  # (R, k)
            take = free & (slot < k)
            r, p = np.nonzero(take)
            top_items[rows[r], slot[r, p]] = pool[p]

    def _top_k_by_key_item(self, indptr, neighbor_items, neighbor_scores, key_of_row, k: int):
        """Top-k for rows that are scored by one key item each (the last item of the prefix).

        ``indptr / neighbor_items / neighbor_scores`` is a CSR table item -> scored candidates
        (row 0, the padding item, is empty). Each distinct key is ranked once.
        """
        keys, inverse = np.unique(key_of_row, return_inverse=True)
        owner, position = _expand_ranges(indptr[keys], indptr[keys + 1] - indptr[keys])
        top_items, top_scores = self._top_k(
            owner, neighbor_items[position], neighbor_scores[position], len(keys), k
        )
        return top_items[inverse], top_scores[inverse]

    def _distinct_session_items(self, values, offsets):
        """(session, item) pairs of distinct items per session, sorted by session then item."""
        keys = np.unique(_row_of_value(offsets) * (self.num_items_ + 1) + values)
        return keys // (self.num_items_ + 1), keys % (self.num_items_ + 1)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_"))
        return f"{type(self).__name__}({params})"


def _last_items(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(S,) last item of each prefix, 0 for an empty prefix."""
    lengths = np.diff(offsets)
    return np.where(lengths > 0, values[np.maximum(offsets[1:] - 1, 0)] if len(values) else 0, 0)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------
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
        keys, counts, _ = _group_sum(_row_of_value(offsets) * span + values)
        return keys // span, keys % span, counts.astype(np.float64)


class FirstOrderMarkov(SessionRecommender):
    """First-order Markov chain on the last item.

    ``score(j | prefix) = n(last -> j) / sum_j' n(last -> j')`` where ``n(i -> j)`` counts
    consecutive training clicks ``i, j`` (repeats ``i, i`` included). A last item never
    followed by anything in training gets the popularity list.
    """

    name = "markov"

    def _fit(self, values, offsets, session_times):
        session = _row_of_value(offsets)
        same = session[:-1] == session[1:]
        span = self.num_items_ + 1
        keys, counts, _ = _group_sum(values[:-1][same] * span + values[1:][same])
        source = keys // span
        out_degree = np.bincount(source, weights=counts, minlength=span)
        self.transition_indptr_ = _offsets_from_counts(np.bincount(source, minlength=span))
        self.transition_items_ = keys % span
        self.transition_probs_ = counts / out_degree[source]

    def _recommend(self, values, offsets, k):
        return self._top_k_by_key_item(
            self.transition_indptr_, self.transition_items_, self.transition_probs_,
            _last_items(values, offsets), k,
        )


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
        starts = _offsets_from_counts(lengths)
        # Every ordered pair (i, j), i != j, of distinct items of a session, in session chunks
        # so that at most ~pair_budget pairs live at once.
        pair_keys, pair_counts = [], []
        for first, stop in _chunks_by_budget(lengths**2, pair_budget):
            lo, hi = starts[first], starts[stop]
            element = np.arange(lo, hi, dtype=np.int64)
            owner, partner = _expand_ranges(starts[session[element]], lengths[session[element]])
            left, right = item[element[owner]], item[partner]
            distinct = left != right
            keys, counts, _ = _group_sum(left[distinct] * span + right[distinct])
            pair_keys.append(keys)
            pair_counts.append(counts)
        keys, _, together = _group_sum(
            np.concatenate(pair_keys), np.concatenate(pair_counts).astype(np.float64)
        )
        left, right = keys // span, keys % span
        lam, alpha = self.regularization, self.alpha
        similarity = together / (
            (session_support[left] + lam) ** alpha * (session_support[right] + lam) ** (1.0 - alpha)
        )
        order = np.lexsort((self.popularity_rank_[right], -similarity, left))
        left, right, similarity = left[order], right[order], similarity[order]
        position, _ = _position_in_group(left, span)
        keep = position < self.num_neighbors
        self.neighbor_indptr_ = _offsets_from_counts(np.bincount(left[keep], minlength=span))
        self.neighbor_items_ = right[keep]
        self.neighbor_scores_ = similarity[keep]

    def _recommend(self, values, offsets, k):
        return self._top_k_by_key_item(
            self.neighbor_indptr_, self.neighbor_items_, self.neighbor_scores_,
            _last_items(values, offsets), k,
        )

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
        self.session_indptr_ = _offsets_from_counts(np.bincount(session, minlength=num_sessions))
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
        position, _ = _position_in_group(item_sorted, span)
        keep = position < self.sample_size
        self.item_indptr_ = _offsets_from_counts(np.bincount(item_sorted[keep], minlength=span))
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
        pair_starts = _offsets_from_counts(np.bincount(row, minlength=num_rows))
        out_rows, out_items, out_scores = [], [], []
        for first, stop in _chunks_by_budget(cost, candidate_budget):
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
        owner, position = _expand_ranges(list_starts, self.item_indptr_[item + 1] - list_starts)
        pair_keys = row[owner] * num_sessions + self.item_sessions_[position]
        keys, hits, weighted_hits = _group_sum(pair_keys, weight[owner])
        pair_row, neighbor = keys // num_sessions, keys % num_sessions
        # 2. keep the sample_size most recent candidates per prefix
        order = np.lexsort((recency[neighbor], pair_row))
        pair_row, neighbor = pair_row[order], neighbor[order]
        hits, weighted_hits = hits[order], weighted_hits[order]
        position, _ = _position_in_group(pair_row, num_rows)
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
        position, _ = _position_in_group(pair_row, num_rows)
        nearest = position < self.num_neighbors
        pair_row, neighbor, similarity = pair_row[nearest], neighbor[nearest], similarity[nearest]
        # 4. item scores: sum of the similarities of the neighbours holding the item
        session_starts = self.session_indptr_[neighbor]
        owner, position = _expand_ranges(
            session_starts, self.session_indptr_[neighbor + 1] - session_starts
        )
        span = self.num_items_ + 1
        item_keys = pair_row[owner] * span + self.session_items_[position]
        keys, _, scores = _group_sum(item_keys, similarity[owner])
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
        row = _row_of_value(offsets)
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


BASELINES: dict[str, type[SessionRecommender]] = {
    "pop": Popularity,
    "spop": SessionPopularity,
    "iknn": ItemKNN,
    "sknn": SessionKNN,
    "vsknn": VectorSessionKNN,
    "markov": FirstOrderMarkov,
}


def make_baseline(name: str, **params) -> SessionRecommender:
    """An unfitted baseline by registry name, e.g. ``make_baseline("sknn", sample_size=1000)``."""
    try:
        cls = BASELINES[name]
    except KeyError:
        raise ValueError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}.") from None
    return cls(**params)
