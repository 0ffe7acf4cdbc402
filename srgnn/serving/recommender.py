"""A ranker over item indices together with its vocabulary: raw item ids in, raw item ids out.

:class:`Recommender` is what production uses: the MLflow pyfunc model wraps it, the nightly
scoring job calls it (in-process or once per Spark executor), and evaluation and the gate
judge champions, candidates and baselines through it. It

1. maps each session's raw item ids through the vocabulary (unknown items are skipped and
   counted; the clicks' times, when given, go with the known clicks to a ranker that uses
   them: an SR-GNN with ``temporal_edges``, whose edge across a skipped click gets the time
   between the two clicks it joins, as prepare does when it removes an item),
2. ranks the known prefixes with its ranker: SR-GNN's :class:`srgnn.serving.predict.Scorer`
   (graphs built by :func:`srgnn.data.graph.build_graphs`, the code that prepared the
   training data) or a fitted baseline (:class:`BaselineRanker`),
3. gives sessions without any known item the popularity ranking of the training window,
   marked ``fallback:pop`` in :attr:`Recommendations.source`, and
4. optionally gives very short sessions to item-KNN (:class:`ShortSessionFallback`, marked
   ``fallback:iknn``): graph models are known to be weakest on one or two clicks, and the
   training run routes a length there only where validation by length shows item-KNN better;
   or lets the ranker score such a session augmented with its co-click neighbours (prepended
   before the first click, so the graph has more nodes and the last click stays last; the
   row stays ``model``), for the lengths where validation shows that better.

Every recommender is saved as a folder that :meth:`Recommender.load` reads back:
``vocab.parquet``, ``recommender.json`` (its ``kind`` and how to read the ranker), the
ranker's files (SR-GNN: ``model.pt``; a baseline: ``baseline.npz``; a blend of both
(:mod:`srgnn.serving.blend`): the two), and ``item_knn.npz`` with a short-session fallback.
``kind`` names what ranks: ``srgnn``, a baseline's name (``markov``, ``iknn``, ``sknn``...) or
``blend:srgnn+<baseline>``. :func:`recommend_batches` is the one loop that gives many
sessions to a recommender in bounded batches (scoring and evaluation both use it).

Why this module is long: it is the one answer path of every kind of model, with each way a
session is answered without the ranker (popularity, item-KNN or augmentation for short
sessions, an unknown item's category) and the folder format that saves and loads them all;
split, the order in which those ways apply to a session would be spread over several files.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from srgnn.config import K
from srgnn.data.ragged import filter_values, gather_lists, row_of_value
from srgnn.data.vocab import Vocabulary, read_item_categories
from srgnn.serving.predict import TopK

__all__ = ["Recommender", "Recommendations", "ShortSessionFallback", "BaselineRanker",
           "recommend_batches", "recommend_all", "save_ranker", "load_ranker", "KIND_SRGNN",
           "SOURCE_MODEL", "SOURCE_POPULARITY", "SOURCE_ITEM_KNN", "SOURCE_CATEGORY",
           "ItemCategories", "SESSION_BATCH"]

SOURCE_MODEL = "model"
SOURCE_POPULARITY = "fallback:pop"
SOURCE_ITEM_KNN = "fallback:iknn"
SOURCE_CATEGORY = "fallback:category"
FORMAT_VERSION = 1
SESSION_BATCH = 20_000  # sessions per recommend() call: bounds the score matrix memory
_ITEM_KNN_FILE = "item_knn.npz"
_MODEL_FILE = "model.pt"
_BASELINE_FILE = "baseline.npz"
_CATEGORIES_FILE = "item_categories.parquet"
KIND_SRGNN = "srgnn"


@dataclass(frozen=True)
class ShortSessionFallback:
    """What answers sessions of a few known clicks: item-KNN instead of the ranker
    (``lengths``), or the ranker on the session augmented with its co-click neighbours
    (``augmented``, :meth:`srgnn.model.baselines.ItemKNN.augment`).

    Attributes:
        item_knn: a fitted :class:`srgnn.model.baselines.ItemKNN` over the same item indices.
        lengths: known-click counts routed to item-KNN (e.g. ``(1,)``).
        evidence: why (the validation figures by length that chose it); saved with the model.
        augmented: known-click counts the ranker scores with ``neighbors`` co-click
            neighbours prepended (older than the first click; the last click stays last).
        neighbors: neighbours added to an augmented session.
    """

    item_knn: object
    lengths: tuple[int, ...]
    evidence: dict
    augmented: tuple[int, ...] = ()
    neighbors: int = 0

    def __post_init__(self) -> None:
        routed = (*self.lengths, *self.augmented)
        if not routed or min(routed) < 1:
            raise ValueError("a short-session fallback needs lengths of at least 1 click.")
        if set(self.lengths) & set(self.augmented):
            raise ValueError("a session length goes either to item-KNN or to augmentation, not both.")
        if self.augmented and self.neighbors < 1:
            raise ValueError("augmented lengths need at least 1 neighbour to add.")

    def with_item_knn(self, item_knn) -> "ShortSessionFallback":
        """The same routes with another fitted item-KNN (e.g. one fitted on other days)."""
        return dataclasses.replace(self, item_knn=item_knn)

    def augment(self, values, offsets, times=None):
        """``(values, offsets, times)`` with the sessions of an augmented length augmented.

        The added neighbours take the time of their session's first click (``times`` given,
        else ``None``): the gaps among them and into the first click are 0."""
        if not self.augmented or len(offsets) < 2:
            return values, offsets, times
        rows = np.isin(np.diff(offsets), self.augmented)
        if not rows.any():
            return values, offsets, times
        new_values, new_offsets = self.item_knn.augment(values, offsets, self.neighbors, rows=rows)
        if times is not None:
            times = _times_of_prepended(times, offsets, new_offsets)
        return new_values, new_offsets, times

    def summary(self) -> dict:
        """The routes as JSON (``training.json``, ``recommender.json``)."""
        return {"lengths": list(self.lengths), "augmented": list(self.augmented),
                "neighbors": int(self.neighbors)}

    @classmethod
    def from_summary(cls, item_knn, summary: dict | None,
                     evidence: dict | None = None) -> "ShortSessionFallback | None":
        """The fallback :meth:`summary` describes (``None`` when it routes nothing)."""
        summary = summary or {}
        lengths = tuple(int(n) for n in summary.get("lengths") or ())
        augmented = tuple(int(n) for n in summary.get("augmented") or ())
        if not lengths and not augmented:
            return None
        return cls(item_knn, lengths, evidence or {}, augmented, int(summary.get("neighbors") or 0))


class ItemCategories:
    """The category of each item of a vocabulary, from the training input's category column.

    Answers a session whose last click is on an item the model does not know (first seen on
    the scoring day) but whose category it does: the most clicked training items of that
    category (:meth:`Recommender.recommend`, ``fallback:category``).

    Args:
        categories: (N + 1,) object array, the category of each item index (``None``: none
            known; entry 0 is the padding item).
        popularity: (N + 1,) training clicks per item index (orders a category's items).
    """

    def __init__(self, categories, popularity) -> None:
        categories = np.asarray(categories, dtype=object)
        popularity = np.asarray(popularity, dtype=np.int64)
        if len(categories) != len(popularity):
            raise ValueError("item categories need one entry per item index plus the padding entry 0.")
        self.categories = categories
        known = np.flatnonzero(np.array([c is not None for c in categories]))
        known = known[known > 0]
        names = categories[known].astype(str)
        order = np.lexsort((known, -popularity[known], names))  # by category, most clicked first
        self._items = known[order]
        self._shares = popularity[self._items] / max(1, popularity[1:].sum())
        names = names[order]
        starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]]) if len(names) else np.zeros(0, int)
        self._range = {str(names[a]): (a, b) for a, b in zip(starts, np.r_[starts[1:], len(names)])}

    def __contains__(self, category) -> bool:
        return category is not None and str(category) in self._range

    def __len__(self) -> int:
        return len(self._range)

    def top(self, category, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most clicked training items of ``category`` and their click shares."""
        start, stop = self._range.get(str(category), (0, 0))
        stop = min(stop, start + k)
        return self._items[start:stop], self._shares[start:stop]

    def write(self, path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        index = np.flatnonzero(np.array([c is not None for c in self.categories]))
        index = index[index > 0]
        pq.write_table(pa.table({"item_index": pa.array(index, pa.int32()),
                                 "category": pa.array(self.categories[index].astype(str), pa.string())}),
                       path)


@dataclass(frozen=True)
class Recommendations:
    """Top-K raw item ids for ``S`` sessions, best first.

    Attributes:
        item_ids: (S, K) object array of raw item ids (strings).
        scores: (S, K) float64; model scores, or train click shares for the fallback.
        source: (S,) ``"model"``, ``"fallback:pop"``, ``"fallback:iknn"`` or
            ``"fallback:category"``.
        unknown_clicks: (S,) clicks on items unknown to the vocabulary (skipped).
    """

    item_ids: np.ndarray
    scores: np.ndarray
    source: np.ndarray
    unknown_clicks: np.ndarray

    def __len__(self) -> int:
        return len(self.source)

    @property
    def fallbacks(self) -> int:
        """Sessions not answered by the ranker itself."""
        return int((np.asarray(self.source) != SOURCE_MODEL).sum())

    @classmethod
    def concat(cls, parts: list["Recommendations"], k: int) -> "Recommendations":
        if not parts:
            return cls(np.empty((0, k), dtype=object), np.empty((0, k)), np.empty(0, dtype=object),
                       np.empty(0, dtype=np.int64))
        return cls(*(np.concatenate([getattr(p, name) for p in parts])
                     for name in ("item_ids", "scores", "source", "unknown_clicks")))


class BaselineRanker:
    """A fitted baseline (:mod:`srgnn.model.baselines`) with the ranker interface of
    :class:`srgnn.serving.predict.Scorer`: ``num_items`` and ``top_k(values, offsets, k,
    times)`` (the baselines do not use the clicks' times)."""

    uses_times = False

    def __init__(self, baseline) -> None:
        self.baseline = baseline

    @property
    def kind(self) -> str:
        return self.baseline.name

    @property
    def num_items(self) -> int:
        return self.baseline.num_items_

    def save(self, path, file: str = _BASELINE_FILE) -> dict:
        """Write the fitted baseline to ``path/file``; returns its ``recommender.json`` entry."""
        self.baseline.save(Path(path) / file)
        return {"kind": self.kind, "file": file}

    @classmethod
    def load(cls, path, spec: dict) -> "BaselineRanker":
        from srgnn.model.baselines import BASELINES

        if spec.get("kind") not in BASELINES:
            raise ValueError(f"{path}: unknown baseline kind {spec.get('kind')!r}.")
        return cls(BASELINES[spec["kind"]].load(Path(path) / spec.get("file", _BASELINE_FILE)))

    def top_k(self, values, offsets, k: int = K, times=None) -> TopK:
        k = min(k, self.num_items)
        offsets = np.asarray(offsets, dtype=np.int64)
        items, scores = self.baseline.recommend(values, offsets, k)
        return TopK(items=items, scores=scores, empty=np.diff(offsets) == 0)


def _times_of_prepended(times, offsets, new_offsets):
    """Click times for lists that got items prepended (``offsets`` -> ``new_offsets``, the
    original clicks last): each added item takes the time of its list's first click."""
    times = np.asarray(times)
    lengths, new_lengths = np.diff(offsets), np.diff(new_offsets)
    filled = lengths > 0  # a list without clicks gets nothing prepended
    out = np.repeat(times[offsets[:-1][filled]], new_lengths[filled])
    click_row = row_of_value(offsets)
    added = new_lengths - lengths
    out[new_offsets[click_row] + added[click_row] + np.arange(len(times)) - offsets[click_row]] = times
    return out


def _flat_times(times, offsets) -> np.ndarray:
    """The flat click times of ``times`` (a pyarrow list array of timestamps or numbers of
    seconds, or a sequence of such lists), checked to hold one time per click of the sessions
    ``offsets``: ``datetime64[us]`` for timestamps, float64 seconds for numbers."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(times, pa.ChunkedArray):
        times = times.combine_chunks()
    if not isinstance(times, (pa.ListArray, pa.LargeListArray)):
        try:
            times = pa.array([[] if t is None else list(t) for t in times])
        except (pa.ArrowException, TypeError) as error:
            raise ValueError(f"times must be lists of timestamps or of seconds: {error}") from None
    time_offsets = np.asarray(times.offsets, dtype=np.int64)
    if len(time_offsets) != len(offsets) or not np.array_equal(time_offsets - time_offsets[0], offsets):
        raise ValueError("times must hold one time per click of every session.")
    flat = pc.list_flatten(times)
    if flat.null_count:
        raise ValueError(f"times holds {flat.null_count} missing value(s); every click needs its time.")
    if pa.types.is_timestamp(flat.type):
        micros = flat.cast(pa.timestamp("us", tz=flat.type.tz), safe=False).cast(pa.int64())
        return micros.to_numpy(zero_copy_only=False).astype("datetime64[us]")
    if pa.types.is_integer(flat.type) or pa.types.is_floating(flat.type) or pa.types.is_null(flat.type):
        return flat.cast(pa.float64()).to_numpy(zero_copy_only=False)
    raise ValueError(f"times must be timestamps or numbers of seconds, got {flat.type}.")


def _as_flat_strings(sessions):
    """(values: Arrow string array, offsets: int64 array) from an Arrow list array or lists."""
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
    """Ranker + vocabulary + popularity fallback (+ an optional short-session fallback).

    Args:
        ranker: ranks item indices ``1..N``: a :class:`srgnn.serving.predict.Scorer` (SR-GNN)
            or a :class:`BaselineRanker`; it has ``num_items`` and ``top_k(values, offsets, k)``.
        vocabulary: the raw ids of indices ``1..N`` and their training clicks.
        short_fallback: item-KNN for some short session lengths, or ``None``.
        categories: the training items' categories (:class:`ItemCategories`), or ``None``.
    """

    def __init__(self, ranker, vocabulary: Vocabulary,
                 short_fallback: ShortSessionFallback | None = None,
                 categories: ItemCategories | None = None) -> None:
        if vocabulary.num_items != ranker.num_items:
            raise ValueError(f"the vocabulary has {vocabulary.num_items} items but the model "
                             f"scores {ranker.num_items}.")
        if short_fallback is not None and short_fallback.item_knn.num_items_ != vocabulary.num_items:
            raise ValueError("the short-session fallback must cover the vocabulary's items.")
        self.ranker = ranker
        self.vocabulary = vocabulary
        self.short_fallback = short_fallback
        if categories is not None and len(categories.categories) != vocabulary.num_items + 1:
            raise ValueError("the item categories must cover the vocabulary's items.")
        self.categories = categories
        popularity = vocabulary.popularity
        share = popularity[1:] / max(1, popularity[1:].sum())
        order = np.lexsort((np.arange(len(share)), -share))  # most clicked first, ties by index
        self._popular_items = order + 1
        self._popular_scores = share[order]

    @property
    def num_items(self) -> int:
        return self.vocabulary.num_items

    @property
    def uses_times(self) -> bool:
        """Whether the ranker's scores depend on the clicks' times (SR-GNN with
        ``temporal_edges``, alone or blended): only then are ``times`` worth reading."""
        return bool(getattr(self.ranker, "uses_times", False))

    @property
    def item_ids(self) -> np.ndarray:
        return self.vocabulary.item_ids

    @property
    def popularity(self) -> np.ndarray:
        return self.vocabulary.popularity

    # --- construction and persistence -----------------------------------------------------
    @classmethod
    def from_training(cls, state_dict, model_config, vocabulary: Vocabulary,
                      **scorer_options) -> "Recommender":
        """The recommender of a training run: weights + the run folder's vocabulary."""
        from srgnn.serving.predict import Scorer

        return cls(Scorer.from_state_dict(state_dict, model_config, **scorer_options), vocabulary)

    def with_short_fallback(self, short_fallback: ShortSessionFallback | None) -> "Recommender":
        """The same model and vocabulary with another short-session fallback (or none)."""
        return type(self)(self.ranker, self.vocabulary, short_fallback, self.categories)

    def with_categories(self, categories) -> "Recommender":
        """The same recommender with the training items' categories: an :class:`ItemCategories`,
        or the category of each item index (an (N + 1,) array, as
        :meth:`srgnn.data.runfolder.RunFolder.item_categories` returns; ordered by this
        vocabulary's training clicks), or ``None`` (no categories)."""
        if categories is not None and not isinstance(categories, ItemCategories):
            categories = ItemCategories(categories, self.vocabulary.popularity)
        return type(self)(self.ranker, self.vocabulary, self.short_fallback, categories)

    @property
    def kind(self) -> str:
        """What ranks: ``srgnn``, a baseline's name, or ``blend:srgnn+<baseline>``."""
        return getattr(self.ranker, "kind", KIND_SRGNN)

    def save(self, path) -> None:
        """Write the ranker's files, ``vocab.parquet`` and ``recommender.json`` into folder
        ``path`` (module docstring)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        spec = save_ranker(self.ranker, path)
        self.vocabulary.write(path / "vocab.parquet")
        meta = {"format_version": FORMAT_VERSION, "num_items": self.num_items, "kind": self.kind,
                "ranker": spec}
        if "model_config" in spec:
            meta["model_config"] = spec["model_config"]
        if self.short_fallback is not None:
            self.short_fallback.item_knn.save(path / _ITEM_KNN_FILE)
            meta["short_session_fallback"] = {"baseline": "iknn", "file": _ITEM_KNN_FILE,
                                              **self.short_fallback.summary(),
                                              "evidence": self.short_fallback.evidence}
        if self.categories is not None:
            self.categories.write(path / _CATEGORIES_FILE)
            meta["item_categories"] = {"file": _CATEGORIES_FILE, "categories": len(self.categories)}
        (path / "recommender.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, path, **scorer_options) -> "Recommender":
        """Read a folder written by :meth:`save` (``scorer_options`` go to an SR-GNN scorer)."""
        path = Path(path)
        meta_path = path / "recommender.json"
        if not meta_path.exists():
            raise ValueError(f"{path} is not a saved recommender (no recommender.json).")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported recommender format {meta.get('format_version')!r}.")
        short_fallback = None
        if meta.get("short_session_fallback"):
            from srgnn.model.baselines import ItemKNN

            spec = meta["short_session_fallback"]
            short_fallback = ShortSessionFallback.from_summary(
                ItemKNN.load(path / _ITEM_KNN_FILE), spec, spec.get("evidence", {}))
        # A folder without a "ranker" entry predates the other kinds: SR-GNN's model.pt.
        ranker = load_ranker(path, meta.get("ranker") or {"kind": KIND_SRGNN}, **scorer_options)
        vocabulary = Vocabulary.read(path / "vocab.parquet")
        categories = None
        if meta.get("item_categories"):
            categories = read_item_categories(
                path / meta["item_categories"].get("file", _CATEGORIES_FILE), vocabulary.num_items)
        return cls(ranker, vocabulary, short_fallback).with_categories(categories)

    # --- recommending ------------------------------------------------------------------------
    def topk_report(self) -> dict:
        """How the ranker found top-K so far: exact, or the approximate index with its recall
        against exact (:meth:`srgnn.serving.predict.Scorer.topk_report`); ``{}`` for a baseline."""
        report = getattr(self.ranker, "topk_report", None)
        return report() if report is not None else {}

    def index_items(self, raw_ids) -> np.ndarray:
        """Raw ids -> item indices (1..N), 0 where the id is not in the vocabulary."""
        return self.vocabulary.indices(raw_ids)

    def recommend(self, sessions, k: int = K, last_categories=None, times=None) -> Recommendations:
        """Top-``k`` raw item ids for each session (a list of raw item ids in click order).

        ``sessions`` is a ``pyarrow`` ``list<string>`` array (any list array is cast) or a
        sequence of sequences of ids. Known clicks keep their order; unknown ones are skipped.
        ``last_categories`` (optional, one per session: the category of its last click, or
        ``None``): a session whose last click is on an unknown item of a category the
        recommender knows (:class:`ItemCategories`) gets that category's most clicked
        training items first, then its usual answer (``fallback:category``).
        ``times`` (optional, laid out like ``sessions``: each click's time, as timestamps or
        numbers of seconds) reach a ranker that uses them (:attr:`uses_times`) for the known
        clicks, so that an SR-GNN with ``temporal_edges`` weighs each edge by the seconds
        between the two known clicks it joins (:func:`srgnn.data.graph.click_gaps`, as
        prepare); without them every gap counts as 0.
        """
        values, offsets = _as_flat_strings(sessions)
        num_sessions = len(offsets) - 1
        click_times = _flat_times(times, offsets) if times is not None and self.uses_times else None
        indices = (self.vocabulary.indices(values.to_numpy(zero_copy_only=False)) if len(values)
                   else np.zeros(0, np.int64))
        known = indices > 0
        unknown = np.bincount(row_of_value(offsets)[~known], minlength=num_sessions)
        raw_offsets = offsets
        values, offsets = filter_values(indices, offsets, known)
        if click_times is not None:
            click_times = click_times[known]
        kept_per_session = np.diff(offsets)
        short = np.zeros(num_sessions, dtype=bool)
        if self.short_fallback is not None:
            short = np.isin(kept_per_session, self.short_fallback.lengths)
        long_rows = np.flatnonzero(~short)
        long_values, long_offsets = (gather_lists(values, offsets, long_rows) if short.any()
                                     else (values, offsets))
        long_times = click_times
        if click_times is not None and short.any():
            long_times = gather_lists(click_times, offsets, long_rows)[0]
        if self.short_fallback is not None:
            long_values, long_offsets, long_times = self.short_fallback.augment(
                long_values, long_offsets, long_times)
        if long_times is None:
            top = self.ranker.top_k(long_values, long_offsets, k)
        else:
            top = self.ranker.top_k(long_values, long_offsets, k, times=long_times)
        k_eff = top.items.shape[1]
        items = np.zeros((num_sessions, k_eff), dtype=np.int64)
        scores = np.zeros((num_sessions, k_eff), dtype=np.float64)
        source = np.full(num_sessions, SOURCE_MODEL, dtype=object)
        items[long_rows] = np.where(top.empty[:, None], self._popular_items[:k_eff], top.items)
        scores[long_rows] = np.where(top.empty[:, None], self._popular_scores[:k_eff], top.scores)
        source[long_rows[top.empty]] = SOURCE_POPULARITY
        if short.any():
            short_rows = np.flatnonzero(short)
            items[short_rows], scores[short_rows] = self.short_fallback.item_knn.recommend(
                *gather_lists(values, offsets, short_rows), k_eff)
            source[short_rows] = SOURCE_ITEM_KNN
        if last_categories is not None and self.categories is not None:
            nonempty = np.diff(raw_offsets) > 0
            last_unknown = np.zeros(num_sessions, dtype=bool)
            last_unknown[nonempty] = ~known[raw_offsets[1:][nonempty] - 1]
            self._by_category(items, scores, source, last_unknown, last_categories)
        return Recommendations(item_ids=self.vocabulary.ids(items), scores=scores, source=source,
                               unknown_clicks=unknown)

    def _by_category(self, items, scores, source, last_unknown, last_categories) -> None:
        """Put, in place, the category's most clicked items first in the rows whose last
        click is unknown and of a known category; the row's answer fills the rest. Scores:
        the items' training click shares, then the row's scores capped at the last share (a
        list's scores never increase)."""
        last_categories = np.asarray(last_categories, dtype=object)
        if len(last_categories) != len(source):
            raise ValueError(f"last_categories has {len(last_categories)} entries for "
                             f"{len(source)} sessions.")
        k_eff = items.shape[1]
        for row in np.flatnonzero(last_unknown):
            if last_categories[row] not in self.categories:
                continue
            top, shares = self.categories.top(last_categories[row], k_eff)
            rest = ~np.isin(items[row], top)
            items[row] = np.concatenate([top, items[row][rest]])[:k_eff]
            # non-increasing: the usual scores after the shares are capped at the last share
            scores[row] = np.minimum.accumulate(np.concatenate([shares, scores[row][rest]])[:k_eff])
            source[row] = SOURCE_CATEGORY


def save_ranker(ranker, path: Path) -> dict:
    """Write ``ranker``'s files into folder ``path``; returns its ``recommender.json`` entry
    (``kind`` and what :func:`load_ranker` needs)."""
    if hasattr(ranker, "save"):  # a BaselineRanker or a blend
        return ranker.save(path)
    if not hasattr(ranker, "model"):
        raise TypeError(f"cannot save a ranker of type {type(ranker).__name__}.")
    import dataclasses

    import torch

    model_config = dataclasses.asdict(ranker.config)
    torch.save({"model": ranker.model.state_dict(), "model_config": model_config},
               path / _MODEL_FILE)
    return {"kind": KIND_SRGNN, "file": _MODEL_FILE, "model_config": model_config}


def load_ranker(path: Path, spec: dict, **scorer_options):
    """The ranker that :func:`save_ranker` wrote into ``path`` with entry ``spec``."""
    kind = str(spec.get("kind"))
    if kind == KIND_SRGNN:
        from srgnn.serving.predict import Scorer

        return Scorer.from_checkpoint(path / spec.get("file", _MODEL_FILE), **scorer_options)
    if kind.startswith("blend:"):
        from srgnn.serving.blend import BlendRanker

        return BlendRanker.load(path, spec, **scorer_options)
    return BaselineRanker.load(path, spec)


def recommend_batches(recommender, sessions, k: int = K, batch_size: int = SESSION_BATCH, *,
                      last_categories=None, times=None) -> Iterator[tuple[int, Recommendations]]:
    """``(start, recommendations)`` for ``sessions[start:start + batch_size]``, batch by batch.

    ``sessions`` is a pyarrow list array of raw ids (or anything with ``len`` and ``slice``);
    ``last_categories``, if given, the category of each session's last click, and ``times``
    (a list array like ``sessions``), each click's time (:meth:`Recommender.recommend`). The
    batch size bounds the memory of the score matrices.
    """
    for start in range(0, len(sessions), batch_size):
        part = sessions.slice(start, batch_size)
        options = {}
        if last_categories is not None:
            options["last_categories"] = last_categories[start:start + len(part)]
        if times is not None:
            options["times"] = times.slice(start, batch_size)
        yield start, recommender.recommend(part, k, **options)


def recommend_all(recommender, sessions, k: int = K,
                  batch_size: int = SESSION_BATCH) -> Recommendations:
    """The recommendations of every session, computed in batches (:func:`recommend_batches`)."""
    parts = [recs for _, recs in recommend_batches(recommender, sessions, k, batch_size)]
    return Recommendations.concat(parts, k)
