"""The final refit: after the gate promoted a candidate, the champion is trained on every day.

The gate decides on a model that did not see the held-out days (:mod:`srgnn.training.run`
registers the refit on train + valid when there are test days, the selection model trained on
train otherwise). Those held-out days are the most recent ones, so once the candidate has won,
:func:`final_refit` fits the same recommender on every split with examples (train + valid +
test), registers it as a new version and moves the champion alias to it. What is fitted
depends on the candidate's ``kind`` (:mod:`srgnn.evaluation.selection`):

* ``srgnn``: the same settings from the same initial weights, for the epoch count validation
  chose (:func:`srgnn.training.loop.refit`);
* a baseline (``markov``, ``iknn``, ``sknn``, ``vsknn``, ``spop``, ``pop``): the baseline
  fitted on every split (:func:`srgnn.evaluation.evaluate.fit_baselines`; no epochs);
* ``blend:srgnn+<baseline>``: both of the above, blended with the weight validation chose (the
  candidate's selection record, :func:`blend_weight`).

It runs when the candidate was promoted and ``TrainConfig.refit`` is on, and:

* with ``TrainConfig.final_refit`` (the default) whenever some day is still unseen; or
* without test days even when ``final_refit`` is off: the refit on train + valid that
  :mod:`srgnn.training.run` could not do before the gate (valid was the held-out split).

The new version's MLflow run (``final-refit-<run folder>``) holds the training params (for a
baseline only ``num_items`` and the data's), the per-epoch ``refit_train_loss`` (SR-GNN and a
blend) and the tags ``kind``, ``trained_on`` (``train+valid+test``), ``trained_days``
(``YYYY-MM-DD..YYYY-MM-DD``), ``refit_of`` (the gated version) and for a blend
``select.blend_weight``; the version carries ``kind``, ``trained_on``, ``trained_days``,
``refit_of`` and the gate's tags of the candidate (``gate.*``, the figures being the
candidate's, ``gate.candidate_version`` saying so). An SR-GNN champion's short-session
fallback routes the lengths the candidate routed, with item-KNN fitted on every day. SR-GNN's
settings are the candidate's own (``config.json`` of its MLflow run: those a search chose,
say), only ``refit``, ``final_refit`` and how the training runs (``progress``,
``num_threads``, ``processes``) come from the caller. The final refit trains in this process,
whatever ``TrainConfig.processes`` says.

Checkpoints go to ``<run_dir>/model/final/`` and the outcome to ``<run_dir>/final_refit.json``:
a retried task resumes the training, or returns the version an earlier attempt registered.

Example::

    from srgnn.pipeline import final_refit_step
    decision = final_refit_step(trained, gate)   # after train_step, evaluate_step, gate_step
    print(decision["version"], decision["final_refit"]["trained_on"])
"""

from __future__ import annotations

import logging
from dataclasses import fields, replace

from srgnn.config import K, Settings, TrainConfig, json_safe
from srgnn.data.runfolder import SPLITS, RunFolder

__all__ = ["FINAL_DIR", "FINAL_RECORD", "CALLER_SETTINGS", "final_refit", "final_splits",
           "candidate_config", "refit_parts", "blend_weight"]

logger = logging.getLogger(__name__)

FINAL_DIR = "final"  # under the checkpoint folder
FINAL_RECORD = "final_refit.json"  # in the run folder
# Settings that the caller decides, not the candidate's training: what follows the training
# and how it runs.
CALLER_SETTINGS = ("refit", "final_refit", "progress", "num_threads", "processes")


def refit_parts(kind: str) -> tuple[bool, str | None] | None:
    """What the final refit of a candidate of ``kind`` fits: ``(SR-GNN?, baseline name or
    None)``; ``None`` for a kind it cannot fit."""
    from srgnn.model.baselines import BASELINES
    from srgnn.serving.blend import blend_kind

    if kind == "srgnn":
        return True, None
    if kind in BASELINES:
        return False, kind
    blended = [name for name in BASELINES if kind == blend_kind(name)]
    return (True, blended[0]) if blended else None


def final_splits(run: RunFolder, trained: dict, config: TrainConfig) -> tuple[tuple[str, ...], str]:
    """``(splits, why)``: the splits the final refit trains on, or ``()`` and why it does not
    run, for the candidate ``trained`` (:func:`srgnn.training.run.run_training`'s result)."""
    if not config.refit:
        return (), "refit is off"
    kind = trained.get("kind", "srgnn")
    if refit_parts(kind) is None:
        return (), f"the candidate is {kind}, which the final refit cannot fit"
    every = tuple(split for split in SPLITS if run.count_examples(split) > 0)
    seen = tuple(str(trained.get("trained_on") or "train").split("+"))
    if set(every) <= set(seen):
        return (), f"the candidate saw every split already ({'+'.join(seen)})"
    deferred = "test" not in every  # the refit on train + valid waited for the gate
    if not (config.final_refit or deferred):
        return (), "final_refit is off"
    return every, ""


