"""What every baseline shares: fitting, training popularity, top-K selection, filling.

See :mod:`srgnn.model.baselines` for the protocol and the list of models.
"""

from __future__ import annotations

import json

import numpy as np

from srgnn.data.ragged import (check_lists, counts_to_offsets, expand_ranges, from_lists,
                               position_in_group, row_of_value)

__all__ = ["SessionRecommender", "group_sum", "chunks_by_budget", "last_items"]


def group_sum(keys: np.ndarray, weights: np.ndarray | None = None):
    """Distinct keys (sorted) with the number of occurrences and, if given, the sum of weights."""
    unique, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    sums = None if weights is None else np.bincount(inverse, weights=weights, minlength=len(unique))
    return unique, counts, sums



def chunks_by_budget(cost: np.ndarray, budget: int) -> list[tuple[int, int]]:
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




def last_items(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(S,) last item of each prefix, 0 for an empty prefix."""
    lengths = np.diff(offsets)
    return np.where(lengths > 0, values[np.maximum(offsets[1:] - 1, 0)] if len(values) else 0, 0)




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
        values, offsets = from_lists(train_sessions)
        return self.fit_flat(values, offsets, num_items=num_items, session_times=session_times)

    def fit_flat(self, values, offsets, *, num_items: int | None = None, session_times=None):
        """:meth:`fit` on Arrow-style flat ``values`` + ``offsets``."""
        values = np.asarray(values, dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64)
        check_lists(values, offsets)
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
        check_lists(values, offsets)
        known = (values >= 1) & (values <= self.num_items_)
        if not known.all():  # drop unknown items, keep every prefix (possibly empty)
            kept_per_row = np.bincount(row_of_value(offsets)[known], minlength=len(offsets) - 1)
            values, offsets = values[known], counts_to_offsets(kept_per_row)
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
        position, counts = position_in_group(rows, num_rows)
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
        owner, position = expand_ranges(indptr[keys], indptr[keys + 1] - indptr[keys])
        top_items, top_scores = self._top_k(
            owner, neighbor_items[position], neighbor_scores[position], len(keys), k
        )
        return top_items[inverse], top_scores[inverse]

    def _distinct_session_items(self, values, offsets):
        """(session, item) pairs of distinct items per session, sorted by session then item."""
        keys = np.unique(row_of_value(offsets) * (self.num_items_ + 1) + values)
        return keys // (self.num_items_ + 1), keys % (self.num_items_ + 1)

    # -- persistence ---------------------------------------------------------------------------
    _DERIVED = ("popularity_order_", "popularity_rank_")  # rebuilt from item_clicks_ on load

    def save(self, path) -> None:
        """Write the fitted model as ``.npz``: its parameters (JSON) and every fitted array.

        No pickled object is written; :meth:`load` of the same class reads it back.
        """
        if not hasattr(self, "num_items_"):
            raise RuntimeError(f"{type(self).__name__} must be fitted before save().")
        arrays = {f"fitted.{name}": value for name, value in vars(self).items()
                  if name.endswith("_") and isinstance(value, np.ndarray)
                  and name not in self._DERIVED}
        params = {name: value for name, value in vars(self).items() if not name.endswith("_")}
        with open(path, "wb") as handle:  # a file object: np.savez adds no ".npz" to the name
            np.savez(handle, name=np.array(self.name), params=np.array(json.dumps(params)),
                     **arrays)

    @classmethod
    def load(cls, path) -> "SessionRecommender":
        """A fitted model from :meth:`save`'s file (no pickled objects are read)."""
        with np.load(path, allow_pickle=False) as data:
            name = str(data["name"]) if "name" in data.files else None
            if name != cls.name:
                raise ValueError(f"{path} holds a {name!r} model, not {cls.name!r}.")
            model = cls(**json.loads(str(data["params"])))
            model._set_popularity(data["fitted.item_clicks_"])
            for key in data.files:
                if key.startswith("fitted.") and key != "fitted.item_clicks_":
                    setattr(model, key[len("fitted."):], data[key])
        return model

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_"))
        return f"{type(self).__name__}({params})"
