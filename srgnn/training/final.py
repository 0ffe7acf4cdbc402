"""The final refit: after the gate promoted a candidate, the champion is trained on every day.

The gate decides on a model that did not see the held-out days (:mod:`srgnn.training.run`
registers the refit on train + valid when there are test days, the selection model trained on
train otherwise). Those held-out days are the most recent ones, so once the candidate has won,
:func:`final_refit` trains the same settings from the same initial weights on every split with
examples (train + valid + test) for the epoch count validation chose
(:func:`srgnn.training.loop.refit`), registers that model as a new version and moves the
champion alias to it. It runs when the candidate was promoted and ``TrainConfig.refit`` is on,
and:

* with ``TrainConfig.final_refit`` (the default) whenever some day is still unseen; or
* without test days even when ``final_refit`` is off: the refit on train + valid that
  :mod:`srgnn.training.run` could not do before the gate (valid was the held-out split).

The new version's MLflow run (``final-refit-<run folder>``) holds the training params, the
per-epoch ``refit_train_loss`` and the tags ``trained_on`` (``train+valid+test``),
``trained_days`` (``YYYY-MM-DD..YYYY-MM-DD``) and ``refit_of`` (the gated version); the version
carries ``trained_on``, ``trained_days``, ``refit_of`` and the gate's tags of the candidate
(``gate.*``, the figures being the candidate's, ``gate.candidate_version`` saying so). Its
short-session fallback routes the lengths the candidate routed, with item-KNN fitted on every
day. The settings are the candidate's own (``config.json`` of its MLflow run: those a search
chose, say), only ``refit``, ``final_refit`` and how the training runs (``progress``,
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
           "candidate_config"]

logger = logging.getLogger(__name__)

FINAL_DIR = "final"  # under the checkpoint folder
FINAL_RECORD = "final_refit.json"  # in the run folder
# Settings that the caller decides, not the candidate's training: what follows the training
# and how it runs.
CALLER_SETTINGS = ("refit", "final_refit", "progress", "num_threads", "processes")


def final_splits(run: RunFolder, trained: dict, config: TrainConfig) -> tuple[tuple[str, ...], str]:
    """``(splits, why)``: the splits the final refit trains on, or ``()`` and why it does not
    run, for the candidate ``trained`` (:func:`srgnn.training.run.run_training`'s result)."""
    if not config.refit:
        return (), "refit is off"
    if trained.get("kind", "srgnn") != "srgnn":
        return (), f"the candidate is {trained['kind']}, not SR-GNN"
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
            ``best_epoch``, ``trained_on``, ``short_fallback``, ...).
        gate: :func:`srgnn.pipeline.gate_step`'s result.
        train_config: the candidate's training settings (``refit``, ``final_refit``).

    Returns:
        ``gate`` with ``final_refit`` (``done``, ``reason``, and when done ``candidate_version``,
        ``trained_on``, ``trained_days``, ``epochs``); when done, ``version``, ``model_uri``,
        ``run_id`` and ``champion_version`` are the new version's.
    """
    import mlflow

    from srgnn.serving import registry

    run = RunFolder(trained["run_dir"]).require_complete()
    registry.configure(settings, experiment_name)
    if not gate.get("promoted"):
        return _skipped(gate, "the candidate was not promoted")
    splits, why = final_splits(run, trained, train_config)
    if not splits:
        return _skipped(gate, why)
    model_name = trained.get("model_name", registry.MODEL_NAME)
    earlier = run.read_json(FINAL_RECORD)
    if earlier and earlier.get("candidate_version") == str(trained["version"]) and \
            _exists(model_name, earlier["version"]):
        logger.info("the final refit of %s already registered version %s; reusing it",
                    run.path, earlier["version"])
        registry.promote(earlier["version"], model_name=model_name)
        return earlier["gate"]

    from srgnn.training.run import trained_on_tags

    epochs = int(trained["best_epoch"])
    tags = trained_on_tags(run, splits)
    config = candidate_config(trained, train_config)
    with mlflow.start_run(run_name=f"final-refit-{run.path.name}") as mlflow_run:
        version = _train_and_register(run, trained, config, splits, epochs, tags, model_name, k)
        mlflow.set_tag("model_version", version)
    tracking = registry.client()
    candidate = tracking.get_model_version(model_name, str(trained["version"]))
    version_tags = {**{key: value for key, value in candidate.tags.items()
                       if key.startswith("gate.")},
                    "gate.candidate_version": str(trained["version"]),
                    "refit_of": str(trained["version"]), **tags}
    for key, value in version_tags.items():
        tracking.set_model_version_tag(model_name, version, key, value)
    registry.promote(version, model_name=model_name)
    tracking.set_model_version_tag(model_name, str(trained["version"]), "final_refit.version",
                                   version)
    logger.info("final refit of %s version %s on %s (%s), %d epoch(s): version %s is the "
                "champion", model_name, trained["version"], tags["trained_on"],
                tags["trained_days"], epochs, version)
    out = json_safe({
        **gate, "version": version, "model_uri": f"models:/{model_name}/{version}",
        "run_id": mlflow_run.info.run_id, "champion_version": version,
        "final_refit": {"done": True, "reason": f"promoted version {trained['version']}, "
                        f"refitted on {tags['trained_on']}", "candidate_version":
                        str(trained["version"]), "epochs": epochs, **tags},
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


def _train_and_register(run: RunFolder, trained: dict, config: TrainConfig, splits, epochs: int,
                        tags: dict, model_name: str, k: int) -> str:
    """In the active MLflow run: train on ``splits``, log and register; returns the version."""
    import mlflow

    from srgnn.serving.recommender import Recommender
    from srgnn.training import tracking
    from srgnn.training.loop import refit

    tracking.log_params_once(tracking.training_params(config, run.num_items, run.summary()))
    mlflow.set_tags({"run_dir": str(run.path.resolve()), "refit": "true", "final_refit": "true",
                     "refit_of": str(trained["version"]), "refit_epochs": str(epochs), **tags})
    logger.info("final refit on %s for %d epoch(s)", "+".join(splits), epochs)
    result = refit([run.graphs(split) for split in splits], run.num_items, epochs, config,
                   output_dir=run.checkpoint_dir / FINAL_DIR, resume=True,
                   on_epoch_end=lambda stats: mlflow.log_metric(
                       "refit_train_loss", stats.train_loss, step=stats.epoch))
    recommender = Recommender.from_training(result.best_state_dict, result.model_config,
                                            run.vocabulary)
    short = trained.get("short_fallback") or {}
    if short.get("lengths") or short.get("augmented"):  # validation's routes, item-KNN of every day
        from srgnn.evaluation.evaluate import fit_baselines
        from srgnn.serving.recommender import ShortSessionFallback

        fitted, _ = fit_baselines(run, ["iknn"], splits=splits)
        recommender = recommender.with_short_fallback(ShortSessionFallback.from_summary(
            fitted["iknn"].ranker.baseline, short, short.get("validation_by_length")))
    recommender = recommender.with_item_categories(run.item_categories())
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
