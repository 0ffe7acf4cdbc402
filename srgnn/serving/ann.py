"""Approximate top-K over a large catalogue: a faiss inverted-file index of the item embeddings.

SR-GNN scores item ``j`` for a session by the dot product ``s . e_j``; the exact top-K reads
every item embedding for every session, a cost that grows with the catalogue (about 10 ms a
session over a million items on one core). :class:`ItemIndex` partitions the item embeddings
into ``nlist`` inverted lists by k-means (``nlist`` about ``4 sqrt(N)``, faiss
``IndexIVFFlat`` with the inner-product metric, so the scores it returns are the model's own
float32 dot products) and scores only the items of the ``nprobe`` lists whose centroids have the
highest dot product with the session. The answer is exact for the items it looks at; what it
can miss is an item in a list it did not probe, which is what recall measures.

:func:`choose_nprobe` picks the smallest ``nprobe`` of a ladder whose recall against exact
top-K on sample session vectors reaches a target, and :func:`recall_hits` counts the exact
top-K items an approximate answer found. :class:`ApproximateTopK` puts them together for
:class:`srgnn.serving.predict.Scorer`: the index of one model, built when it first scores;
``nprobe`` given, or chosen on the first ``recall_sample`` session vectors (which get their
exact answers); the next ``recall_sample`` scored both ways, their recall reported
(:meth:`ApproximateTopK.report`) and logged.

faiss runs its own OpenMP runtime beside torch's (two copies of libgomp); :meth:`ItemIndex.search`
gives it as many threads as torch has, so that a process set to one thread per Spark task uses
one core in both.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

__all__ = ["ItemIndex", "ApproximateTopK", "default_nlist", "choose_nprobe", "recall_hits",
           "NPROBE_LADDER"]

logger = logging.getLogger(__name__)

# nprobe values tried by choose_nprobe, about x1.4 apart (capped at nlist).
NPROBE_LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768,
                 1024, 1536, 2048, 3072, 4096, 6144, 8192)
_POINTS_PER_CENTROID = 40  # k-means training points per list (faiss warns below 39)
_KMEANS_ITERATIONS = 10


def default_nlist(num_items: int) -> int:
    """Inverted lists for ``num_items`` items: ``4 sqrt(N)``, with at least 40 items a list."""
    return max(1, min(round(4 * math.sqrt(num_items)), num_items // _POINTS_PER_CENTROID))


def _sync_threads() -> None:
    """faiss's OpenMP threads = torch's (torch.set_num_threads does not reach faiss's libgomp)."""
    import faiss
    import torch

    threads = torch.get_num_threads()
    if faiss.omp_get_max_threads() != threads:
        faiss.omp_set_num_threads(threads)


class ItemIndex:
    """An inverted-file index (faiss ``IndexIVFFlat``, inner product) of item vectors.

    Args:
        item_vectors: (N, d) float32; row ``j`` is score column ``j`` (item ``j + 1``).
        nlist: inverted lists (default :func:`default_nlist`).
        seed: seeds the k-means sample and initialisation, so a model always gets one index.

    Attributes:
        nlist, num_items, build_seconds: as built.
    """

    def __init__(self, item_vectors: np.ndarray, nlist: int | None = None, seed: int = 1234) -> None:
        import faiss

        vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) == 0:
            raise ValueError("an item index needs a non-empty (N, d) matrix of item vectors.")
        started = time.perf_counter()
        _sync_threads()
        self.num_items, dim = vectors.shape
        self.nlist = nlist or default_nlist(self.num_items)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = _KMEANS_ITERATIONS
        index.cp.seed = seed
        index.cp.max_points_per_centroid = _POINTS_PER_CENTROID  # faiss samples this many
        index.train(vectors)
        index.add(vectors)  # ids 0..N-1: score columns
        self._index = index
        self._quantizer = quantizer  # the index refers to it: keep it alive
        self.build_seconds = time.perf_counter() - started

    @property
    def memory_bytes(self) -> int:
        """Bytes of the lists' vectors and ids and of the centroids."""
        dim = self._index.d
        return self.num_items * (4 * dim + 8) + self.nlist * 4 * dim

    def search(self, queries: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, columns)``, each (B, k), best first, for (B, d) float32 ``queries``.

        A row whose probed lists hold fewer than ``k`` items ends with columns ``-1`` (scores
        ``-inf``); the caller scores those rows exactly.
        """
        _sync_threads()
        self._index.nprobe = max(1, min(nprobe, self.nlist))
        scores, columns = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, columns


def recall_hits(approximate: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """(B,) how many of each row's exact top-k columns the approximate row holds."""
    approximate = np.asarray(approximate)
    exact = np.asarray(exact)
    if exact.size == 0:
        return np.zeros(len(exact), dtype=np.int64)
    return (approximate[:, :, None] == exact[:, None, :]).any(axis=1).sum(axis=1)


def choose_nprobe(index: ItemIndex, queries: np.ndarray, exact_columns: np.ndarray,
                  target: float) -> tuple[int, float]:
    """``(nprobe, recall)``: the smallest :data:`NPROBE_LADDER` value (or ``nlist``) whose top-k
    recall against ``exact_columns`` (B, k) on ``queries`` (B, d) reaches ``target``."""
    k = exact_columns.shape[1]
    ladder = [n for n in NPROBE_LADDER if n < index.nlist] + [index.nlist]
    recall = 0.0
    for nprobe in ladder:
        _, columns = index.search(queries, k, nprobe)
        recall = float(recall_hits(columns, exact_columns).sum() / exact_columns.size)
        if recall >= target:
            return nprobe, recall
    return index.nlist, recall