def final_refit(settings: Settings, trained: dict, gate: dict, train_config: TrainConfig, *,
                experiment_name: str = "srgnn", k: int = K) -> dict:
    """Refit a promoted candidate on every day, register it and make it the champion.

    Args:
        settings: where MLflow lives.
        trained: :func:`srgnn.training.run.run_training`'s result (``run_dir``, ``version``,
            ``kind``, ``best_epoch``, ``trained_on``, ``short_fallback``, ``selection``, ...).
        gate: :func:`srgnn.pipeline.gate_step`'s result.
        train_config: the candidate's training settings (``refit``, ``final_refit``).

    Returns:
        ``gate`` with ``final_refit`` (``done``, ``reason``, and when done ``candidate_version``,
        ``kind``, ``trained_on``, ``trained_days``, ``epochs`` (0 for a baseline), for a blend
        ``blend_weight``); when done, ``version``, ``model_uri``, ``run_id`` and
        ``champion_version`` are the new version's.
    """
    import mlflow

    from srgnn.serving import registry

    run = RunFolder(trained["run_dir"]).require_complete()
    registry.configure(settings, experiment_name)
    if not gate.get("promoted"):
        return _skipped(gate, "the candidate was not promoted")
    model_name = trained.get("model_name", registry.MODEL_NAME)
    if "kind" not in trained:  # a result rebuilt from MLflow: the version's tag says
        tags = registry.client().get_model_version(model_name, str(trained["version"])).tags
        trained = {**trained, "kind": tags.get("kind", "srgnn")}
    splits, why = final_splits(run, trained, train_config)
    if not splits:
        return _skipped(gate, why)
    earlier = run.read_json(FINAL_RECORD)
    if earlier and earlier.get("candidate_version") == str(trained["version"]) and \
            _exists(model_name, earlier["version"]):
        logger.info("the final refit of %s already registered version %s; reusing it",
                    run.path, earlier["version"])
        registry.promote(earlier["version"], model_name=model_name)
        return earlier["gate"]

    from srgnn.training.run import trained_on_tags

    kind = trained["kind"]
    trains_srgnn, baseline = refit_parts(kind)
    weight = blend_weight(run, trained) if trains_srgnn and baseline else None
    epochs = int(trained["best_epoch"]) if trains_srgnn else 0
    tags = trained_on_tags(run, splits)
    config = candidate_config(trained, train_config) if trains_srgnn else None
    from srgnn.training.tracking import open_run, recorded_run_id

    final_dir = run.checkpoint_dir / FINAL_DIR
    final_dir.mkdir(parents=True, exist_ok=True)
    run_id = recorded_run_id(final_dir)
    registered = registry.versions_of_run(run_id, model_name) if run_id else []
    if registered:  # an attempt registered it and failed before final_refit.json: reuse it
        version = str(registered[0].version)
        logger.info("the final refit's MLflow run %s already registered version %s; reusing it",
                    run_id, version)
    else:
        active, _ = open_run(final_dir, True, f"final-refit-{run.path.name}")
        with active as mlflow_run:
            version = _train_and_register(run, trained, config, splits, epochs, tags,
                                          model_name, k, weight)
            mlflow.set_tag("model_version", version)
        run_id = mlflow_run.info.run_id
    tracking = registry.client()
    candidate = tracking.get_model_version(model_name, str(trained["version"]))
    version_tags = {**{key: value for key, value in candidate.tags.items()
                       if key.startswith("gate.")},
                    "gate.candidate_version": str(trained["version"]),
                    "refit_of": str(trained["version"]), "kind": kind, **tags}
    for key, value in version_tags.items():
        tracking.set_model_version_tag(model_name, version, key, value)
    registry.promote(version, model_name=model_name)
    tracking.set_model_version_tag(model_name, str(trained["version"]), "final_refit.version",
                                   version)
    logger.info("final refit of %s version %s (%s) on %s (%s), %d epoch(s): version %s is the "
                "champion", model_name, trained["version"], kind, tags["trained_on"],
                tags["trained_days"], epochs, version)
    done = {"done": True, "reason": f"promoted version {trained['version']}, refitted on "
            f"{tags['trained_on']}", "candidate_version": str(trained["version"]), "kind": kind,
            "epochs": epochs, **tags}
    if weight is not None:
        done["blend_weight"] = weight
    out = json_safe({
        **gate, "version": version, "model_uri": f"models:/{model_name}/{version}",
        "run_id": run_id, "champion_version": version, "final_refit": done,
    })
    run.write_json(FINAL_RECORD, {"candidate_version": str(trained["version"]),
                                  "version": version, "gate": out})
    return out


