"""The pipeline's steps: what each Airflow task and each command calls, one function a step.

    prepare -> train -> evaluate -> gate -> final_refit   (the training DAG; ``srgnn train``)
    score                                            (the scoring DAG; ``srgnn score``)

Every step takes plain JSON-able arguments and config objects, reads where things live (home
folder, MLflow, warehouse, Spark master) from :class:`srgnn.config.Settings`, and returns a
JSON-able dict: paths, URIs, versions and figures travel between tasks, never data. The
training steps also keep their result beside the run's data (``training.json``,
``evaluation.json``, ``evaluation.txt``, ``gate.json``).

* :func:`prepare_step`: raw clicks -> session graphs (Spark).
* :func:`train_step`: trains, logs and registers a new version (idempotent with ``resume``).
* :func:`evaluate_step`: scores the candidate, the current champion and the baselines once, on
  the same held-out examples; logs the figures to the candidate's MLflow run.
* :func:`gate_step`: moves the ``champion`` alias to the candidate only if the evaluation shows
  it better (:mod:`srgnn.evaluation.gate`).
* :func:`final_refit_step`: after a promotion, the champion becomes the same training on every
  day, held-out days included (:mod:`srgnn.training.final`).
* :func:`score_step`: one day's top-K recommendations into the warehouse.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from srgnn.config import K, PrepareConfig, ScoreConfig, Settings, Source, TrainConfig, json_safe

__all__ = ["prepare_step", "train_step", "evaluate_step", "gate_step", "final_refit_step",
           "score_step",
           "default_run_dir", "SRGNN_ROW", "CHAMPION_ROW"]

logger = logging.getLogger(__name__)

SRGNN_ROW = "srgnn"  # the candidate's row in evaluation results (its kind: srgnn, markov, ...)
CHAMPION_ROW = "champion"  # the current champion's row, when it is another version


def default_run_dir(settings: Settings) -> str:
    """``<home>/runs/<UTC timestamp>``."""
    return str(settings.runs_dir / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))


def prepare_step(source: Source, config: PrepareConfig | None = None, out_dir: str | None = None,
                 settings: Settings | None = None) -> dict:
    """Raw clicks -> session graphs with Spark. Returns ``{"run_dir", "summary"}``."""
    from srgnn.data.prepare import run_prepare
    from srgnn.data.inputs import check_input
    from srgnn.data.spark import get_spark

    settings = settings or Settings.from_env()
    config = config or PrepareConfig()
    out_dir = out_dir or default_run_dir(settings)
    check_input(source.clicks, source.format, source.encoding)  # a user mistake fails before Spark
    spark = get_spark(settings, app_name="srgnn-prepare")
    result = run_prepare(spark, source.clicks, out_dir, config, source.format, source.encoding)
    return {"run_dir": result.out_dir, "summary": result.summary}


def train_step(run_dir: str, config: TrainConfig | None = None, *, refit: bool | None = None,
               resume: bool = True, settings: Settings | None = None) -> dict:
    """Train SR-GNN on a prepared run, log it to MLflow and register it
    (:func:`srgnn.training.run.run_training`; ``refit=None``: ``config.refit``, on by
    default). With ``resume`` (the default) a retry continues the run folder's training, or
    returns the version an earlier attempt registered."""
    from srgnn.training.run import run_training

    settings = settings or Settings.from_env()
    return run_training(settings, run_dir, config or TrainConfig(progress=False),
                        resume=resume, refit=refit)


def _load(model_uri: str):
    from srgnn.serving.registry import load_recommender

    return load_recommender(model_uri)


def evaluate_step(run_dir: str, trained: dict | None = None, *, model_uri: str | None = None,
                  baselines=None, split: str | None = None, k: int = K,
                  settings: Settings | None = None) -> dict:
    """The candidate, the current champion and the baselines on the same held-out examples.

    Args:
        run_dir: the prepare run folder.
        trained: :func:`train_step`'s result (the candidate is its version, and the figures go
            to its MLflow run); or
        model_uri: a model to evaluate instead (default ``models:/srgnn@champion``); no
            champion row then, and nothing is logged to MLflow.
        baselines: names of :data:`srgnn.model.baselines.BASELINES` fitted on the run's
            training sessions (default :data:`srgnn.evaluation.evaluate.DEFAULT_BASELINES`).
        split: ``test`` / ``valid`` (default: test, or valid when test is empty).

    Returns:
        ``{"run_dir", "split", "examples", "candidate": {"version", "uri", "kind", "row"}, "champion":
        {"version", "uri"} or None, "results": {row: figures}, "table"}``; the rows are
        the candidate's kind (``srgnn``, ``markov``, ...; ``<kind> (candidate)`` when a
        baseline row has that name; ``candidate.row`` says which), ``champion`` (when another
        version holds the alias) and the baselines.
    """
    from srgnn.data.runfolder import RunFolder
    from srgnn.evaluation import heldout
    from srgnn.evaluation.evaluate import DEFAULT_BASELINES, evaluate_all, fit_baselines
    from srgnn.evaluation.report import format_table, plot_metric_by_length
    from srgnn.evaluation.selection import candidate_row
    from srgnn.serving import registry

    settings = settings or Settings.from_env()
    registry.connect(settings)
    run = RunFolder(run_dir)
    split = split or run.held_out_split()
    candidate_uri = trained["model_uri"] if trained else (model_uri or registry.CHAMPION_URI)
    candidate, info = _load(candidate_uri)
    names = DEFAULT_BASELINES if baselines is None else tuple(baselines)
    row = candidate_row(candidate.kind, (*names, CHAMPION_ROW))
    models = {row: candidate}
    champion = None
    if trained:
        holder = registry.champion_version(model_name=trained.get("model_name", registry.MODEL_NAME))
        if holder is not None and str(holder.version) != str(trained["version"]):
            try:
                models[CHAMPION_ROW], champion_info = _load(
                    f"models:/{holder.name}/{holder.version}")
                champion = {"version": str(holder.version), "uri": champion_info.resolved_uri}
            except Exception as exc:  # noqa: BLE001 - the gate keeps an unreadable champion
                logger.warning("the champion (version %s) cannot be loaded: %s", holder.version, exc)
                champion = {"version": str(holder.version), "uri": None, "error": str(exc)}
    fit_seconds = {}
    if names:
        fitted, fit_seconds = fit_baselines(run, names)
        models.update(fitted)
    held_out = heldout.from_run(run, split)
    started = time.perf_counter()
    results = evaluate_all(models, held_out, k)
    for name, seconds in fit_seconds.items():
        results[name]["fit_s"] = seconds
    logger.info("evaluated %d model(s) on %d %s examples in %.1f s", len(models), len(held_out),
                split, time.perf_counter() - started)
    label = info.resolved_uri if info.version is None else f"{info.name} version {info.version}"
    title = f"{label} on {run.path} ({split} split)"
    if champion and CHAMPION_ROW in results:
        title += f"; champion = version {champion['version']}"
    table = f"{title}\n{format_table(results)}"
    out = json_safe({
        "run_dir": str(run.path), "split": split, "examples": len(held_out),
        "candidate": {"version": info.version, "uri": info.resolved_uri, "kind": candidate.kind,
                      "row": row},
        "champion": champion, "results": results, "table": table,
    })
    if trained:
        from srgnn.training.tracking import log_evaluation

        figures = {"plots/hr_by_length.png": plot_metric_by_length(results, k, "HR", split)}
        log_evaluation(trained["run_id"], results, split=split, candidate=row,
                       table=table, figures=figures, k=k)
        run.write_json("evaluation.json", out)
        (run.path / "evaluation.txt").write_text(table + "\n")
    return out


def gate_step(trained: dict, evaluated: dict, *, k: int = K,
              settings: Settings | None = None) -> dict:
    """Move the ``champion`` alias to the trained version only if :func:`evaluate_step`'s
    figures show it better than the current holder (:func:`srgnn.evaluation.gate.promote_if_better`).

    When another version took the alias after the evaluation, that version is evaluated on the
    same held-out split first. Returns the gate's decision (``promoted``, ``decision``,
    ``reason``, ...) as a dict.
    """
    from srgnn.evaluation import heldout
    from srgnn.evaluation.evaluate import evaluate
    from srgnn.evaluation.gate import promote_if_better
    from srgnn.serving import registry

    settings = settings or Settings.from_env()
    registry.connect(settings)
    model_name = trained.get("model_name", registry.MODEL_NAME)
    results = evaluated["results"]
    champion_metrics = {}
    if evaluated.get("champion") and CHAMPION_ROW in results:
        champion_metrics[evaluated["champion"]["version"]] = results[CHAMPION_ROW]

    def evaluate_version(version: str) -> dict:
        recommender, _ = _load(f"models:/{model_name}/{version}")
        return evaluate(recommender, heldout.from_run(evaluated["run_dir"], evaluated["split"]), k)

    row = evaluated["candidate"].get("row", SRGNN_ROW)
    gate = promote_if_better(trained["version"], _metrics(results[row]),
                             split=evaluated["split"], champion_metrics=champion_metrics,
                             evaluate_version=evaluate_version, model_name=model_name, k=k)
    tracking = registry.client()
    for key, value in {"gate.decision": gate.decision, "gate.reason": gate.reason,
                       "promoted": str(gate.promoted)}.items():
        tracking.set_tag(trained["run_id"], key, value)
    out = json_safe({**gate.as_dict(), "run_id": trained["run_id"],
                     "model_uri": trained["model_uri"]})
    run_dir = Path(evaluated["run_dir"])
    if run_dir.is_dir():
        from srgnn.data.runfolder import RunFolder

        RunFolder(run_dir).write_json("gate.json", out)
    return out


def final_refit_step(trained: dict, gate: dict, config: TrainConfig | None = None, *,
                     k: int = K, settings: Settings | None = None) -> dict:
    """After :func:`gate_step` promoted ``trained``, refit it on every day, register that
    model and move the ``champion`` alias to it (:func:`srgnn.training.final.final_refit`;
    ``config`` is the training's, by default ``TrainConfig()``: ``refit`` and ``final_refit``
    on). Returns ``gate`` with a ``final_refit`` entry, and the new version's ``version``,
    ``model_uri`` and ``run_id`` when it ran."""
    from srgnn.training.final import final_refit

    return final_refit(settings or Settings.from_env(), trained, gate,
                       config or TrainConfig(progress=False), k=k)


def _metrics(result: dict) -> dict:
    """JSON-safe figures back to floats (NaN had become None on the way through XCom)."""
    return {key: (float("nan") if value is None else value) for key, value in result.items()}


def score_step(source: Source, ds: str, config: ScoreConfig | None = None,
               settings: Settings | None = None) -> dict:
    """Score the day ``ds`` into the warehouse (replaces that day atomically).

    The warehouse URL, the warehouse itself and the model are checked before Spark starts
    (:func:`srgnn.serving.score.score_day`); a failed run is logged in ``scoring_runs``, or in
    ``<home>/logs/scoring_runs_failed.jsonl`` when the warehouse cannot be opened.
    """
    from srgnn.serving.score import score_day

    config = config or ScoreConfig()
    return score_day(settings or Settings.from_env(), source.clicks, ds, model_uri=config.model_uri,
                     top_k=config.top_k, engine=config.engine, fmt=source.format,
                     encoding=source.encoding)
