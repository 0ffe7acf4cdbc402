"""A trained SR-GNN together with its item vocabulary: raw item ids in, raw item ids out.

:class:`Recommender` is what production uses: the MLflow pyfunc model wraps it, the nightly
scoring job calls it (in-process or once per Spark executor), and the gate evaluates
champions and candidates through it. It

1. maps each session's raw item ids through the training vocabulary (unknown items are
   skipped and counted),
2. scores the known prefixes with :class:`srgnn.predict.Scorer` (graphs built by
   :func:`srgnn.graph.build_graphs`, the code that prepared the training data), and
3. gives sessions without any known item the popularity ranking of the training window,
   marked ``fallback:pop`` in :attr:`Recommendations.source`, and
4. optionally gives very short sessions to item-KNN (:class:`ShortSessionFallback`, marked
   ``fallback:iknn``): graph models are known to be weakest on one or two clicks, and the
   training run routes a length there only where validation by length shows item-KNN better.

Saved as a folder (``model.pt``, ``vocab.parquet``, ``recommender.json``, and
``item_knn.npz`` with a short-session fallback) that :meth:`Recommender.load` reads back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .graph import counts_to_offsets, gather_lists

SOURCE_MODEL = "model"
SOURCE_POPULARITY = "fallback:pop"
SOURCE_ITEM_KNN = "fallback:iknn"
FORMAT_VERSION = 1
_ITEM_KNN_FILE = "item_knn.npz"


@dataclass(frozen=True)
class ShortSessionFallback:
    """Item-KNN answers sessions whose number of known clicks is one of ``lengths``.

    Attributes:
        item_knn: a fitted :class:`srgnn.baselines.ItemKNN` over the same item indices.
        lengths: known-click counts routed to it (e.g. ``(1,)``).
        evidence: why (the validation figures by length that chose it); saved with the model.
    """

    item_knn: object
    lengths: tuple[int, ...]
    evidence: dict

    def __post_init__(self) -> None:
        if not self.lengths or min(self.lengths) < 1:
            raise ValueError("a short-session fallback needs lengths of at least 1 click.")


@dataclass(frozen=True)
class Recommendations:
    """Top-K raw item ids for ``S`` sessions, best first.

    Attributes:
        item_ids: (S, K) object array of raw item ids (strings).
        scores: (S, K) float64; model scores, or train click shares for the fallback.
        source: (S,) ``"model"`` or ``"fallback:pop"``.
        unknown_clicks: (S,) clicks on items unknown to the vocabulary (skipped).
    """

    item_ids: np.ndarray
    scores: np.ndarray
    source: np.ndarray
    unknown_clicks: np.ndarray


def _as_flat_strings(sessions):
    """(values: object array of str, offsets: int64 array) from an Arrow list array or lists."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(sessions, pa.ChunkedArray):
        sessions = sessions.combine_chunks()
    if not isinstance(sessions, (pa.ListArray, pa.LargeListArray)):
        sessions = pa.array([[str(x) for x in s] if s is not None else [] for s in sessions],
                            type=pa.list_(pa.string()))
    offsets = np.asarray(sessions.offsets, dtype=np.int64)
    offsets = offsets - offsets[0]
    values = pc.list_flatten(sessions).cast(pa.string())
    return values, offsets


