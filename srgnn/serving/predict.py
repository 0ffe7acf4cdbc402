"""Top-K next-item recommendations from a trained SR-GNN, for scoring and serving.

:class:`Scorer` takes prefixes the way Arrow stores a ``list<int>`` column (flat item indices
plus offsets), builds their graphs with :func:`srgnn.data.graph.build_graphs` (the code
that prepared the training data), batches them with :func:`srgnn.model.batching.collate`,
and returns
the ``k`` best items of the whole catalogue for every prefix. Empty prefixes (a session whose
clicks were all unknown to the vocabulary) are allowed: they are flagged in
:attr:`TopK.empty` so that the caller can apply a fallback such as a popularity ranking.

Example::

    scorer = Scorer.from_checkpoint("runs/r1/model/best_model.pt")
    top = scorer.top_k(values=np.array([5, 9, 5, 7]), offsets=np.array([0, 3, 3, 4]), k=20)
    top.items[0]     # 20 item indices (1..N) for the prefix [5, 9, 5]
    top.empty        # [False, True, False]: the second prefix has no known click

Scoring the whole catalogue, a (prefixes x d) by (d x items) product, is most of the work. On
CPUs with native bfloat16 arithmetic (AVX512-BF16, AMX) that product runs several times
faster in bfloat16 than in float32, so there the scorer (``precision="auto"``) finds
candidates in bfloat16 and keeps float32 answers:

1. approximate scores ``a_j`` of every item from the session vector ``s`` and item vectors
   ``e_j`` rounded to bfloat16 (float32 sums, results rounded to bfloat16); the ``m`` best
   items are the candidates (``m = max(candidates, 2k)``);
2. exact float32 scores of the candidates; their ``k`` best are the answer if
3. a certificate holds: the ``k``-th of them is above the highest score any other item can
   have, ``a_m + 2^-7 |a_m| + 2^-6 ||s|| max_j ||e_j||`` (``a_m`` is the ``m``-th approximate
   score). Rounding to bfloat16 moves a number by at most ``2^-8`` of itself, so the product
   of the rounded vectors is within ``(2^-7 + 2^-16) sum_i |s_i e_ji| <= (2^-7 + 2^-16)
   ||s|| ||e_j||`` of ``s . e_j`` (float32 sums add ~1e-6 of that), and the rounded result
   is within ``2^-8`` of itself; the certificate's two terms are about twice these bounds.

A prefix without the certificate is scored again in float32 over every item, so the answer is
always the float32 top-K (up to the order of scores equal within float32 rounding); only the
time changes (:attr:`Scorer.rescored` counts the second passes).

Memory: items are scored in blocks with a running top-K, never as a (prefixes x items) matrix;
the block is chosen from a budget (``score_memory``, 64 MiB of scores by default), so that
scoring a million items takes the memory of a hundred thousand.

Over a large catalogue the exact top-K is most of the night's work (about 10 ms a session over
a million items on one core), so the scorer can answer from an approximate index instead
(``topk_index="ivf"``, or ``"auto"`` above ``approximate_above`` items): a faiss inverted-file
index of the item embeddings (:mod:`srgnn.serving.ann`), built once per scorer when it first
scores. Its ``nprobe`` is the one given, or the smallest whose top-K recall against the exact
top-K on the first ``recall_sample`` session vectors reaches ``recall_target``; those sessions
get their exact answers. The next ``recall_sample`` session vectors are scored both ways and
their recall is what :meth:`Scorer.topk_report` reports (and the log says) for the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from srgnn.config import PRECISIONS, TOPK_INDEXES
from srgnn.cpu import native_bfloat16
from srgnn.data.graph import build_graphs, click_gaps
from srgnn.data.ragged import check_lists, gather_lists
from srgnn.model.batching import collate
from srgnn.model.network import SRGNN, ModelConfig

__all__ = ["TopK", "Scorer", "unique_lists", "SCORE_MEMORY"]

SCORE_MEMORY = 64 * 2**20  # bytes of one block of scores (prefixes x items)
_MIN_ITEM_CHUNK = 1024  # items per block at least (large batches: fewer, wider blocks)

# The certificate's error terms (see the module docstring): twice the bounds.
_PRODUCT_ERROR = 2.0**-6  # times ||s|| max ||e_j||: bfloat16 inputs, float32 sums
_RESULT_ERROR = 2.0**-7  # times |a_m|: the bfloat16 rounding of a result
_ABSOLUTE_ERROR = 1e-30  # subnormal inputs flushed to zero by bfloat16 dot-product units


@dataclass(frozen=True)
class TopK:
    """Recommendations for ``S`` prefixes, best first.

    Attributes:
        items: (S, k) int64 item indices (1..N); 0 in the rows of empty prefixes.
        scores: (S, k) float32 model scores; NaN in the rows of empty prefixes.
        empty: (S,) bool, True where the prefix had no clicks (no recommendation made).
    """

    items: np.ndarray
    scores: np.ndarray
    empty: np.ndarray


class Scorer:
    """Holds a trained model and returns top-K items for batches of prefixes.

    Prefixes come as item lists, with their clicks' times when known (:meth:`top_k`): a model
    with ``temporal_edges`` weighs each edge by the gap prepare would have written for it
    (:func:`srgnn.data.graph.click_gaps`). Without times every gap counts as 0 (one bucket for
    all edges).

    Args:
        model: a trained :class:`SRGNN` (put in eval mode here).
        batch_size: prefixes per forward pass.
        item_chunk_size: items scored at once; default: as many as ``score_memory`` bytes of
            float32 scores hold for a batch (at least 1024).
        score_memory: bytes of one block of scores, when ``item_chunk_size`` is not given.
        device: where the model runs.
        precision: ``"float32"`` scores every item in float32; ``"bfloat16"`` finds
            candidates in bfloat16 and certifies float32 answers (module docstring);
            ``"auto"`` (default) is ``"bfloat16"`` on a CPU with native bfloat16 arithmetic.
        candidates: ``m``, items re-scored in float32 per prefix (at least ``2k``).
        topk_index: ``"exact"`` (default) scores every item; ``"ivf"`` answers from an
            approximate index (module docstring); ``"auto"`` is ``"ivf"`` for catalogues of
            more than ``approximate_above`` items.
        nprobe: inverted lists probed per prefix; ``None``: chosen for ``recall_target``.
        recall_target: top-K recall against exact that the chosen ``nprobe`` reaches on the
            first ``recall_sample`` prefixes.
        recall_sample: prefixes scored exactly too, to choose ``nprobe`` and then to measure
            the recall (0: neither; ``nprobe`` must then be given).

    Attributes:
        certified, rescored: prefixes answered from bfloat16 candidates, and prefixes whose
            certificate failed and were scored again in float32 (running totals).
    """

    def __init__(
        self,
        model: SRGNN,
        *,
        batch_size: int = 1000,
        item_chunk_size: int | None = None,
        score_memory: int = SCORE_MEMORY,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        candidates: int = 64,
        topk_index: str = "exact",
        approximate_above: int = 100_000,
        nprobe: int | None = None,
        recall_target: float = 0.95,
        recall_sample: int = 1000,
    ) -> None:
        if batch_size < 1 or (item_chunk_size is not None and item_chunk_size < 1) or candidates < 1:
            raise ValueError("batch_size, item_chunk_size and candidates must be positive integers.")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
        if topk_index not in TOPK_INDEXES:
            raise ValueError(f"topk_index must be one of {', '.join(TOPK_INDEXES)}, got {topk_index!r}.")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config: ModelConfig = model.config
        self.batch_size = batch_size
        self.item_chunk_size = item_chunk_size or max(
            _MIN_ITEM_CHUNK, score_memory // (4 * batch_size))
        self._approximate = None  # srgnn.serving.ann.ApproximateTopK, when top-K is approximate
        if topk_index == "ivf" or (topk_index == "auto" and self.num_items > approximate_above):
            from srgnn.serving.ann import ApproximateTopK

            self._approximate = ApproximateTopK(self.model, nprobe=nprobe,
                                                recall_target=recall_target,
                                                recall_sample=recall_sample)
        if precision == "auto":
            precision = "bfloat16" if self.device.type == "cpu" and native_bfloat16() else "float32"
        self.precision = precision
        self.candidates = candidates
        self.certified = 0
        self.rescored = 0
        self._items: torch.Tensor | None = None  # the scored item vectors (bfloat16 path)
        self._low_items: torch.Tensor | None = None
        self._max_item_norm = 0.0

    @classmethod
    def from_state_dict(
        cls, state_dict: dict[str, torch.Tensor], model_config: ModelConfig | dict, **options
    ) -> "Scorer":
        """A scorer for the weights ``state_dict`` of a model shaped by ``model_config``."""
        if isinstance(model_config, dict):
            model_config = ModelConfig(**model_config)
        model = SRGNN(model_config)
        model.load_state_dict(state_dict)
        return cls(model, **options)

    @classmethod
    def from_checkpoint(cls, path: str | Path, **options) -> "Scorer":
        """A scorer for a ``best_model.pt`` or ``checkpoint.pt`` of training, or a saved
        recommender's ``model.pt``."""
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return cls.from_state_dict(payload["model"], payload["model_config"], **options)

    @property
    def num_items(self) -> int:
        return self.config.num_items

    @property
    def approximate(self) -> bool:
        """Whether top-K comes from the approximate index."""
        return self._approximate is not None

    @property
    def uses_times(self) -> bool:
        """Whether the clicks' times change the scores (a model with ``temporal_edges``)."""
        return bool(self.config.temporal_edges)

    def top_k(self, values, offsets, k: int = 20, times=None) -> TopK:
        """The ``k`` best items (``min(k, N)`` columns) for each of ``S`` prefixes.

        Args:
            values: flat item indices (1..N) of all prefixes, in click order.
            offsets: (S + 1,) prefix ``s`` is ``values[offsets[s]:offsets[s + 1]]``; equal
                neighbouring offsets make an empty prefix.
            k: recommendations per prefix.
            times: optional, the time of every click, aligned with ``values`` (``datetime64``
                or seconds): a ``temporal_edges`` model's edge gaps are
                :func:`~srgnn.data.graph.click_gaps` of them, as prepare computes them.
                ``None``: every gap counts as 0. Other models ignore them.

        Returns:
            A :class:`TopK`.

        Raises:
            ValueError: for bad offsets, ``k < 1``, an item index outside ``1..N`` or
                ``times`` not one per click.
        """
        if k < 1:
            raise ValueError(f"k must be a positive integer, got {k}.")
        values, offsets, lengths = check_lists(values, offsets)
        if len(values) and (values.min() < 1 or values.max() > self.num_items):
            raise ValueError(
                f"item indices must lie in 1..{self.num_items}; map raw ids through the model's "
                "vocabulary and drop unknown ones first."
            )
        gaps = None
        if self.uses_times:  # without times every gap counts as 0
            gaps = np.zeros(len(values), dtype=np.float32)
            if times is not None:
                if len(times) != len(values):
                    raise ValueError(f"times must hold one value per click ({len(values)}), "
                                     f"got {len(times)}.")
                gaps = click_gaps(times, offsets)
        k = min(k, self.num_items)
        empty = lengths == 0
        items = np.zeros((len(lengths), k), dtype=np.int64)
        scores = np.full((len(lengths), k), np.nan, dtype=np.float32)

        # Identical prefixes (many one-click sessions on the same popular item) are scored
        # once; with gaps, a prefix is its (item, gap) pairs (the gap's float32 bits beside
        # the item index in one int64: the key is exact).
        rows = np.flatnonzero(~empty)
        keys = values
        if gaps is not None and gaps.any():
            keys = (values << 32) | gaps.view(np.uint32).astype(np.int64)
        first, inverse = unique_lists(*gather_lists(keys, offsets, rows))
        unique_rows = rows[first]
        unique_items = np.zeros((len(unique_rows), k), dtype=np.int64)
        unique_scores = np.zeros((len(unique_rows), k), dtype=np.float32)
        for start in range(0, len(unique_rows), self.batch_size):
            chunk = unique_rows[start : start + self.batch_size]
            chunk_values, chunk_offsets = gather_lists(values, offsets, chunk)
            chunk_gaps = None if gaps is None else gather_lists(gaps, offsets, chunk)[0]
            batch = collate(build_graphs(chunk_values, chunk_offsets, chunk_gaps))
            top_scores, top_items = self._top_k_batch(batch.to(self.device), k)
            unique_items[start : start + len(chunk)] = top_items
            unique_scores[start : start + len(chunk)] = top_scores
        items[rows] = unique_items[inverse]
        scores[rows] = unique_scores[inverse]
        return TopK(items=items, scores=scores, empty=empty)

    @torch.inference_mode()
    def _top_k_batch(self, batch, k: int) -> tuple[np.ndarray, np.ndarray]:
        session = self.model.session_embedding(batch)  # (B, d)
        if self._approximate is not None:
            return self._approximate.top_k(session, k, self._exact_top_k)
        return self._exact_top_k(session, k)

    def _exact_top_k(self, session, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, items) of the exact top-``k``, each (B, k), as numpy."""
        m = max(self.candidates, 2 * k)
        if self.precision == "bfloat16" and m < self.num_items:
            scores, columns, certified = self._certified_top_k(session, k, m)
            redo = torch.nonzero(~certified).squeeze(1)
            if len(redo):
                scores[redo], columns[redo] = self._best_columns(self.model.score_items, session[redo], k)
            self.rescored += len(redo)
            self.certified += len(session) - len(redo)
        else:
            scores, columns = self._best_columns(self.model.score_items, session, k)
        items = columns + 1  # score column j is item j + 1
        return scores.float().cpu().numpy(), items.cpu().numpy()

    def _best_columns(self, score_columns, session, k: int):
        """The ``k`` best scores and their columns, scoring ``item_chunk_size`` items at a time."""
        best_scores = best_columns = None
        for start in range(0, self.num_items, self.item_chunk_size):
            stop = min(start + self.item_chunk_size, self.num_items)
            chunk_scores = score_columns(session, start, stop)  # (B, stop - start)
            chunk_best, chunk_columns = torch.topk(chunk_scores, min(k, stop - start), dim=1)
            chunk_columns += start
            if best_scores is None:
                best_scores, best_columns = chunk_best, chunk_columns
            else:  # merge with the best of the previous chunks
                merged_scores = torch.cat([best_scores, chunk_best], dim=1)
                merged_columns = torch.cat([best_columns, chunk_columns], dim=1)
                keep = min(k, merged_scores.shape[1])
                best_scores, order = torch.topk(merged_scores, keep, dim=1)
                best_columns = merged_columns.gather(1, order)
        return best_scores, best_columns

    def topk_report(self) -> dict:
        """How top-K was found: ``{"topk_index": "exact", "items": N}``, or the approximate
        index's :meth:`~srgnn.serving.ann.ApproximateTopK.report` (its recall against exact)."""
        if self._approximate is None:
            return {"topk_index": "exact", "items": self.num_items}
        return self._approximate.report()

    def _certified_top_k(self, session, k: int, m: int):
        """``(scores, columns, certified)``: float32 top-``k`` among ``m`` bfloat16 candidates,
        and per row whether no other item can beat them (module docstring)."""
        if self._low_items is None:
            self._items = self.model.item_vectors()  # E[1:], normalised when the model is
            self._low_items = self._items.to(torch.bfloat16)
            self._max_item_norm = float(self._items.norm(dim=1).max())
        session = self.model.query_vectors(session)
        low_session = session.to(torch.bfloat16)
        approx, columns = self._best_columns(
            lambda _, start, stop: torch.nn.functional.linear(low_session, self._low_items[start:stop]),
            session, m)
        candidates = self._items[columns]  # (B, m, d)
        exact = torch.bmm(candidates, session.unsqueeze(2)).squeeze(2)  # (B, m) float32
        scores, order = torch.topk(exact, k, dim=1)
        floor = approx[:, -1].float()
        ceiling = (floor + _RESULT_ERROR * floor.abs()
                   + _PRODUCT_ERROR * session.norm(dim=1) * self._max_item_norm + _ABSOLUTE_ERROR)
        return scores, columns.gather(1, order), scores[:, -1] > ceiling


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a uint64 array (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def unique_lists(values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct lists of a non-empty ``(values, offsets)`` list column, exactly.

    Returns ``(first, inverse)``: ``first[u]`` is the position of the first list equal to
    distinct list ``u`` and list ``i`` equals list ``first[inverse[i]]``. Lists are grouped
    by length and two 64-bit hashes of (position, value), then every list is compared with
    its group's first one element by element: a list that differs (a hash collision) becomes
    a group of its own, so the result never merges different lists.

    Raises:
        ValueError: when a list is empty.
    """
    lengths = np.diff(offsets)
    if len(lengths) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if lengths.min() < 1:
        raise ValueError("unique_lists needs non-empty lists.")
    starts = offsets[:-1]
    position = (np.arange(len(values)) - np.repeat(starts, lengths)).astype(np.uint64)
    value = np.asarray(values).astype(np.int64).view(np.uint64)
    hashes = [lengths.astype(np.uint64)]
    for salt in (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xD1B54A32D192ED03)):
        mixed = _mix64(_mix64(value + salt) ^ (position * salt + salt))
        hashes.append(np.add.reduceat(mixed, starts))  # wraps modulo 2**64
    _, first, inverse = np.unique(np.stack(hashes, axis=1), axis=0, return_index=True,
                                  return_inverse=True)
    inverse = inverse.reshape(-1)
    # Exact check against each group's first list (same length by construction).
    reference_starts = np.repeat(starts[first[inverse]], lengths)
    differs = value != value[reference_starts + position.astype(np.int64)]
    bad = np.flatnonzero(np.add.reduceat(differs.astype(np.int64), starts) > 0)
    if len(bad):  # colliding lists: each its own group
        inverse = inverse.copy()
        inverse[bad] = len(first) + np.arange(len(bad))
        first = np.concatenate([first, bad])
    return first.astype(np.int64), inverse.astype(np.int64)
