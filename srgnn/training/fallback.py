"""Short sessions: answer 1-3 click sessions the way validation shows best for their length.

Graph models are weakest on sessions of one to three clicks. For each of those lengths the
training run compares on the validation split, by HR@20 (ties by MRR@20), up to three ways:

* ``srgnn``: the model chosen on validation, as it is;
* ``augmented`` (``TrainConfig.short_augment`` = m > 0): the same model scoring the session
  with the m items that co-occur most with its clicks in the training sessions prepended
  (item-KNN's neighbour lists, :meth:`srgnn.model.baselines.ItemKNN.augment`), so the graph
  has more nodes and the last click stays last;
* ``iknn`` (``TrainConfig.short_fallback``): item-KNN instead of the model.

A length whose validation bucket holds at least 100 examples goes to the best way
(:func:`short_session_routes`); the registered recommender carries the routes in its
:class:`~srgnn.serving.recommender.ShortSessionFallback`, with item-KNN fitted on the final
model's training sessions. The figures by length are saved with the model and logged as
``short_fallback.json``; scoring marks the item-KNN rows ``fallback:iknn`` (augmented rows are
the model's).
"""

from __future__ import annotations

from srgnn.config import K
from srgnn.evaluation import heldout
from srgnn.evaluation.evaluate import evaluate, fit_baselines
from srgnn.evaluation.gate import is_better
from srgnn.serving.recommender import ShortSessionFallback

__all__ = ["SHORT_LENGTHS", "SHORT_MIN_EXAMPLES", "WAY_MODEL", "WAY_AUGMENTED", "WAY_ITEM_KNN",
           "short_session_routes", "short_fallback_lengths", "choose_short_fallback",
           "compare_short_ways", "describe_fallback"]

SHORT_LENGTHS = (1, 2, 3)  # session lengths (known clicks) that may be answered another way
SHORT_MIN_EXAMPLES = 100  # validation examples a length needs before it can be routed
WAY_MODEL, WAY_AUGMENTED, WAY_ITEM_KNN = "srgnn", "augmented", "iknn"
_WAY_NAMES = {WAY_MODEL: "SR-GNN", WAY_AUGMENTED: "augmented SR-GNN", WAY_ITEM_KNN: "item-KNN"}


def short_session_routes(by_way: dict, k: int = K, lengths=SHORT_LENGTHS,
                         min_examples: int = SHORT_MIN_EXAMPLES) -> dict[int, str]:
    """``{length: way}`` for the lengths whose validation bucket shows another way ahead of
    the model.

    Args:
        by_way: ``{way: by_length}``, with the ``by_length`` dicts of
            :func:`srgnn.evaluation.evaluate.metric_table` (``{"1": {"HR@K", "MRR@K",
            "examples"}}``); ``WAY_MODEL`` is the model as it is.
        lengths: single-length buckets that may be routed.
        min_examples: fewer validation examples than this never route a length.

    Returns:
        For each routed length the way with the highest HR@K (ties: the higher MRR@K,
        :func:`srgnn.evaluation.gate.is_better`; a tie in both keeps the earlier way, the
        model first); lengths the model answers best are left out.
    """
    routes = {}
    for length in lengths:
        figures = {way: table.get(str(length)) for way, table in by_way.items()}
        model = figures.get(WAY_MODEL)
        if not model or model["examples"] < min_examples:
            continue
        best = WAY_MODEL
        for way, table in figures.items():
            if table and is_better(table, figures[best], k):
                best = way
        if best != WAY_MODEL:
            routes[length] = best
    return routes


def short_fallback_lengths(model_by_length: dict, baseline_by_length: dict, k: int = K,
                           lengths=SHORT_LENGTHS, min_examples: int = SHORT_MIN_EXAMPLES) -> tuple[int, ...]:
    """The lengths whose validation bucket shows the baseline ahead of the model (higher
    HR@K, or the same HR@K and a higher MRR@K): :func:`short_session_routes` of two ways."""
    routes = short_session_routes({WAY_MODEL: model_by_length, WAY_ITEM_KNN: baseline_by_length},
                                  k, lengths, min_examples)
    return tuple(routes)


