"""One training, tracked end to end: train SR-GNN on a prepare run folder, log everything to
MLflow, register the model as a new version of ``srgnn``, and run the promotion gate.

:func:`run_training` is what ``srgnn train`` and the training DAG call. Inside one MLflow run:

* params: the :class:`~srgnn.train.TrainConfig` itself (``dataclasses.asdict``), the number
  of items, the prepare config (``prepare.*``) and counts (``data.*``) from ``summary.json``;
* metrics per epoch, logged as each epoch ends (``step`` = epoch): ``train_loss``,
  ``valid_hr_at_20``, ``valid_mrr_at_20``, ``examples_per_second``, ``learning_rate``,
  ``epoch_seconds``; after training ``best_epoch``, ``best_valid_hr_at_20`` and the held-out
  figures of SR-GNN (``test_hr_at_20``, ``test_mrr_at_20``, ...) and of every baseline
  (``baseline.<name>.test_hr_at_20``, ...);
* artifacts: ``plots/training_curve.png``, ``plots/hr_by_length.png``,
  ``data/vocab.parquet``, ``config.json``, ``evaluation.txt`` (the table ``srgnn evaluate``
  prints), ``evaluation.json``, and the pyfunc model ``model`` (see :mod:`srgnn.registry`);
* the model is registered, and :func:`srgnn.registry.promote_if_better` decides whether the
  ``champion`` alias moves to it (the decision is also a run tag).

With ``train_config.short_fallback`` (the default) the registered recommender may answer
sessions of 1, 2 or 3 known clicks with item-KNN instead (:func:`choose_short_fallback`):
each of those lengths whose validation examples (at least 100) show item-KNN ahead of the
selected SR-GNN model (HR@20, ties by MRR@20) goes to item-KNN, fitted on the final model's
training sessions. The figures by length are logged (``short_fallback.json``, tag
``short_fallback``) and saved with the model; scoring marks those rows ``fallback:iknn``.

With ``refit=True`` a second training follows the selection: from the same initial weights on
train + valid together, for the epoch count validation chose (:func:`srgnn.train.refit`); that
model is the one evaluated, logged and registered (metrics ``refit_train_loss`` per epoch, tag
``refit``). It needs a test split, since valid is then part of the training data.

Held-out figures use the run's ``test`` split, or ``valid`` when ``test`` is empty (e.g.
``--test-days 0``); the gate compares on the same examples.

Checkpoints go to ``<run_dir>/model/`` (``checkpoint.pt``, ``best_model.pt``). With
``resume=True`` training continues from the last finished epoch and, when the interrupted
MLflow run is known (``<run_dir>/model/mlflow_run.json``) and not finished, its metrics
continue in that run.

Example::

    from srgnn.config import Settings
    from srgnn.train import TrainConfig
    from srgnn.training_run import run_training, evaluate_run
    out = run_training(Settings.from_env(), "var/runs/20261128T000000Z", TrainConfig(epochs=10))
    print(out["version"], out["promoted"], out["metrics"])
    results, table = evaluate_run(Settings.from_env(), "var/runs/20261128T000000Z")
    print(table)
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from srgnn.config import Settings

__all__ = [
    "DEFAULT_BASELINES",
    "CHECKPOINT_DIR",
    "run_training",
    "evaluate_run",
    "evaluation_split",
    "plot_training_curve",
    "plot_metric_by_length",
]

logger = logging.getLogger(__name__)

DEFAULT_BASELINES = ("pop", "iknn", "sknn", "markov")
SHORT_LENGTHS = (1, 2, 3)  # session lengths (known clicks) that may go to the item-KNN fallback
SHORT_MIN_EXAMPLES = 100  # validation examples a length needs before it can be routed
CHECKPOINT_DIR = "model"  # under the run folder
REFIT_DIR = "refit"  # under the checkpoint folder
_RUN_RECORD = "mlflow_run.json"  # in the checkpoint folder: the MLflow run of that training
SRGNN = "srgnn"  # row name of the model in evaluation tables (registry.SRGNN_ROW)


def evaluation_split(run_dir) -> str:
    """``test``, or ``valid`` when the run folder's test split has no examples."""
    from srgnn.registry import gate_split

    return gate_split(run_dir)


