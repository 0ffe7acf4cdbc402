"""One tracked training: train SR-GNN on a prepare run folder, log it to MLflow and register
the model as a new version of ``srgnn``. Nothing more: the held-out evaluation and the
champion gate are the next steps (:mod:`srgnn.pipeline`, the training DAG's ``evaluate`` and
``gate`` tasks).

:func:`run_training` is what ``srgnn train`` and the training DAG's ``train`` task call. What
is logged is described in :mod:`srgnn.training.tracking`; the short-session fallback in
:mod:`srgnn.training.fallback`.

With ``TrainConfig.processes`` above 1 the training runs in that many processes with PyTorch
DDP, started on the Spark master (:mod:`srgnn.training.distributed`); rank 0 does everything
described here and the other ranks only train.

With ``TrainConfig.refit`` (the default) a second training follows the selection: from the
same initial weights on train + valid together, for the epoch count validation chose
(:func:`srgnn.training.loop.refit`); that model is the one registered (metrics
``refit_train_loss`` per epoch, tag ``refit``). That happens here only when the run folder has
a test split: the held-out figures and the gate come from it, so valid may be training data.
Without test days the figures and the gate use valid, so the model registered here is the
selection model, and the refit on train + valid waits until the gate has promoted it
(:mod:`srgnn.training.final`). The MLflow run and the registered version say which days the
model saw: tags ``trained_on`` (``train`` or ``train+valid``) and ``trained_days``
(``YYYY-MM-DD..YYYY-MM-DD``, the days its training sessions ended), and ``stop_reason`` (why
the selection training stopped: ``patience``, ``lr_floor`` or ``epochs``).

Checkpoints go to ``<run_dir>/model/`` (``checkpoint.pt``, ``best_model.pt``) and the MLflow
run is recorded there (``mlflow_run.json``). With ``resume=True`` (the DAG always resumes:
each DAG run has its own run folder):

* when the recorded run already registered a version, that version is returned and nothing is
  trained or registered again (a retried task, or ``srgnn train --resume`` on a finished run);
* otherwise training continues from the last finished epoch and, when the recorded MLflow run
  did not finish, its metrics continue in that run.

Example::

    from srgnn.config import Settings, TrainConfig
    from srgnn.training.run import run_training
    out = run_training(Settings.from_env(), "var/runs/20261128T000000Z", TrainConfig(epochs=10))
    print(out["version"], out["model_uri"], out["best_epoch"])
"""

from __future__ import annotations

import logging
import time

from srgnn.config import K, Settings, SettingError, TrainConfig, json_safe, parse_budget
from srgnn.data.runfolder import RunFolder

__all__ = ["REFIT_DIR", "run_training", "check_refit", "trained_on_tags"]

logger = logging.getLogger(__name__)

REFIT_DIR = "refit"  # under the checkpoint folder