def candidate_config(trained: dict, config: TrainConfig) -> TrainConfig:
    """The settings the candidate trained with (``config.json`` of its MLflow run), with the
    :data:`CALLER_SETTINGS` of ``config``; ``config`` itself when that file cannot be read."""
    import mlflow

    try:
        saved = mlflow.artifacts.load_dict(f"runs:/{trained['run_id']}/config.json")["train_config"]
    except (mlflow.exceptions.MlflowException, OSError, KeyError, ValueError) as exc:
        logger.warning("the training settings of run %s cannot be read (%s); the final refit "
                       "uses the settings it was given", trained.get("run_id"), exc)
        return config
    names = {f.name for f in fields(TrainConfig)} - set(CALLER_SETTINGS)
    return replace(config, **{name: value for name, value in saved.items() if name in names})


def blend_weight(run: RunFolder, trained: dict) -> float:
    """SR-GNN's share in the blend candidate ``trained``: from its selection record (the
    result's ``selection``, else its MLflow run's tag ``select.blend_weight``, else the run
    folder's ``selection.json`` when it names the same kind).

    Raises:
        ValueError: when none of them holds it.
    """
    import mlflow

    from srgnn.evaluation.selection import SELECTION_FILE
    from srgnn.serving import registry

    record = trained.get("selection") or {}
    if record.get("blend_weight") is not None:
        return float(record["blend_weight"])
    try:
        tag = registry.client().get_run(trained["run_id"]).data.tags.get("select.blend_weight")
    except (KeyError, mlflow.exceptions.MlflowException):
        tag = None
    if tag is not None:
        return float(tag)
    record = run.read_json(SELECTION_FILE) or {}
    if record.get("kind") == trained["kind"] and record.get("blend_weight") is not None:
        return float(record["blend_weight"])
    raise ValueError(f"the blend weight of candidate version {trained.get('version')} is not "
                     f"recorded (selection, MLflow tag select.blend_weight, {SELECTION_FILE}).")


def _train_and_register(run: RunFolder, trained: dict, config: TrainConfig | None, splits,
                        epochs: int, tags: dict, model_name: str, k: int,
                        weight: float | None = None) -> str:
    """In the active MLflow run: fit the candidate's kind on ``splits`` (SR-GNN for ``epochs``,
    a baseline, or both blended with ``weight``), log and register; returns the version."""
    import mlflow

    from srgnn.evaluation.evaluate import fit_baselines
    from srgnn.evaluation.selection import fit_candidate
    from srgnn.serving.recommender import Recommender
    from srgnn.training import tracking
    from srgnn.training.loop import refit

    kind = trained["kind"]
    trains_srgnn, baseline = refit_parts(kind)
    mlflow.set_tags({"run_dir": str(run.path.resolve()), "refit": "true", "final_refit": "true",
                     "refit_of": str(trained["version"]), "kind": kind, **tags})
    if weight is not None:
        mlflow.set_tag("select.blend_weight", f"{weight:g}")
    tracking.log_params_once(tracking.training_params(config, run.num_items, run.summary()))
    result = None
    if trains_srgnn:
        mlflow.set_tag("refit_epochs", str(epochs))
        logger.info("final refit on %s for %d epoch(s)", "+".join(splits), epochs)
        result = refit([run.graphs(split) for split in splits], run.num_items, epochs, config,
                       output_dir=run.checkpoint_dir / FINAL_DIR, resume=True,
                       on_epoch_end=lambda stats: mlflow.log_metric(
                           "refit_train_loss", stats.train_loss, step=stats.epoch))
        recommender = Recommender.from_training(result.best_state_dict, result.model_config,
                                                run.vocabulary)
    if baseline is not None:  # alone, or blended with the SR-GNN just trained
        logger.info("final fit of %s on %s", baseline, "+".join(splits))
        recommender, seconds = fit_candidate(run, baseline, splits, weight=weight,
                                             srgnn=None if result is None else recommender)
        mlflow.log_metric("fit_seconds", seconds)
    short = trained.get("short_fallback") or {}
    if kind == "srgnn" and (short.get("lengths") or short.get("augmented")):
        # validation's routes, item-KNN of every day
        from srgnn.serving.recommender import ShortSessionFallback

        fitted, _ = fit_baselines(run, ["iknn"], splits=splits)
        recommender = recommender.with_short_fallback(ShortSessionFallback.from_summary(
            fitted["iknn"].ranker.baseline, short, short.get("validation_by_length")))
    recommender = recommender.with_categories(run.item_categories())
    if result is None:  # a fitted baseline: no training to log
        info = tracking.log_model(run, recommender, {"kind": kind, **tags},
                                  model_name=model_name, k=k)
    else:
        info, _ = tracking.log_training_run(result, run, recommender, model_name=model_name, k=k)
    return str(info.registered_model_version)


def _exists(model_name: str, version: str) -> bool:
    import mlflow

    from srgnn.serving import registry

    try:
        registry.client().get_model_version(model_name, str(version))
    except mlflow.exceptions.MlflowException:
        return False
    return True


def _skipped(gate: dict, reason: str) -> dict:
    logger.info("no final refit: %s", reason)
    return {**gate, "final_refit": {"done": False, "reason": reason}}
