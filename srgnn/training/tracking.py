"""MLflow tracking of a training: params, per-epoch metrics, artifacts, the registered model.

Inside one MLflow run (:func:`open_run`):

* params: the :class:`~srgnn.config.TrainConfig` itself (``dataclasses.asdict``), the number
  of items, the resolved precision, the prepare config (``prepare.*``) and counts (``data.*``)
  from ``summary.json`` (:func:`training_params`);
* metrics per epoch, logged as each epoch ends (``step`` = epoch): ``train_loss``,
  ``valid_hr_at_20``, ``valid_mrr_at_20``, ``examples_per_second``, ``learning_rate``,
  ``epoch_seconds`` (:func:`log_epoch`); after training ``best_epoch`` and
  ``best_valid_*`` (:func:`log_training_run`);
* artifacts: ``plots/training_curve.png``, ``data/vocab.parquet``, ``config.json`` and the
  pyfunc model ``model`` (:mod:`srgnn.serving.pyfunc`), registered as a new version.

The held-out figures (``test_hr_at_20``, ``baseline.<name>.test_hr_at_20``, the table and the
by-length plot) are added to the same run by the evaluation step (:func:`log_evaluation`).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow

from srgnn.config import K, json_safe
from srgnn.cpu import resolve_precision
from srgnn.serving import registry
from srgnn.serving.pyfunc import log_recommender

__all__ = ["RUN_RECORD", "open_run", "recorded_run_id", "training_params", "log_params_once",
           "log_epoch", "log_training_run", "log_model", "log_evaluation", "metric_name"]

logger = logging.getLogger(__name__)

RUN_RECORD = "mlflow_run.json"  # in the checkpoint folder: the MLflow run of that training


def recorded_run_id(checkpoint_dir: Path) -> str | None:
    """The MLflow run recorded for the training in ``checkpoint_dir``, if any."""
    record = Path(checkpoint_dir) / RUN_RECORD
    if not record.exists():
        return None
    return json.loads(record.read_text()).get("run_id")


def open_run(checkpoint_dir: Path, resume: bool, run_name: str):
    """Start the training's MLflow run and record it in ``checkpoint_dir``; with ``resume``,
    continue the recorded run when it did not finish. Returns ``(active run, continued)``."""
    run_id = recorded_run_id(checkpoint_dir) if resume else None
    if run_id:
        try:
            previous = registry.client().get_run(run_id)
        except mlflow.exceptions.MlflowException:
            previous = None
        if previous is not None and previous.info.status != "FINISHED":
            logger.info("continuing MLflow run %s", run_id)
            return mlflow.start_run(run_id=run_id), True
    active = mlflow.start_run(run_name=run_name)
    Path(checkpoint_dir, RUN_RECORD).write_text(json.dumps({"run_id": active.info.run_id}) + "\n")
    return active, False


def training_params(train_config, num_items: int, summary: dict | None = None) -> dict[str, str]:
    """MLflow params of a training: the TrainConfig itself (``dataclasses.asdict``; ``None``
    for a fitted baseline), ``num_items``, and from the prepare ``summary.json`` its config
    (``prepare.*``) and counts (``data.*``)."""
    from dataclasses import asdict

    summary = summary or {}
    params: dict[str, Any] = {"num_items": num_items}
    if train_config is not None:  # None: a fitted baseline, nothing trained
        params.update(asdict(train_config))
        params["training_precision"] = resolve_precision(train_config.precision)  # "auto" resolved
    params.update({f"prepare.{k}": v for k, v in (summary.get("config") or {}).items()})
    for key in ("input", "format", "last_day", "vocab_size", "clicks_read", "clicks_kept",
                "sessions_read", "examples", "examples_lost_to_unseen_items"):
        if key in summary:
            params[f"data.{key}"] = summary[key]
    for split, counts in (summary.get("splits") or {}).items():
        for key in ("sessions", "clicks", "examples"):
            if key in counts:
                params[f"data.{split}_{key}"] = counts[key]
    return {name: str(value)[:6000] for name, value in params.items()}


def log_params_once(params: dict[str, str]) -> dict[str, str]:
    """Log the params the active run does not hold yet; returns those it holds with another
    value (a resumed run with, say, more epochs), which are recorded as ``resume.*`` tags
    because MLflow params cannot change."""
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_params_once needs an active MLflow run.")
    logged = registry.client().get_run(run.info.run_id).data.params
    changed = {n: v for n, v in params.items() if n in logged and logged[n] != v}
    mlflow.log_params({n: v for n, v in params.items() if n not in logged})
    if changed:
        mlflow.set_tags({f"resume.{n}": v for n, v in changed.items()})
    return changed


def log_epoch(stats, k: int = K) -> None:
    """One epoch's metrics (:meth:`srgnn.training.checkpoints.EpochStats.metrics` and ``epoch_seconds``),
    at ``step`` = epoch."""
    mlflow.log_metrics({**stats.metrics(k), "epoch_seconds": stats.seconds}, step=stats.epoch)



def metric_name(key: str) -> str:
    """``HR@20`` -> ``hr_at_20`` (MLflow metric names cannot hold '@')."""
    return key.lower().replace("@", "_at_")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value))


def log_training_run(result, run, recommender, *, figures: dict | None = None,
                     model_name: str | None = registry.MODEL_NAME, k: int = K):
    """Log a finished training to the active MLflow run and register its model.

    Args:
        result: the :class:`srgnn.training.loop.TrainResult`.
        run: the :class:`~srgnn.data.runfolder.RunFolder` it was trained on.
        recommender: the :class:`~srgnn.serving.recommender.Recommender` to register.
        figures: ``{artifact path: matplotlib Figure}``.
        model_name: registered model of the new version (``None``: log without registering).
        k: the ``k`` of the model signature.

    Returns:
        ``(model_info, metrics)``: MLflow's ``ModelInfo`` and the run-level metrics logged
        (``best_epoch``, ``best_valid_*``; NaN values are not logged).
    """
    top = result.config.top_k
    metrics = {
        "best_epoch": result.best_epoch,
        f"best_valid_hr_at_{top}": result.best_valid_hit_rate,
        f"best_valid_mrr_at_{top}": result.best_valid_mrr,
    }
    mlflow.log_metrics({n: float(v) for n, v in metrics.items() if _finite(v)})
    for path, figure in (figures or {}).items():
        mlflow.log_figure(figure, path)
    info = log_model(run, recommender, {
        "train_config": asdict(result.config),
        "model_config": asdict(result.model_config),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "stop_reason": result.stop_reason,
        "history": [asdict(stats) for stats in result.history],
    }, model_name=model_name, k=k)
    return info, metrics


def log_model(run, recommender, details: dict, *,
              model_name: str | None = registry.MODEL_NAME, k: int = K):
    """Log any recommender (SR-GNN, a baseline, a blend) to the active MLflow run and register
    it: ``config.json`` (``details``, with ``run_dir`` and ``prepare_summary``),
    ``data/vocab.parquet`` and the pyfunc model ``model``. Returns MLflow's ``ModelInfo``.

    :func:`log_training_run` calls it with the training's settings and history; a fitted
    baseline, which has no training, gives what it was fitted with.
    """
    mlflow.log_dict(json_safe({**details, "run_dir": str(run.path.resolve()),
                               "prepare_summary": run.summary()}), "config.json")
    with tempfile.TemporaryDirectory(prefix="srgnn-vocab-") as tmp:
        run.vocabulary.write(Path(tmp) / "vocab.parquet")
        mlflow.log_artifact(str(Path(tmp) / "vocab.parquet"), "data")
    return log_recommender(recommender, _example_sessions(run), name="model",
                           registered_model_name=model_name, k=k)


def _example_sessions(run, count: int = 5) -> list[list[str]]:
    """A few real prefixes in raw ids (the logged model's input example)."""
    for split in (run.held_out_split(), "train"):
        sessions = run.raw_examples(split)[0]
        if len(sessions):
            return sessions.slice(0, count).to_pylist()
    raise ValueError(f"{run.path} holds no examples to build the model's input example from.")


def log_evaluation(run_id: str, results: dict[str, dict], *, split: str, candidate: str,
                   table: str | None = None, figures: dict | None = None, k: int = K) -> dict:
    """Add held-out figures to the (finished) MLflow run ``run_id``.

    ``results[candidate]`` gives ``<split>_hr_at_<k>``, ``<split>_mrr_at_<k>``, ...; the row
    ``champion`` gives ``champion.<split>_hr_at_<k>`` and every other row (a baseline)
    ``baseline.<name>.<split>_hr_at_<k>``, with MRR likewise; ``table`` becomes
    ``evaluation.txt``, ``results`` ``evaluation.json``. Returns the metrics logged.
    """
    tracking = registry.client()
    ours = results[candidate]
    metrics: dict[str, Any] = {}
    for key in (f"HR@{k}", f"MRR@{k}", f"NDCG@{k}", f"coverage@{k}", f"popularity_bias@{k}",
                f"avg_popularity@{k}", f"long_tail@{k}", f"long_tail_HR@{k}"):
        metrics[f"{split}_{metric_name(key)}"] = ours.get(key)
    metrics[f"{split}_examples"] = ours["examples"]
    for name, row in results.items():
        if name != candidate:
            prefix = name if name == "champion" else f"baseline.{name}"
            for key in (f"HR@{k}", f"MRR@{k}"):
                metrics[f"{prefix}.{split}_{metric_name(key)}"] = row[key]
    for name, value in metrics.items():
        if _finite(value):
            tracking.log_metric(run_id, name, float(value))
    for path, figure in (figures or {}).items():
        tracking.log_figure(run_id, figure, path)
    if table is not None:
        tracking.log_text(run_id, table + "\n", "evaluation.txt")
    tracking.log_dict(run_id, json_safe(results), "evaluation.json")
    return metrics