def run_training(
    settings: Settings,
    run_dir,
    train_config: TrainConfig | None = None,
    *,
    model_name: str = "srgnn",
    resume: bool = False,
    experiment_name: str = "srgnn",
    refit: bool | None = None,
    k: int = K,
    replicas=None,
) -> dict:
    """Train, log and register one SR-GNN model on a prepare run folder.

    Args:
        settings: where MLflow lives (:func:`srgnn.serving.registry.configure`).
        run_dir: a folder written by ``srgnn prepare`` (docs/contracts.md).
        train_config: a :class:`~srgnn.config.TrainConfig` (default: the paper's settings).
        model_name: the registered model that gets the new version.
        resume: continue (or reuse) the training recorded in ``<run_dir>/model`` (module
            docstring).
        experiment_name: the MLflow experiment.
        refit: after selecting the epoch count on valid, train again on train + valid for
            that many epochs and register that model (checkpoints in
            ``<run_dir>/model/refit``), when the run folder has test examples to hold out
            (:func:`check_refit`); ``None``: ``train_config.refit``.
        k: the default ``k`` of the registered model's signature.
        replicas: set on rank 0 of a distributed training
            (:class:`srgnn.training.distributed.DataParallel`); with ``None`` and
            ``train_config.processes > 1`` the training is started in that many processes
            (:func:`srgnn.training.distributed.launch`).

    Returns:
        A JSON-able dict: ``run_id``, ``experiment_id``, ``model_name``, ``version`` (int),
        ``model_uri`` (``models:/<name>/<version>``), ``metrics`` (validation figures),
        ``best_epoch``, ``epochs``, ``stop_reason``, ``refit_epochs`` (0 without refit),
        ``trained_on`` and ``trained_days`` (the registered model's training data),
        ``short_fallback``, ``run_dir`` and ``reused`` (True when an earlier attempt's version
        was returned).
    """
    import mlflow

    from srgnn.evaluation.selection import KIND_SRGNN, log_selection, select_candidate
    from srgnn.serving import registry
    from srgnn.serving.recommender import Recommender
    from srgnn.training import tracking
    from srgnn.training.fallback import choose_short_fallback, describe_fallback
    from srgnn.training.loop import refit as refit_model
    from srgnn.training.loop import refuse_popularity_penalty, train
    from srgnn.training.plots import plot_training_curve

    train_config = train_config or TrainConfig()
    run = RunFolder(run_dir).require_complete()
    refit = check_refit(run, train_config.refit if refit is None else refit)
    refuse_popularity_penalty(train_config, run.num_items)  # before MLflow or a search starts
    distributed = train_config.processes > 1 and replicas is None
    if distributed:  # refused before MLflow or Spark starts
        from srgnn.training.distributed import check_processes, launch

        check_processes(train_config, run.num_items)
    num_items = run.num_items
    checkpoint_dir = run.checkpoint_dir
    trained_on = trained_on_tags(run, ("train", "valid") if refit else ("train",))
    experiment_id = registry.configure(settings, experiment_name)
    if resume:
        done = _registered(run, model_name, experiment_id)
        if done is not None:
            return done
    if distributed:
        return launch(settings, run, train_config, model_name=model_name, resume=resume,
                      experiment_name=experiment_name, refit=refit, k=k)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)

    started = time.time()
    active, continued = tracking.open_run(checkpoint_dir, resume, run_name=f"train-{run.path.name}")
    with active as mlflow_run:
        run_id = mlflow_run.info.run_id
        logger.info("training on %s (%d items), MLflow run %s", run.path, num_items, run_id)
        if parse_budget(train_config.search) > 0:  # the settings to train: validation's choice
            train_config = _searched(run, train_config, resume)
        # Params first, so that a run that crashes still shows what it was.
        tracking.log_params_once(tracking.training_params(train_config, num_items, run.summary()))
        mlflow.set_tags({"run_dir": str(run.path.resolve()), "resumed": str(continued),
                         "refit": str(refit).lower(), **trained_on})
        top = train_config.top_k
        logged_epochs: set[int] = set()

        def log_epoch(stats) -> None:  # live, as each epoch ends
            tracking.log_epoch(stats, top)
            logged_epochs.add(stats.epoch)

        result = train(run.graphs("train"), run.graphs("valid"), num_items, train_config,
                       output_dir=checkpoint_dir, resume=resume, on_epoch_end=log_epoch,
                       replicas=replicas)  # other ranks: srgnn.training.distributed._follow
        if not continued:  # a new MLflow run: add the epochs restored from a checkpoint
            for stats in result.history:
                if stats.epoch not in logged_epochs:
                    log_epoch(stats)

        final = result
        if refit:
            def log_refit_epoch(stats) -> None:
                mlflow.log_metric("refit_train_loss", stats.train_loss, step=stats.epoch)

            logger.info("refit on train + valid for %d epochs", result.best_epoch)
            final = refit_model(
                [run.graphs("train"), run.graphs("valid")], num_items, result.best_epoch,
                train_config, output_dir=checkpoint_dir / REFIT_DIR, resume=resume,
                on_epoch_end=log_refit_epoch, replicas=replicas,
            )
            mlflow.set_tags({"refit_epochs": str(result.best_epoch)})
        mlflow.set_tag("stop_reason", result.stop_reason)
        logger.info("the selection training stopped after epoch %d: %s", len(result.history),
                    result.stop_reason)
        recommender = Recommender.from_training(final.best_state_dict, final.model_config,
                                                run.vocabulary)
        selected = recommender if final is result else Recommender.from_training(
            result.best_state_dict, result.model_config, run.vocabulary)
        short_fallback, evidence = None, {}
        if ((train_config.short_fallback or train_config.short_augment)
                and run.count_examples("valid") > 0):
            short_fallback, evidence = choose_short_fallback(
                run, selected, training_splits=("train", "valid") if refit else ("train",), k=k,
                item_knn=train_config.short_fallback, augment=train_config.short_augment,
                max_examples=train_config.max_valid_examples)
            if short_fallback is not None:
                recommender = recommender.with_short_fallback(short_fallback)
            mlflow.log_dict(json_safe(evidence), "short_fallback.json")
        fallback_text = describe_fallback(short_fallback, k)
        mlflow.set_tag("short_fallback", fallback_text)
        logger.info("short sessions: %s", fallback_text)
        chosen = select_candidate(run, recommender, selected, mode=train_config.candidates, k=k,
                                  training_splits=("train", "valid") if refit else ("train",),
                                  max_examples=train_config.max_valid_examples)
        selection = log_selection(chosen, run, k)
        if chosen.kind != KIND_SRGNN and short_fallback is not None:  # SR-GNN's routes only
            short_fallback, fallback_text = None, f"none (the registered kind is {chosen.kind})"
            mlflow.set_tag("short_fallback", fallback_text)
        recommender = chosen.recommender.with_categories(run.item_categories())
        figures = {"plots/training_curve.png": plot_training_curve(result.history, top,
                                                                    result.best_epoch)}
        info, metrics = tracking.log_training_run(result, run, recommender, figures=figures,
                                                  model_name=model_name, k=k)
        version = int(info.registered_model_version)
        mlflow.set_tag("model_version", str(version))
        for key, value in trained_on.items():
            registry.client().set_model_version_tag(model_name, str(version), key, value)
        registry.client().set_model_version_tag(model_name, str(version), "kind", chosen.kind)
    logger.info("registered %s version %d in %.0f s", model_name, version, time.time() - started)

    out = json_safe({
        "run_id": run_id,
        "experiment_id": experiment_id,
        "model_name": model_name,
        "version": version,
        "model_uri": f"models:/{model_name}/{version}",
        "metrics": metrics,
        "best_epoch": result.best_epoch,
        "epochs": len(result.history),
        "stop_reason": result.stop_reason,
        "refit_epochs": result.best_epoch if refit else 0,
        **trained_on,
        "short_fallback": {**(short_fallback.summary() if short_fallback else {"lengths": []}),
                           "description": fallback_text, "validation_by_length": evidence},
        "run_dir": str(run.path),
        "reused": False,
        "kind": chosen.kind,
        "selection": selection,
        "search": _search_summary(run, train_config),
    })
    run.write_json("training.json", out)
    return out


