"""Which recommender a training run registers: the best candidate on the validation split.

SR-GNN is one candidate among several. After it trains, :func:`select_candidate` scores on
the run's validation examples, with :func:`srgnn.evaluation.evaluate.evaluate` (the code the
gate uses):

* ``srgnn``: the SR-GNN model chosen on validation (with its short-session fallback, if any);
* the baselines of :data:`CANDIDATE_BASELINES` present in :mod:`srgnn.model.baselines`
  (first-order Markov, item-KNN, SKNN, V-SKNN, S-POP), fitted on the training split;
* ``blend:srgnn+<best baseline>``: SR-GNN's and the best baseline's scores mixed
  (:class:`srgnn.serving.blend.BlendRanker`) with the weight of :data:`BLEND_WEIGHTS` that
  validation likes best (weights 0 and 1 are the two candidates themselves).

The best one, by HR@K and then MRR@K (ties keep the earlier candidate, SR-GNN first), is what
gets registered; its ``kind`` (``srgnn``, ``markov``, ``blend:srgnn+markov``, ...) becomes a
tag of the model version. When the final model trains on train + valid (``refit``), a winning
baseline is fitted again on those days, and a winning blend mixes the refitted SR-GNN with the
refitted baseline at the chosen weight (:func:`fit_candidate`, which the final refit of
:mod:`srgnn.training.final` uses too). ``TrainConfig.candidates = "srgnn"`` skips all of this
and registers SR-GNN, as before.

Every candidate's validation figures go to the training's MLflow run (metrics
``select.<candidate>.valid_hr_at_20`` / ``..._mrr_at_20``, tag ``kind``, artifact
``selection.json``) and to ``selection.json`` in the run folder (:func:`log_selection`).

``max_examples`` caps the validation examples scored, as ``TrainConfig.max_valid_examples``
caps the training's validation (:func:`srgnn.training.run.run_training` passes it): the first
that many in the split's order, the training loop's own validation examples. The record says
how many were used (``examples``) and the cap (``max_examples``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from srgnn.config import CANDIDATES, K, json_safe
from srgnn.evaluation import heldout
from srgnn.evaluation.evaluate import evaluate, fit_baselines
from srgnn.evaluation.gate import is_better
from srgnn.serving.blend import BlendRanker, blend_kind
from srgnn.serving.recommender import KIND_SRGNN, Recommender

__all__ = ["CANDIDATE_BASELINES", "BLEND_WEIGHTS", "Selection", "select_candidate",
           "fit_candidate", "blended", "log_selection", "summary_line", "candidate_row"]

logger = logging.getLogger(__name__)

CANDIDATE_BASELINES = ("markov", "iknn", "sknn", "vsknn", "spop")
BLEND_WEIGHTS = (0.25, 0.5, 0.75)  # SR-GNN's share; 0 and 1 are the pure candidates
SELECTION_FILE = "selection.json"


@dataclass
class Selection:
    """The outcome of :func:`select_candidate`.

    Attributes:
        kind: what is registered (``srgnn``, a baseline's name, ``blend:srgnn+<baseline>``).
        recommender: the recommender to register.
        results: ``{candidate: validation figures}`` in the order evaluated (empty when
            nothing was compared); blends are named ``blend:srgnn+<baseline>@<weight>``.
        blend_weight: SR-GNN's share in the winning blend (``None`` otherwise).
        mode: ``TrainConfig.candidates``.
        reason: why this kind, in words.
        examples: validation examples every candidate was scored on (0 when none was).
        max_examples: the cap on them (``None``: the whole split).
    """

    kind: str
    recommender: Recommender
    results: dict = field(default_factory=dict)
    blend_weight: float | None = None
    mode: str = "auto"
    reason: str = ""
    examples: int = 0
    max_examples: int | None = None

    def as_dict(self, k: int = K) -> dict:
        return json_safe({
            "kind": self.kind, "mode": self.mode, "blend_weight": self.blend_weight,
            "reason": self.reason, "split": "valid", "examples": self.examples,
            "max_examples": self.max_examples,
            "candidates": {name: {key: row.get(key) for key in (f"HR@{k}", f"MRR@{k}", "examples")}
                           for name, row in self.results.items()},
        })


def _blend_name(baseline: str, weight: float) -> str:
    return f"{blend_kind(baseline)}@{weight:g}"


def select_candidate(run, final: Recommender, selection: Recommender, *, mode: str = "auto",
                     training_splits=("train",), baselines=CANDIDATE_BASELINES,
                     weights=BLEND_WEIGHTS, max_examples: int | None = None,
                     k: int = K) -> Selection:
    """The recommender to register (module docstring).

    Args:
        run: the :class:`~srgnn.data.runfolder.RunFolder`.
        final: the SR-GNN recommender that would be registered (refitted or not, with its
            short-session fallback).
        selection: SR-GNN trained on the training split only (the model validation chose),
            without a short-session fallback; the same object as ``final`` without refit.
        mode: ``"auto"`` compares every candidate; ``"srgnn"`` returns ``final``.
        training_splits: the splits the final model trained on (a winning baseline is fitted
            on them).
        baselines: baseline names to try (those unknown to :mod:`srgnn.model.baselines` are
            skipped).
        weights: SR-GNN's shares tried for the blend.
        max_examples: score only the first that many validation examples (``None``: all).
    """
    from srgnn.model.baselines import BASELINES

    if mode not in CANDIDATES:
        raise ValueError(f"candidates must be one of {', '.join(CANDIDATES)}, got {mode!r}.")
    if mode == KIND_SRGNN:
        return Selection(KIND_SRGNN, final, mode=mode, reason="SR-GNN only (candidates=srgnn)")
    valid = (heldout.from_run(run, "valid", max_examples=max_examples)
             if run.count_examples("valid") > 0 else None)
    if valid is None or len(valid) == 0:
        return Selection(KIND_SRGNN, final, mode=mode, max_examples=max_examples,
                         reason="no validation examples to compare candidates on")
    scored = {"examples": len(valid), "max_examples": max_examples}
    names = [name for name in baselines if name in BASELINES]
    fitted, _ = fit_baselines(run, names)
    ours = selection
    if final.short_fallback is not None:  # judged as registered, item-KNN from train only
        knn = fitted["iknn"] if "iknn" in fitted else fit_baselines(run, ["iknn"])[0]["iknn"]
        ours = selection.with_short_fallback(final.short_fallback.with_item_knn(knn.ranker.baseline))
    results = {KIND_SRGNN: evaluate(ours, valid, k)}
    for name, recommender in fitted.items():
        results[name] = evaluate(recommender, valid, k)
    best_baseline = None
    for name in fitted:
        if best_baseline is None or is_better(results[name], results[best_baseline], k):
            best_baseline = name
    if best_baseline is not None:
        for weight in weights:
            results[_blend_name(best_baseline, weight)] = evaluate(
                blended(selection, fitted[best_baseline], weight), valid, k)
    winner = KIND_SRGNN
    for name in results:
        if is_better(results[name], results[winner], k):
            winner = name
    hr = f"HR@{k}"
    reason = (f"best validation {hr} of {len(results)} candidates on {len(valid)} examples: "
              f"{winner} {100 * results[winner][hr]:.2f} vs srgnn "
              f"{100 * results[KIND_SRGNN][hr]:.2f}")
    if winner == KIND_SRGNN:
        return Selection(KIND_SRGNN, final, results, mode=mode, reason=reason, **scored)
    if "@" in winner:  # a blend
        weight = float(winner.rsplit("@", 1)[1])
        chosen, _ = fit_candidate(run, best_baseline, training_splits, srgnn=final,
                                  weight=weight, fitted=fitted)
        return Selection(chosen.kind, chosen, results, weight, mode, reason, **scored)
    chosen, _ = fit_candidate(run, winner, training_splits, fitted=fitted)
    return Selection(winner, chosen, results, mode=mode, reason=reason, **scored)


def fit_candidate(run, baseline: str, splits=("train",), *, srgnn: Recommender | None = None,
                  weight: float | None = None,
                  fitted: dict | None = None) -> tuple[Recommender, float]:
    """A baseline candidate, or with ``srgnn`` a blend candidate, fitted on ``splits``: what
    the selection registers and what the final refit (:mod:`srgnn.training.final`) fits on
    every day.

    Args:
        run: the :class:`~srgnn.data.runfolder.RunFolder`.
        baseline: the baseline's name (:mod:`srgnn.model.baselines`).
        splits: the splits the baseline is fitted on.
        srgnn: SR-GNN's recommender to blend the baseline with (``None``: the baseline alone).
        weight: SR-GNN's share in the blend (:func:`blended`); needed with ``srgnn``.
        fitted: ``{name: Recommender}`` of baselines fitted on train alone
            (:func:`~srgnn.evaluation.evaluate.fit_baselines`), reused when ``splits`` is
            train alone instead of fitting again.

    Returns:
        ``(recommender, seconds the baseline's fit took)``; 0 seconds when it came from
        ``fitted``.
    """
    if fitted is not None and baseline in fitted and tuple(splits) == ("train",):
        recommender, seconds = fitted[baseline], 0.0
    else:
        fits, times = fit_baselines(run, [baseline], splits=tuple(splits))
        recommender, seconds = fits[baseline], times[baseline]
    if srgnn is not None:
        if weight is None:
            raise ValueError("a blend candidate needs SR-GNN's weight.")
        recommender = blended(srgnn, recommender, weight)
    return recommender, seconds


def blended(srgnn: Recommender, baseline: Recommender, weight: float) -> Recommender:
    """SR-GNN's and a fitted baseline's rankers mixed with SR-GNN's share ``weight``
    (:class:`srgnn.serving.blend.BlendRanker`), over SR-GNN's vocabulary."""
    return Recommender(BlendRanker(srgnn.ranker, baseline.ranker, weight), srgnn.vocabulary)


def candidate_row(kind: str, taken=()) -> str:
    """The row of a registered candidate of ``kind`` in an evaluation table: its kind, or
    ``<kind> (candidate)`` when another row (a baseline of that name) is ``taken``."""
    return f"{kind} (candidate)" if kind in taken else kind


def _metric_key(name: str) -> str:
    """A candidate's name in MLflow metric names (letters, digits, ``_ . -`` only)."""
    return re.sub(r"[^\w.\-]+", "_", name)


def summary_line(selection: Selection, k: int = K) -> str:
    """One line: every candidate's validation HR@K / MRR@K (percent) and the winner."""
    if not selection.results:
        return f"registered {selection.kind}: {selection.reason}"
    cells = [f"{name} {100 * row[f'HR@{k}']:.2f}/{100 * row[f'MRR@{k}']:.2f}"
             for name, row in selection.results.items()]
    return f"validation HR@{k}/MRR@{k}: " + " | ".join(cells) + f" -> {selection.kind}"


def log_selection(selection: Selection, run, k: int = K) -> dict:
    """Record ``selection`` in the active MLflow run (metrics, tag ``kind``, ``selection.json``)
    and in the run folder's ``selection.json``; log its :func:`summary_line`. Returns the
    JSON written."""
    import mlflow

    metrics = {}
    for name, row in selection.results.items():
        for key in (f"HR@{k}", f"MRR@{k}"):
            metrics[f"select.{_metric_key(name)}.valid_{key.lower().replace('@', '_at_')}"] = \
                float(row[key])
    if metrics:
        mlflow.log_metrics(metrics)
    tags = {"kind": selection.kind, "select.mode": selection.mode,
            "select.reason": selection.reason[:5000], "select.examples": str(selection.examples)}
    if selection.blend_weight is not None:
        tags["select.blend_weight"] = f"{selection.blend_weight:g}"
    mlflow.set_tags(tags)
    out = selection.as_dict(k)
    mlflow.log_dict(out, SELECTION_FILE)
    run.write_json(SELECTION_FILE, out)
    logger.info("%s", summary_line(selection, k))
    return out