class ApproximateTopK:
    """Top-K of session vectors from an :class:`ItemIndex` of a model's item embeddings, with
    the choice of ``nprobe`` and the measurement of recall against exact (module docstring).

    Args:
        model: the :class:`~srgnn.model.network.SRGNN` whose item vectors are indexed
            (:meth:`~srgnn.model.network.SRGNN.item_vectors`: the embeddings, normalised when
            the model scores by cosine; the index then searches with the normalised session
            vector times the scale, so that its scores are the model's).
        nprobe: lists probed per session; ``None``: the fewest reaching ``recall_target``.
        recall_target: top-K recall that the chosen ``nprobe`` reaches on the first sample.
        recall_sample: session vectors that choose ``nprobe``, then that measure the recall.
    """

    def __init__(self, model, *, nprobe: int | None = None, recall_target: float = 0.95,
                 recall_sample: int = 1000) -> None:
        if (nprobe is not None and nprobe < 1) or recall_sample < 0 or not 0 < recall_target <= 1:
            raise ValueError("nprobe must be positive, recall_sample non-negative and recall_target "
                             "in (0, 1].")
        if nprobe is None and recall_sample == 0:
            raise ValueError("choosing nprobe needs sample sessions: give nprobe or a recall_sample.")
        self.model = model
        self.nprobe = nprobe
        self.recall_target = recall_target
        self.recall_sample = recall_sample
        self.index: ItemIndex | None = None  # built when first needed
        self._tuning: dict = {}  # how nprobe was chosen
        self._sample: list[tuple[np.ndarray, np.ndarray]] = []  # (vectors, exact columns) so far
        self._sampled = 0  # session vectors in _sample
        self._hits = self._slots = self._rows = self._k = 0  # the recall measured after the choice

    def top_k(self, session, k: int, exact) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, items)``, each (B, k) numpy, for the (B, d) tensor ``session``; ``exact``
        is the scorer's exact path, ``exact(rows, k) -> (scores, items)``. Sample sessions,
        and rows whose probed lists held fewer than ``k`` items, get exact answers."""
        import torch

        if self.index is None:
            self.index = ItemIndex(self.model.item_vectors().detach().float().cpu().numpy())
            logger.info("top-K index: %d inverted lists over %d items, built in %.1f s",
                        self.index.nlist, self.index.num_items, self.index.build_seconds)
            self.nprobe = self.nprobe and min(self.nprobe, self.index.nlist)
        vectors = self.model.query_vectors(session).float().cpu().numpy()
        scores = np.empty((len(vectors), k), dtype=np.float32)
        items = np.empty((len(vectors), k), dtype=np.int64)
        done = 0
        if self.nprobe is None:  # the first sample sessions, over as many calls as it takes,
            done = min(len(vectors), self.recall_sample - self._sampled)  # get exact answers
            scores[:done], items[:done] = exact(session[:done], k)
            self._sample.append((vectors[:done], items[:done] - 1))
            self._sampled += done
            if self._sampled < self.recall_sample:
                return scores, items  # every row answered exactly
            self._choose_nprobe()
        if done < len(vectors):
            found_scores, found_columns = self.index.search(vectors[done:], k, self.nprobe)
            scores[done:], items[done:] = found_scores, found_columns + 1
        measure = min(len(vectors) - done, self.recall_sample - self._rows)
        if measure > 0:  # the next sample sessions: exact too, and counted
            rows = slice(done, done + measure)
            exact_scores, exact_items = exact(session[rows], k)
            self._hits += int(recall_hits(items[rows], exact_items).sum())
            self._slots += measure * k
            self._rows, self._k = self._rows + measure, k
            scores[rows], items[rows] = exact_scores, exact_items
            if self._rows >= self.recall_sample:
                logger.info("top-K index: top-%d recall %.4f against exact on %d session vectors "
                            "(nprobe %d of %d lists)", k, self.report()["recall"], self._rows,
                            self.nprobe, self.index.nlist)
        short = np.flatnonzero((items < 1).any(axis=1))
        if len(short):  # the probed lists held fewer than k items
            scores[short], items[short] = exact(session[torch.from_numpy(short)], k)
        return scores, items

    def _choose_nprobe(self) -> None:
        """Choose ``nprobe`` on the sample (its exact top-k columns, cut to the smallest k
        asked for if calls asked for different ones)."""
        k = min(columns.shape[1] for _, columns in self._sample)
        queries = np.concatenate([vectors for vectors, _ in self._sample])
        exact_columns = np.concatenate([columns[:, :k] for _, columns in self._sample])
        self._sample = []
        self.nprobe, recall = choose_nprobe(self.index, queries, exact_columns, self.recall_target)
        self._tuning = {"nprobe_chosen_on": len(queries), "recall_when_chosen": round(recall, 4)}
        logger.info("top-K index: nprobe %d reaches top-%d recall %.4f on %d session vectors "
                    "(target %.2f)", self.nprobe, k, recall, len(queries), self.recall_target)

    def report(self) -> dict:
        """The index (lists, ``nprobe``, build seconds), how ``nprobe`` was chosen, and the
        top-K recall against exact measured on ``recall_sessions`` session vectors (``None``
        before any was scored). ``nprobe`` stays ``None`` (every session answered exactly)
        until ``recall_sample`` sessions were scored."""
        report = {"topk_index": "ivf", "items": self.model.config.num_items,
                  "nprobe": self.nprobe,
                  "recall": round(self._hits / self._slots, 4) if self._slots else None,
                  "recall_at": self._k or None, "recall_sessions": self._rows}
        if self.index is not None:
            report.update(nlist=self.index.nlist,
                          index_build_seconds=round(self.index.build_seconds, 1))
        if self._tuning:
            report.update(recall_target=self.recall_target, **self._tuning)
        return report