SEARCH_FILE = "search.json"  # in the run folder and the MLflow run


def _search_summary(run: RunFolder, config: TrainConfig) -> dict | None:
    """The search's trials, seconds and choice, when the training searched."""
    kept = run.read_json(SEARCH_FILE) if parse_budget(config.search) > 0 else None
    if kept is None:
        return None
    return {"trials": len(kept["trials"]), "seconds": kept["seconds"], "chosen": kept["chosen"],
            "budget_seconds": kept["budget_seconds"]}


def _searched(run: RunFolder, config: TrainConfig, resume: bool) -> TrainConfig:
    """``config`` with the settings a search on validation chose (:mod:`srgnn.training.search`);
    a resumed training reuses the search its run folder kept."""
    from dataclasses import replace

    import mlflow

    from srgnn.training.search import SPACE, search, trial_table

    kept = run.read_json(SEARCH_FILE) if resume else None
    if kept is None:
        if run.count_examples("valid") == 0:
            raise SettingError(f"search chooses settings on validation, and {run.path} has no "
                               "validation examples: prepare it with --valid-days > 0.")
        found = search(run, config, parse_budget(config.search), max_trials=config.search_trials)
        kept = json_safe(found.as_dict())
        run.write_json(SEARCH_FILE, kept)
        mlflow.log_dict(kept, SEARCH_FILE)
        mlflow.log_metrics({"search_trials": len(found.trials), "search_seconds": found.seconds})
        logger.info("search on validation:\n%s", trial_table(found, config.top_k))
    return replace(config, **{name: value for name, value in kept["chosen"].items()
                              if name in SPACE})