def choose_short_fallback(run, selection_recommender, *, training_splits=("train",), k: int = K,
                          lengths=SHORT_LENGTHS, min_examples: int = SHORT_MIN_EXAMPLES,
                          item_knn: bool = True, augment: int = 0,
                          max_examples: int | None = None):
    """``(fallback or None, evidence)``: the way each short length is answered, chosen on the
    run's validation split (module docstring).

    Args:
        run: the :class:`~srgnn.data.runfolder.RunFolder` (needs validation examples).
        selection_recommender: the model chosen on validation, trained without those days.
        training_splits: the ``sessions/<split>`` folders the final model trained on; the
            fallback's item-KNN (its answers and the augmentation's neighbours) is fitted on
            them.
        item_knn: item-KNN may answer a length.
        augment: neighbours an augmented session gets; 0 leaves augmentation out.
        max_examples: compare on the first this many validation examples (the training's
            ``max_valid_examples``, as candidate selection does); ``None``: all.

    Returns:
        The fallback, and ``{length: {way: {"HR@K", "MRR@K", "examples"}}}`` of every way
        compared.
    """
    knn_models, _ = fit_baselines(run, ["iknn"])
    knn_train = knn_models["iknn"].ranker.baseline
    valid = heldout.from_run(run, "valid", max_examples=max_examples)
    by_way = compare_short_ways(selection_recommender, knn_train, valid, k, lengths,
                                use_item_knn=item_knn, augment=augment)
    evidence = {str(n): {way: table[str(n)] for way, table in by_way.items()}
                for n in lengths if all(str(n) in table for table in by_way.values())}
    routes = short_session_routes(by_way, k, lengths, min_examples)
    if not routes:
        return None, evidence
    if tuple(training_splits) != ("train",):
        knn_train = fit_baselines(run, ["iknn"], splits=training_splits)[0]["iknn"].ranker.baseline
    return ShortSessionFallback(
        knn_train, tuple(n for n, way in routes.items() if way == WAY_ITEM_KNN), evidence,
        tuple(n for n, way in routes.items() if way == WAY_AUGMENTED), augment), evidence


def compare_short_ways(recommender, item_knn, held_out, k: int = K, lengths=SHORT_LENGTHS, *,
                       use_item_knn: bool = True, augment: int = 0) -> dict:
    """``{way: by_length}`` of :func:`srgnn.evaluation.evaluate.metric_table` on ``held_out``
    for the model (every example) and, on the examples of ``lengths`` only, the augmented
    model and item-KNN.

    Args:
        recommender: the model as it is (no short-session fallback).
        item_knn: a fitted :class:`srgnn.model.baselines.ItemKNN` over the recommender's
            items (it answers, and its neighbour lists augment).
        use_item_knn: compare item-KNN too.
        augment: neighbours an augmented session gets; 0 leaves augmentation out.
        max_examples: compare on the first this many validation examples (the training's
            ``max_valid_examples``, as candidate selection does); ``None``: all.
    """
    from srgnn.serving.recommender import BaselineRanker, Recommender

    by_way = {WAY_MODEL: evaluate(recommender, held_out, k)["by_length"]}
    short = _examples_of_lengths(held_out, lengths)
    if augment > 0:
        augmented = recommender.with_short_fallback(
            ShortSessionFallback(item_knn, (), {}, tuple(lengths), augment))
        by_way[WAY_AUGMENTED] = evaluate(augmented, short, k)["by_length"]
    if use_item_knn:
        knn = Recommender(BaselineRanker(item_knn), recommender.vocabulary)
        by_way[WAY_ITEM_KNN] = evaluate(knn, short, k)["by_length"]
    return by_way


def _examples_of_lengths(held_out, lengths):
    """The examples of ``held_out`` whose prefix length is one of ``lengths`` (their
    by-length figures are those of the whole set)."""
    import dataclasses

    import numpy as np

    rows = np.flatnonzero(np.isin(held_out.prefix_lengths, lengths))
    return dataclasses.replace(
        held_out, sessions=held_out.sessions.take(rows), targets=held_out.targets[rows],
        prefix_lengths=held_out.prefix_lengths[rows],
        absent=None if held_out.absent is None else held_out.absent[rows],
        times=None if held_out.times is None else held_out.times.take(rows))


def describe_fallback(fallback, k: int) -> str:
    """One line: which way answers which short length, with its validation HR@K."""
    if fallback is None:
        return "none: SR-GNN answers every length"
    routes = {**{n: WAY_ITEM_KNN for n in fallback.lengths},
              **{n: WAY_AUGMENTED for n in fallback.augmented}}
    parts = []
    for n in sorted(routes):
        figures, way = fallback.evidence.get(str(n), {}), routes[n]
        name = _WAY_NAMES[way] + (f" (+{fallback.neighbors} neighbours)" if way == WAY_AUGMENTED else "")
        shown = ""
        if way in figures and WAY_MODEL in figures:
            shown = (f" (validation HR@{k} {100 * figures[way][f'HR@{k}']:.2f} vs SR-GNN "
                     f"{100 * figures[WAY_MODEL][f'HR@{k}']:.2f})")
        parts.append(f"{name} for {n} click{'s' if n > 1 else ''}{shown}")
    return "; ".join(parts)
