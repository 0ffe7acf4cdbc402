"""Non-neural session-based baselines, evaluated under the same protocol as SR-GNN.

Every baseline is fitted on training sessions (lists of item indices ``1..N``, time order
inside a session, sessions in chronological order) and recommends, for each prefix of a batch,
the top-K items over the whole catalogue:

    model = make_baseline("sknn").fit(train_sessions)
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

from srgnn.model.baselines.base import SessionRecommender
from srgnn.model.baselines.knn import ItemKNN, SessionKNN, VectorSessionKNN
from srgnn.model.baselines.simple import FirstOrderMarkov, Popularity, SessionPopularity

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
]


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