def check_refit(run: RunFolder, refit: bool) -> bool:
    """Whether the training step refits on train + valid: ``refit`` asked for it, ``run`` has
    validation examples (the epoch count comes from them) and test examples. Without test
    examples the held-out figures and the gate use valid, so the refit waits for the gate
    (:mod:`srgnn.training.final`)."""
    if not refit:
        return False
    if run.count_examples("valid") == 0:
        logger.info("no validation examples in %s: nothing to refit on", run.path)
        return False
    if run.held_out_split() != "test":
        logger.info("no test examples in %s: the gate judges the selection model on valid, and "
                    "the refit on train + valid follows a promotion", run.path)
        return False
    return True


def trained_on_tags(run: RunFolder, splits) -> dict[str, str]:
    """``trained_on`` (``train+valid``, ...) and ``trained_days`` (the first and last day a
    training session of ``splits`` ended): which data a model saw, as MLflow tags."""
    return {"trained_on": "+".join(splits), "trained_days": run.day_range(splits)}


def _registered(run: RunFolder, model_name: str, experiment_id: str) -> dict | None:
    """The outcome of an earlier attempt whose MLflow run already registered a version."""
    from srgnn.serving import registry
    from srgnn.training.tracking import recorded_run_id

    run_id = recorded_run_id(run.checkpoint_dir)
    if run_id is None:
        return None
    versions = registry.versions_of_run(run_id, model_name)
    if not versions:
        return None
    version = int(versions[0].version)
    logger.info("the training of %s already registered %s version %d (MLflow run %s); "
                "reusing it", run.path, model_name, version, run_id)
    earlier = run.read_json("training.json")
    if earlier and earlier.get("run_id") == run_id and earlier.get("version") == version:
        return {**earlier, "reused": True}
    recorded = registry.client().get_run(run_id).data
    metrics, tags = recorded.metrics, {**recorded.tags, **versions[0].tags}
    best_epoch = int(metrics.get("best_epoch") or tags.get("refit_epochs") or 0)
    return json_safe({
        "run_id": run_id, "experiment_id": experiment_id, "model_name": model_name,
        "version": version, "model_uri": f"models:/{model_name}/{version}",
        "metrics": {n: v for n, v in metrics.items() if n.startswith(("best_", "valid_"))},
        "best_epoch": best_epoch, "epochs": None,
        "refit_epochs": int(tags["refit_epochs"]) if tags.get("refit_epochs") else None,
        "kind": tags.get("kind", "srgnn"), "trained_on": tags.get("trained_on"),
        "trained_days": tags.get("trained_days"), "stop_reason": tags.get("stop_reason"),
        "short_fallback": {"lengths": [], "description": "unknown (reused registration)",
                           "validation_by_length": {}},
        "run_dir": str(run.path), "reused": True,
    })