class Recommender:
    """SR-GNN scorer + vocabulary + popularity fallback.

    Args:
        scorer: a :class:`srgnn.predict.Scorer` over item indices ``1..N``.
        item_ids: (N,) raw id of each item index, ``item_ids[i - 1]`` for index ``i``.
        popularity: (N + 1,) training clicks per item index (entry 0, padding, is ignored).
    """

    def __init__(self, scorer, item_ids, popularity, short_fallback: ShortSessionFallback | None = None) -> None:
        import pandas as pd

        item_ids = np.asarray(item_ids, dtype=object)
        popularity = np.asarray(popularity, dtype=np.int64)
        if len(item_ids) != scorer.num_items:
            raise ValueError(f"the vocabulary has {len(item_ids)} items but the model scores {scorer.num_items}.")
        if len(popularity) != len(item_ids) + 1:
            raise ValueError("popularity must have one entry per item index plus the padding entry 0.")
        if short_fallback is not None and short_fallback.item_knn.num_items_ != len(item_ids):
            raise ValueError("the short-session fallback must cover the vocabulary's items.")
        self.scorer = scorer
        self.item_ids = item_ids
        self.popularity = popularity
        self.short_fallback = short_fallback
        self._index = pd.Index(item_ids.astype(str))
        if not self._index.is_unique:
            raise ValueError("raw item ids in the vocabulary must be unique.")
        share = popularity[1:] / max(1, popularity[1:].sum())
        order = np.lexsort((np.arange(len(share)), -share))  # most clicked first, ties by index
        self._popular_items = order + 1
        self._popular_scores = share[order]

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    # --- construction and persistence -----------------------------------------------------
    @classmethod
    def from_training(cls, state_dict, model_config, run_dir, **scorer_options) -> "Recommender":
        """The recommender of a training run: weights + the run folder's ``vocab.parquet``."""
        from .predict import Scorer

        item_ids, popularity = read_vocab(Path(run_dir) / "vocab.parquet")
        return cls(Scorer.from_state_dict(state_dict, model_config, **scorer_options), item_ids, popularity)

    def with_short_fallback(self, short_fallback: ShortSessionFallback | None) -> "Recommender":
        """The same model and vocabulary with another short-session fallback (or none)."""
        return type(self)(self.scorer, self.item_ids, self.popularity, short_fallback)

    def save(self, path) -> None:
        """Write ``model.pt``, ``vocab.parquet`` and ``recommender.json`` into folder ``path``."""
        import dataclasses

        import pyarrow as pa
        import pyarrow.parquet as pq
        import torch

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save({"model": self.scorer.model.state_dict(),
                    "model_config": dataclasses.asdict(self.scorer.config)}, path / "model.pt")
        pq.write_table(pa.table({
            "item_id": pa.array(self.item_ids.astype(str), pa.string()),
            "item_index": pa.array(np.arange(1, self.num_items + 1, dtype=np.int32)),
            "train_clicks": pa.array(self.popularity[1:], pa.int64()),
        }), path / "vocab.parquet")
        meta = {"format_version": FORMAT_VERSION, "num_items": self.num_items,
                "model_config": dataclasses.asdict(self.scorer.config)}
        if self.short_fallback is not None:
            self.short_fallback.item_knn.save(path / _ITEM_KNN_FILE)
            meta["short_session_fallback"] = {"baseline": "iknn", "file": _ITEM_KNN_FILE,
                                              "lengths": list(self.short_fallback.lengths),
                                              "evidence": self.short_fallback.evidence}
        (path / "recommender.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, path, **scorer_options) -> "Recommender":
        """Read a folder written by :meth:`save`."""
        from .predict import Scorer

        path = Path(path)
        meta_path = path / "recommender.json"
        if not meta_path.exists():
            raise ValueError(f"{path} is not a saved recommender (no recommender.json).")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported recommender format {meta.get('format_version')!r}.")
        item_ids, popularity = read_vocab(path / "vocab.parquet")
        short_fallback = None
        if meta.get("short_session_fallback"):
            from .baselines import ItemKNN

            spec = meta["short_session_fallback"]
            short_fallback = ShortSessionFallback(ItemKNN.load(path / _ITEM_KNN_FILE),
                                                  tuple(int(n) for n in spec["lengths"]), spec.get("evidence", {}))
        return cls(Scorer.from_checkpoint(path / "model.pt", **scorer_options), item_ids, popularity,
                   short_fallback)

    # --- recommending ------------------------------------------------------------------------
    def index_items(self, raw_ids) -> np.ndarray:
        """Raw ids -> item indices (1..N), 0 where the id is not in the vocabulary."""
        raw = np.asarray(raw_ids, dtype=object).astype(str)
        return self._index.get_indexer(raw).astype(np.int64) + 1  # get_indexer: -1 if unknown

    def recommend(self, sessions, k: int = 20) -> Recommendations:
        """Top-``k`` raw item ids for each session (a list of raw item ids in click order).

        ``sessions`` is a ``pyarrow`` ``list<string>`` array (any list array is cast) or a
        sequence of sequences of ids. Known clicks keep their order; unknown ones are skipped.
        """
        values, offsets = _as_flat_strings(sessions)
        indices = self.index_items(values.to_numpy(zero_copy_only=False)) if len(values) else np.zeros(0, np.int64)
        known = indices > 0
        session_of_click = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        unknown = np.bincount(session_of_click[~known], minlength=len(offsets) - 1)
        kept_per_session = np.bincount(session_of_click[known], minlength=len(offsets) - 1)
        values, offsets = indices[known], counts_to_offsets(kept_per_session)
        short = np.zeros(len(kept_per_session), dtype=bool)
        if self.short_fallback is not None:
            short = np.isin(kept_per_session, self.short_fallback.lengths)
        long_rows = np.flatnonzero(~short)
        long_lists = gather_lists(values, offsets, long_rows) if short.any() else (values, offsets)
        top = self.scorer.top_k(*long_lists, k)
        k_eff = top.items.shape[1]
        items = np.zeros((len(short), k_eff), dtype=np.int64)
        scores = np.zeros((len(short), k_eff), dtype=np.float64)
        source = np.full(len(short), SOURCE_MODEL, dtype=object)
        items[long_rows] = np.where(top.empty[:, None], self._popular_items[:k_eff], top.items)
        scores[long_rows] = np.where(top.empty[:, None], self._popular_scores[:k_eff], top.scores)
        source[long_rows[top.empty]] = SOURCE_POPULARITY
        if short.any():
            short_rows = np.flatnonzero(short)
            items[short_rows], scores[short_rows] = self.short_fallback.item_knn.recommend(
                *gather_lists(values, offsets, short_rows), k_eff)
            source[short_rows] = SOURCE_ITEM_KNN
        return Recommendations(item_ids=self.item_ids[items - 1], scores=scores, source=source,
                               unknown_clicks=unknown)


def read_vocab(path) -> tuple[np.ndarray, np.ndarray]:
    """``(item_ids, popularity)`` from a ``vocab.parquet`` (file or Spark output folder)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path).sort_by("item_index")
    index = table.column("item_index").to_numpy()
    if len(index) and not np.array_equal(index, np.arange(1, len(index) + 1)):
        raise ValueError(f"{path}: item_index must run 1..N without gaps.")
    item_ids = np.asarray(table.column("item_id").to_pylist(), dtype=object)
    popularity = np.zeros(len(index) + 1, dtype=np.int64)
    popularity[1:] = table.column("train_clicks").to_numpy()
    return item_ids, popularity
