"""Short sessions: route 1-3 click sessions to item-KNN where validation shows it better.

With ``TrainConfig.short_fallback`` (the default) the registered recommender may answer
sessions of 1, 2 or 3 known clicks with item-KNN instead (:func:`choose_short_fallback`):
each of those lengths whose validation examples (at least 100) show item-KNN ahead of the
model chosen on validation (HR@20, ties by MRR@20) goes to item-KNN, fitted on the final
model's training sessions. The figures by length are saved with the model; scoring marks
those rows ``fallback:iknn``.
"""

from __future__ import annotations

from srgnn.config import K
from srgnn.evaluation import heldout
from srgnn.evaluation.evaluate import evaluate, fit_baselines
from srgnn.evaluation.gate import is_better
from srgnn.serving.recommender import ShortSessionFallback

__all__ = ["SHORT_LENGTHS", "SHORT_MIN_EXAMPLES", "short_fallback_lengths",
           "choose_short_fallback", "describe_fallback"]

SHORT_LENGTHS = (1, 2, 3)  # session lengths (known clicks) that may go to the item-KNN fallback
SHORT_MIN_EXAMPLES = 100  # validation examples a length needs before it can be routed


def short_fallback_lengths(model_by_length: dict, baseline_by_length: dict, k: int = K,
                           lengths=SHORT_LENGTHS, min_examples: int = SHORT_MIN_EXAMPLES) -> tuple[int, ...]:
    """The lengths whose validation bucket shows the baseline ahead of the model.

    Args:
        model_by_length, baseline_by_length: ``by_length`` dicts of
            :func:`srgnn.evaluation.evaluate.metric_table` (``{"1": {"HR@K", "MRR@K", "examples"}}``).
        lengths: single-length buckets that may be routed.
        min_examples: fewer validation examples than this never route a length.

    Returns:
        The routed lengths: where the baseline has the higher HR@K, or the same HR@K and a
        higher MRR@K (:func:`srgnn.evaluation.gate.is_better`).
    """
    chosen = []
    for length in lengths:
        model, baseline = model_by_length.get(str(length)), baseline_by_length.get(str(length))
        if not model or not baseline or model["examples"] < min_examples:
            continue
        if is_better(baseline, model, k):
            chosen.append(length)
    return tuple(chosen)


def choose_short_fallback(run, selection_recommender, *, training_splits=("train",), k: int = K,
                          lengths=SHORT_LENGTHS, min_examples: int = SHORT_MIN_EXAMPLES):
    """``(fallback or None, evidence)``: item-KNN for the short lengths where it beats the model
    on the run's validation split (module docstring).

    Args:
        run: the :class:`~srgnn.data.runfolder.RunFolder` (needs validation examples).
        selection_recommender: the model chosen on validation, trained without those days.
        training_splits: the ``sessions/<split>`` folders the final model trained on; the
            fallback's item-KNN is fitted on them.
    """
    valid = heldout.from_run(run, "valid")
    model = evaluate(selection_recommender, valid, k)["by_length"]
    knn_models, _ = fit_baselines(run, ["iknn"])
    knn = evaluate(knn_models["iknn"], valid, k)["by_length"]
    evidence = {str(n): {"srgnn": model[str(n)], "iknn": knn[str(n)]}
                for n in lengths if str(n) in model and str(n) in knn}
    chosen = short_fallback_lengths(model, knn, k, lengths, min_examples)
    if not chosen:
        return None, evidence
    fitted, _ = fit_baselines(run, ["iknn"], splits=training_splits)
    item_knn = fitted["iknn"].ranker.baseline
    return ShortSessionFallback(item_knn, chosen, evidence), evidence


def describe_fallback(fallback, k: int) -> str:
    if fallback is None:
        return "none: SR-GNN answers every length"
    parts = []
    for n in fallback.lengths:
        figures = fallback.evidence[str(n)]
        parts.append(f"{n} click{'s' if n > 1 else ''} (validation HR@{k} item-KNN "
                     f"{100 * figures['iknn'][f'HR@{k}']:.2f} vs SR-GNN {100 * figures['srgnn'][f'HR@{k}']:.2f})")
    return "item-KNN for " + ", ".join(parts)