def _read_summary(run_dir: Path) -> dict:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value))


# --------------------------------------------------------------------------------------------
# Plots (matplotlib's Agg canvas on a bare Figure: no pyplot, no global backend state)
# --------------------------------------------------------------------------------------------
def plot_training_curve(history, k: int = 20, best_epoch: int | None = None):
    """Figure: training loss, and validation HR@K / MRR@K, per epoch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [s.epoch for s in history]
    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, metric_axes = figure.subplots(1, 2)
    loss_axes.plot(epochs, [s.train_loss for s in history], marker="o")
    loss_axes.set(title="training loss (cross-entropy)", xlabel="epoch", ylabel="loss")
    metric_axes.plot(epochs, [100 * s.valid_hit_rate for s in history], marker="o", label=f"HR@{k}")
    metric_axes.plot(epochs, [100 * s.valid_mrr for s in history], marker="s", label=f"MRR@{k}")
    metric_axes.set(title="validation", xlabel="epoch", ylabel="percent")
    if best_epoch:
        for axes in (loss_axes, metric_axes):
            axes.axvline(best_epoch, color="grey", linestyle=":", label="selected epoch")
    metric_axes.legend()
    for axes in (loss_axes, metric_axes):
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
    return figure


def plot_metric_by_length(results: dict[str, dict], k: int = 20, metric: str = "HR",
                          split: str = "test"):
    """Figure: ``metric``@K per session-length bucket, one bar per model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from srgnn.metrics import length_bucket_labels

    labels = length_bucket_labels()
    first = next(iter(results.values()))
    counts = [first["by_length"][label]["examples"] for label in labels]
    figure = Figure(figsize=(10, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    width = 0.8 / max(len(results), 1)
    x = np.arange(len(labels))
    for n, (name, result) in enumerate(results.items()):
        values = [result["by_length"][label][f"{metric}@{k}"] for label in labels]
        values = [100 * v if _finite(v) else 0.0 for v in values]
        axes.bar(x + (n - (len(results) - 1) / 2) * width, values, width, label=name)
    axes.set_xticks(x, [f"{label}\n(n={c})" for label, c in zip(labels, counts)])
    axes.set(title=f"{metric}@{k} by session length ({split} split)",
             xlabel="prefix length (clicks seen)", ylabel=f"{metric}@{k} (%)")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")  # beside the bars
    axes.grid(axis="y", alpha=0.3)
    return figure


# --------------------------------------------------------------------------------------------
# Training run
# --------------------------------------------------------------------------------------------
def _open_run(checkpoint_dir: Path, resume: bool, run_name: str):
    """Start the MLflow run; with ``resume``, continue the interrupted run of this training."""
    import mlflow

    record = checkpoint_dir / _RUN_RECORD
    if resume and record.exists():
        run_id = json.loads(record.read_text()).get("run_id")
        try:
            previous = mlflow.MlflowClient().get_run(run_id)
        except mlflow.exceptions.MlflowException:
            previous = None
        if previous is not None and previous.info.status != "FINISHED":
            logger.info("continuing MLflow run %s", run_id)
            return mlflow.start_run(run_id=run_id), True
    return mlflow.start_run(run_name=run_name), False


def short_fallback_lengths(model_by_length: dict, baseline_by_length: dict, k: int = 20,
                           lengths=SHORT_LENGTHS, min_examples: int = SHORT_MIN_EXAMPLES) -> tuple[int, ...]:
    """The lengths whose validation bucket shows the baseline ahead of the model.

    Args:
        model_by_length, baseline_by_length: ``by_length`` dicts of
            :func:`srgnn.evaluate.evaluate_ranked` (``{"1": {"HR@K", "MRR@K", "examples"}}``).
        lengths: single-length buckets that may be routed.
        min_examples: fewer validation examples than this never route a length.

    Returns:
        The routed lengths: where the baseline has the higher HR@K, or the same HR@K and a
        higher MRR@K (:func:`srgnn.registry.is_better`).
    """
    from srgnn.registry import is_better

    chosen = []
    for length in lengths:
        model, baseline = model_by_length.get(str(length)), baseline_by_length.get(str(length))
        if not model or not baseline or model["examples"] < min_examples:
            continue
        if is_better(baseline, model, k):
            chosen.append(length)
    return tuple(chosen)


def _concat_sessions(parts):
    values = np.concatenate([p.values for p in parts])
    offsets = [np.asarray(parts[0].offsets, dtype=np.int64)]
    for part in parts[1:]:
        offsets.append(np.asarray(part.offsets[1:], dtype=np.int64) + offsets[-1][-1])
    return values, np.concatenate(offsets)


def choose_short_fallback(run_dir, selection_recommender, *, training_splits=("train",), k: int = 20,
                          lengths=SHORT_LENGTHS, min_examples: int = SHORT_MIN_EXAMPLES):
    """``(fallback or None, evidence)``: item-KNN for the short lengths where it beats the model
    on the run's validation split (module docstring).

    Args:
        run_dir: the prepare run folder (needs validation examples).
        selection_recommender: the model chosen on validation, trained without those days.
        training_splits: the ``sessions/<split>`` folders the final model trained on; the
            fallback's item-KNN is fitted on them.
    """
    from srgnn import registry
    from srgnn.baselines import ItemKNN
    from srgnn.evaluate import evaluate_baselines, load_sessions
    from srgnn.recommender import ShortSessionFallback

    model = registry.evaluate_recommender(selection_recommender, run_dir, "valid", k)["by_length"]
    knn = evaluate_baselines(run_dir, ["iknn"], k=k, split="valid")["iknn"]["by_length"]
    evidence = {str(n): {"srgnn": model[str(n)], "iknn": knn[str(n)]}
                for n in lengths if str(n) in model and str(n) in knn}
    chosen = short_fallback_lengths(model, knn, k, lengths, min_examples)
    if not chosen:
        return None, evidence
    values, offsets = _concat_sessions([load_sessions(run_dir, split) for split in training_splits])
    fitted = ItemKNN().fit_flat(values, offsets, num_items=selection_recommender.num_items)
    return ShortSessionFallback(fitted, chosen, evidence), evidence


def _describe_fallback(fallback, k: int) -> str:
    if fallback is None:
        return "none: SR-GNN answers every length"
    parts = []
    for n in fallback.lengths:
        figures = fallback.evidence[str(n)]
        parts.append(f"{n} click{'s' if n > 1 else ''} (validation HR@{k} item-KNN "
                     f"{100 * figures['iknn'][f'HR@{k}']:.2f} vs SR-GNN {100 * figures['srgnn'][f'HR@{k}']:.2f})")
    return "item-KNN for " + ", ".join(parts)


def run_training(
    settings: Settings,
    run_dir,
    train_config=None,
    *,
    model_name: str = "srgnn",
    resume: bool = False,
    baselines=DEFAULT_BASELINES,
    experiment_name: str = "srgnn",
    k: int = 20,
    refit: bool = False,
) -> dict:
    """Train, log, register and gate one SR-GNN model on a prepare run folder.

    Args:
        settings: where MLflow lives (:func:`srgnn.registry.configure`).
        run_dir: a folder written by ``srgnn prepare`` (docs/contracts.md).
        train_config: a :class:`~srgnn.train.TrainConfig` (default: the paper's settings).
        model_name: the registered model that gets the new version.
        resume: continue from ``<run_dir>/model/checkpoint.pt`` (and its MLflow run).
        baselines: names from :data:`srgnn.baselines.BASELINES` evaluated next to SR-GNN
            on the same split (empty: none).
        experiment_name: the MLflow experiment.
        k: list length of the held-out metrics and of the gate (the gate compares HR@k,
            then MRR@k).
        refit: after selecting the epoch count on valid, train again on train + valid for
            that many epochs and register that model (checkpoints in
            ``<run_dir>/model/refit``).

    Returns:
        A JSON-able dict: ``run_id``, ``experiment_id``, ``model_name``, ``version`` (int),
        ``model_uri`` (``models:/<name>/<version>``), ``metrics`` (held-out and validation
        figures), ``promoted``, ``decision``, ``reason``, ``champion_version``,
        ``previous_champion_version``, ``split``, ``baselines`` (``{name: {HR@k, MRR@k}}``),
        ``table`` (the evaluation table), ``best_epoch``, ``epochs``, ``refit_epochs``
        (0 without refit), ``run_dir``.

    Raises:
        ValueError: ``refit`` on a run folder without test examples (nothing would be held
            out for the figures and the gate).
    """
    import mlflow

    from srgnn import registry
    from srgnn.evaluate import evaluate_baselines, format_table
    from srgnn.recommender import Recommender
    from srgnn.train import TrainConfig, num_items_from_vocab, train
    from srgnn.train import refit as refit_model

    train_config = train_config or TrainConfig()
    run_dir = Path(run_dir)
    summary = _read_summary(run_dir)
    num_items = num_items_from_vocab(run_dir / "vocab.parquet")
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    split = evaluation_split(run_dir)
    if refit and split != "test":
        raise ValueError(
            f"refit trains on the validation days too, so the figures and the gate need test "
            f"examples, and {run_dir} has none: prepare it with --test-days > 0."
        )
    experiment_id = registry.configure(settings, experiment_name)
    tracking = registry.client()

    active, continued = _open_run(checkpoint_dir, resume, run_name=f"train-{run_dir.name}")
    with active as run:
        run_id = run.info.run_id
        (checkpoint_dir / _RUN_RECORD).write_text(json.dumps({"run_id": run_id}) + "\n")
        # Params first, so that a run that crashes still shows what it was.
        registry.log_params_once(registry.training_params(train_config, num_items, summary))
        mlflow.set_tags({"run_dir": str(run_dir.resolve()), "evaluation_split": split,
                         "resumed": str(continued)})

        top = train_config.top_k
        logged_epochs: set[int] = set()

        def log_epoch(stats) -> None:  # live, as each epoch ends
            registry.log_epoch(stats, top)
            logged_epochs.add(stats.epoch)

        result = train(run_dir / "graphs" / "train", run_dir / "graphs" / "valid", num_items,
                       train_config, output_dir=checkpoint_dir, resume=resume,
                       on_epoch_end=log_epoch)
        if not continued:  # a new MLflow run: add the epochs restored from a checkpoint
            for stats in result.history:
                if stats.epoch not in logged_epochs:
                    log_epoch(stats)

        final = result
        if refit:
            def log_refit_epoch(stats) -> None:
                mlflow.log_metric("refit_train_loss", stats.train_loss, step=stats.epoch)

            final = refit_model(
                [run_dir / "graphs" / "train", run_dir / "graphs" / "valid"], num_items,
                result.best_epoch, train_config, output_dir=checkpoint_dir / REFIT_DIR,
                resume=resume, on_epoch_end=log_refit_epoch,
            )
            mlflow.set_tags({"refit": "true", "refit_epochs": str(result.best_epoch)})
        recommender = Recommender.from_training(final.best_state_dict, final.model_config, run_dir)
        short_fallback, evidence = None, {}
        if train_config.short_fallback and registry._split_examples(run_dir, "valid") > 0:
            selected = recommender if final is result else Recommender.from_training(
                result.best_state_dict, result.model_config, run_dir)
            short_fallback, evidence = choose_short_fallback(
                run_dir, selected, training_splits=("train", "valid") if refit else ("train",), k=k)
            if short_fallback is not None:
                recommender = recommender.with_short_fallback(short_fallback)
            mlflow.log_dict(registry.json_safe(evidence), "short_fallback.json")
        fallback_text = _describe_fallback(short_fallback, k)
        mlflow.set_tag("short_fallback", fallback_text)
        results = {SRGNN: registry.evaluate_recommender(recommender, run_dir, split, k)}
        if baselines:
            results.update(evaluate_baselines(run_dir, list(baselines), k=k, split=split))
        table = format_table(results)
        figures = {
            "plots/training_curve.png": plot_training_curve(result.history, top, result.best_epoch),
            "plots/hr_by_length.png": plot_metric_by_length(results, k, "HR", split),
        }
        info, metrics = registry.log_training_run(
            result, run_dir, recommender, results, split=split, table=table, summary=summary,
            figures=figures, model_name=model_name, k=k, log_history=False,
        )
        version = int(info.registered_model_version)
        gate = registry.promote_if_better(
            version, run_dir, candidate=recommender, model_name=model_name, k=k, split=split,
            candidate_metrics=results[SRGNN], tracking=tracking,
        )
        mlflow.set_tags({"model_version": str(version), "gate.decision": gate.decision,
                         "gate.reason": gate.reason, "promoted": str(gate.promoted)})

    return registry.json_safe({
        "run_id": run_id,
        "experiment_id": experiment_id,
        "model_name": model_name,
        "version": version,
        "model_uri": f"models:/{model_name}/{version}",
        "metrics": metrics,
        "promoted": gate.promoted,
        "decision": gate.decision,
        "reason": gate.reason,
        "champion_version": gate.champion_version,
        "previous_champion_version": gate.previous_champion_version,
        "split": split,
        "baselines": {name: {f"HR@{k}": r[f"HR@{k}"], f"MRR@{k}": r[f"MRR@{k}"]}
                      for name, r in results.items() if name != SRGNN},
        "table": table,
        "best_epoch": result.best_epoch,
        "epochs": len(result.history),
        "refit_epochs": result.best_epoch if refit else 0,
        "short_fallback": {"lengths": list(short_fallback.lengths) if short_fallback else [],
                           "description": fallback_text, "validation_by_length": evidence},
        "run_dir": str(run_dir),
    })


def evaluate_run(
    settings: Settings,
    run_dir,
    model_uri: str | None = None,
    baselines=DEFAULT_BASELINES,
    *,
    split: str | None = None,
    k: int = 20,
) -> tuple[dict, str]:
    """SR-GNN and the baselines on the held-out split of a run folder (what ``srgnn
    evaluate`` prints).

    Args:
        settings: where MLflow lives.
        run_dir: a prepare run folder.
        model_uri: the model to evaluate: ``None`` for ``models:/srgnn@champion``, any
            model URI, or a local folder (see :func:`srgnn.registry.load_recommender`).
        baselines: baseline names fitted on the run's train sessions (empty: none).
        split: ``test`` / ``valid``; default test, or valid when test is empty.
        k: cut-off.

    Returns:
        ``(results, table)``: ``{model: evaluate_ranked-style dict}`` with SR-GNN first
        (under ``"srgnn"``, its version in ``results["srgnn"]["model"]``), and the text of
        :func:`srgnn.evaluate.format_table` (overall, then by session length).
    """
    from srgnn import registry
    from srgnn.evaluate import evaluate_baselines, format_table

    split = split or evaluation_split(run_dir)
    registry.connect(settings)
    recommender, info = registry.load_recommender(model_uri or "models:/srgnn@champion")
    result = registry.evaluate_recommender(recommender, run_dir, split, k)
    results = {SRGNN: result}
    if baselines:
        results.update(evaluate_baselines(run_dir, list(baselines), k=k, split=split))
    label = info.resolved_uri if info.version is None else f"{info.name} version {info.version}"
    table = f"{label} on {Path(run_dir)} ({split} split)\n{format_table(results)}"
    result["model"] = {"uri": info.uri, "resolved_uri": info.resolved_uri,
                       "name": info.name, "version": info.version}
    return results, table
