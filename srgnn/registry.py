"""MLflow tracking and model registry: log a :class:`~srgnn.recommender.Recommender`, register
it as a version of ``srgnn``, and move the ``champion`` alias only through an evaluation gate.

Where things live (:func:`configure`):

* embedded default: tracking and registry in the SQLite file ``$SRGNN_HOME/mlflow.db``,
  artifacts under ``$SRGNN_HOME/mlartifacts/`` (the experiment is created with that artifact
  location the first time it is used);
* ``MLFLOW_TRACKING_URI=http://mlflow:5000`` (read by :class:`srgnn.config.Settings`): a
  tracking server, which also decides where artifacts go. (A database URI without a server,
  e.g. another SQLite file, keeps the artifacts under the project home.)

:func:`log_training_run` logs a finished training to the active run (params = the
``TrainConfig`` itself plus the prepare config and counts, metrics, plots, the evaluation
table, the vocabulary, the config JSON) and registers its model;
:mod:`srgnn.training_run` drives it, logging the per-epoch metrics live.

The logged model is a pyfunc :class:`SessionRecommenderModel` whose only artifact is the
folder written by :meth:`Recommender.save` (``model.pt``, ``vocab.parquet``,
``recommender.json``). Served or loaded with ``mlflow.pyfunc.load_model``, it takes a
DataFrame with a column ``items`` (each row a list of raw item ids, strings, in click order)
and the parameter ``k`` (default 20), and returns the columns ``item_ids`` (list of raw ids,
best first), ``scores`` (list of floats) and ``source`` (``"model"`` or ``"fallback:pop"``).
The signature is inferred from a real batch and its real output.

The model is logged "from code" (a three-line script that builds
:class:`SessionRecommenderModel`, instead of a cloudpickled object) and without
``code_paths``: it is loaded by the pipeline itself (scoring, evaluation, the gate), which
runs where the ``srgnn`` package is installed, and the model's pip requirements name the
package and its version. A copy of the package inside the model would be put first on
``sys.path`` by MLflow and could shadow the installed version for the rest of the process.

Batch consumers skip the pyfunc layer: :func:`load_recommender` downloads the artifact of
``models:/srgnn@champion`` (or any model URI, or a local folder) and returns the
:class:`Recommender` with the resolved version.

The gate (:func:`promote_if_better`) evaluates the candidate and the current champion on the
same held-out examples of the candidate's run folder (its ``test`` split, or ``valid`` when
``test`` is empty). Each model has its own vocabulary, so both are evaluated through raw item
ids (:func:`evaluate_recommender`). The alias moves only when the candidate has the higher
HR@20, or the same HR@20 and a higher MRR@20. The figures, the decision and its reason are
tags of the new model version. There are no registry stages (deprecated in MLflow).

Importing this module imports MLflow (about 6 s) and nothing else happens: no tracking URI is
set and no folder is created until :func:`configure` (or :func:`connect`) is called.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd

from srgnn.config import Settings

__all__ = [
    "MODEL_NAME",
    "CHAMPION_ALIAS",
    "EXPERIMENT_NAME",
    "ARTIFACT_KEY",
    "DECISION_FIRST",
    "DECISION_PROMOTED",
    "DECISION_KEPT",
    "DECISION_MANUAL",
    "SessionRecommenderModel",
    "ModelVersionInfo",
    "GateResult",
    "connect",
    "configure",
    "client",
    "model_requirements",
    "input_frame",
    "predict_frame",
    "infer_model_signature",
    "log_recommender",
    "SRGNN_ROW",
    "training_params",
    "log_params_once",
    "log_epoch",
    "log_training_run",
    "json_safe",
    "load_recommender",
    "champion_version",
    "promote",
    "promote_if_better",
    "is_better",
    "gate_split",
    "evaluate_recommender",
    "raw_examples",
]

logger = logging.getLogger(__name__)

MODEL_NAME = "srgnn"  # registered model
CHAMPION_ALIAS = "champion"
EXPERIMENT_NAME = "srgnn"
ARTIFACT_KEY = "recommender"  # pyfunc artifact name of the Recommender folder

DECISION_FIRST = "first model"
DECISION_PROMOTED = "promoted"
DECISION_KEPT = "kept champion"
DECISION_MANUAL = "promoted by hand"

_SERVER_SCHEMES = ("http", "https", "databricks")


# --------------------------------------------------------------------------------------------
# Connection
# --------------------------------------------------------------------------------------------
def connect(settings: Settings) -> str:
    """Point MLflow's tracking and registry at ``settings.tracking_uri``; returns the URI.

    For the embedded SQLite store the home folder is created (the database file itself is
    created by MLflow on first use). Artifact download progress bars are switched off unless
    ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` is set: they fill task logs with carriage returns.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def _uses_server(uri: str) -> bool:
    return urlparse(uri).scheme in _SERVER_SCHEMES


def configure(settings: Settings, experiment_name: str = EXPERIMENT_NAME) -> str:
    """:func:`connect`, then make ``experiment_name`` the active experiment; returns its id.

    The experiment is created on first use. Without a tracking server (a database URI such as
    the default SQLite file) its artifact location is ``settings.artifact_root``, so that
    every artifact stays under the project home; a server decides that location itself.
    """
    uri = connect(settings)
    tracking = client()
    experiment = tracking.get_experiment_by_name(experiment_name)
    if experiment is None:
        location = None if _uses_server(uri) else settings.artifact_root
        try:
            experiment_id = tracking.create_experiment(experiment_name, artifact_location=location)
        except mlflow.exceptions.MlflowException:  # created meanwhile by another process
            experiment = tracking.get_experiment_by_name(experiment_name)
            if experiment is None:
                raise
            experiment_id = experiment.experiment_id
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def client() -> "mlflow.MlflowClient":
    """An ``MlflowClient`` on the current tracking and registry URIs."""
    return mlflow.MlflowClient()


# --------------------------------------------------------------------------------------------
# The pyfunc model
# --------------------------------------------------------------------------------------------
def input_frame(sessions) -> pd.DataFrame:
    """The pyfunc input for ``sessions`` (lists of raw item ids): one column ``items``."""
    return pd.DataFrame({"items": [[str(item) for item in session] for session in sessions]})


def predict_frame(recommender, model_input, k: int = 20) -> pd.DataFrame:
    """What :meth:`SessionRecommenderModel.predict` returns, computed with ``recommender``."""
    if isinstance(model_input, pd.DataFrame):
        if "items" not in model_input.columns:
            raise ValueError(
                "the input needs a column 'items' holding each session's raw item ids in "
                f"click order; got columns {list(model_input.columns)}."
            )
        sessions = model_input["items"].tolist()
    else:
        sessions = list(model_input)
    # Rows arrive as lists or, after MLflow's schema enforcement, as numpy arrays.
    sessions = [[] if s is None else [str(item) for item in s] for s in sessions]
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}.")
    recs = recommender.recommend(sessions, k=k)
    return pd.DataFrame(
        {
            "item_ids": [list(map(str, row)) for row in recs.item_ids.tolist()],
            "scores": [[float(x) for x in row] for row in recs.scores.tolist()],
            "source": [str(s) for s in recs.source.tolist()],
        }
    )


class SessionRecommenderModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc wrapper of a saved :class:`~srgnn.recommender.Recommender`.

    Input: a DataFrame with a column ``items`` (list of raw item ids per session, click order).
    Params: ``k`` (recommendations per session, default 20).
    Output: a DataFrame with ``item_ids`` (list of raw ids, best first), ``scores`` (list of
    floats) and ``source`` (``"model"``, or ``"fallback:pop"`` for a session without any
    item known to the model).
    """

    def load_context(self, context) -> None:
        from srgnn.recommender import Recommender

        self.recommender = Recommender.load(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        k = (params or {}).get("k", 20)
        return predict_frame(self.recommender, model_input, k=k)


_MODEL_CODE = """\
# The pyfunc model of srgnn-pipeline: a saved Recommender (artifact 'recommender').
from mlflow.models import set_model

from srgnn.registry import SessionRecommenderModel

set_model(SessionRecommenderModel())
"""


def model_requirements() -> list[str]:
    """pip requirements of the logged model: this package and what it imports to predict.

    Given explicitly so that MLflow does not load the model in a subprocess to guess them.
    """
    from importlib import metadata

    out = []
    for dist in ("srgnn-pipeline", "mlflow", "torch", "numpy", "pandas", "pyarrow"):
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:  # e.g. srgnn run from a source tree
            out.append(dist)
            continue
        out.append(f"{dist}=={version.split('+')[0]}")  # drop local labels such as +cpu
    return out


def infer_model_signature(recommender, example_sessions, k: int = 20):
    """Signature inferred from a real input batch and the model's real output on it."""
    from mlflow.models import infer_signature

    example = input_frame(example_sessions)
    output = predict_frame(recommender, example, k=k)
    return infer_signature(example, output, params={"k": int(k)}), example


def log_recommender(
    recommender,
    example_sessions,
    *,
    name: str = "model",
    registered_model_name: str | None = MODEL_NAME,
    k: int = 20,
    tags: dict[str, Any] | None = None,
):
    """Log ``recommender`` as a pyfunc model in the active run and register a new version.

    Args:
        recommender: the :class:`~srgnn.recommender.Recommender` to log.
        example_sessions: a few real sessions (lists of raw item ids); they become the input
            example, and the signature is inferred from them and the model's output.
        name: the logged model's name inside the run.
        registered_model_name: registers a new version of this model (``None``: log only).
        k: default of the ``k`` parameter in the signature.
        tags: tags of the logged model.

    Returns:
        MLflow's ``ModelInfo`` (``registered_model_version``, ``model_uri``, ``model_id``...).
    """
    example_sessions = [list(s) for s in example_sessions]
    if not example_sessions:
        raise ValueError("log_recommender needs at least one example session for the signature.")
    signature, example = infer_model_signature(recommender, example_sessions, k=k)
    with tempfile.TemporaryDirectory(prefix="srgnn-model-") as tmp:
        folder = Path(tmp) / ARTIFACT_KEY
        recommender.save(folder)
        # "Models from code": MLflow stores this file instead of a pickled object and runs it
        # when loading, so the model class always comes from the installed package.
        code = Path(tmp) / "srgnn_model.py"
        code.write_text(_MODEL_CODE)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(code),
            artifacts={ARTIFACT_KEY: str(folder)},
            registered_model_name=registered_model_name,
            signature=signature,
            input_example=example,
            pip_requirements=model_requirements(),
            tags=tags,
        )


# --------------------------------------------------------------------------------------------
# Training runs
# --------------------------------------------------------------------------------------------
SRGNN_ROW = "srgnn"  # the model's row in evaluation results (the others are baselines)


def training_params(train_config, num_items: int, summary: dict | None = None) -> dict[str, str]:
    """MLflow params of a training: the TrainConfig itself (``dataclasses.asdict``),
    ``num_items``, and from the prepare ``summary.json`` its config (``prepare.*``) and counts
    (``data.*``)."""
    from dataclasses import asdict

    summary = summary or {}
    params: dict[str, Any] = {**asdict(train_config), "num_items": num_items}
    if hasattr(train_config, "training_precision"):
        params["training_precision"] = train_config.training_precision()  # "auto" resolved
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
    logged = client().get_run(run.info.run_id).data.params
    changed = {n: v for n, v in params.items() if n in logged and logged[n] != v}
    mlflow.log_params({n: v for n, v in params.items() if n not in logged})
    if changed:
        mlflow.set_tags({f"resume.{n}": v for n, v in changed.items()})
    return changed


def log_epoch(stats, k: int = 20) -> None:
    """One epoch's metrics (:meth:`srgnn.train.EpochStats.metrics` and ``epoch_seconds``),
    at ``step`` = epoch."""
    mlflow.log_metrics({**stats.metrics(k), "epoch_seconds": stats.seconds}, step=stats.epoch)


def _metric_name(key: str) -> str:
    """``HR@20`` -> ``hr_at_20`` (MLflow metric names cannot hold '@')."""
    return key.lower().replace("@", "_at_")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value))


def json_safe(value):
    """NaN -> None and numpy scalars -> Python, recursively (for JSON artifacts and XCom)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def log_training_run(
    result,
    run_dir,
    recommender,
    evaluation: dict[str, dict],
    *,
    split: str,
    table: str | None = None,
    summary: dict | None = None,
    figures: dict | None = None,
    model_name: str | None = MODEL_NAME,
    k: int = 20,
    log_history: bool = True,
):
    """Log a finished training to the active MLflow run (one is started if none is active)
    and register its model.

    Args:
        result: the :class:`srgnn.train.TrainResult`.
        run_dir: the prepare run folder it was trained on.
        recommender: the :class:`Recommender` of its best epoch.
        evaluation: ``{"srgnn": evaluate_recommender(...), baseline: evaluate_ranked(...)}``
            on ``split``.
        split: the held-out split of ``evaluation`` (metric names start with it).
        table: the printable evaluation table (artifact ``evaluation.txt``).
        summary: the run folder's ``summary.json`` (params ``prepare.*`` / ``data.*``).
        figures: ``{artifact path: matplotlib Figure}``.
        model_name: registered model of the new version (``None``: log without registering).
        k: cut-off of the held-out metrics.
        log_history: log every epoch of ``result.history`` (off when they were logged live).

    Returns:
        ``(model_info, metrics)``: MLflow's ``ModelInfo`` and the run-level metrics logged
        (``best_epoch``, ``best_valid_*``, ``<split>_hr_at_<k>``, ...,
        ``baseline.<name>.<split>_hr_at_<k>``; NaN values are not logged).
    """
    from dataclasses import asdict

    if mlflow.active_run() is None:
        with mlflow.start_run(run_name=f"train-{Path(run_dir).name}"):
            return log_training_run(result, run_dir, recommender, evaluation, split=split,
                                    table=table, summary=summary, figures=figures,
                                    model_name=model_name, k=k, log_history=log_history)
    run_dir = Path(run_dir)
    top = result.config.top_k
    log_params_once(training_params(result.config, result.model_config.num_items, summary))
    if log_history:
        for stats in result.history:
            log_epoch(stats, top)

    ours = evaluation[SRGNN_ROW]
    metrics = {
        "best_epoch": result.best_epoch,
        f"best_valid_hr_at_{top}": result.best_valid_hit_rate,
        f"best_valid_mrr_at_{top}": result.best_valid_mrr,
    }
    for key in (f"HR@{k}", f"MRR@{k}", f"NDCG@{k}", f"coverage@{k}", f"popularity_bias@{k}"):
        metrics[f"{split}_{_metric_name(key)}"] = ours[key]
    metrics[f"{split}_examples"] = ours["examples"]
    for name, row in evaluation.items():
        if name != SRGNN_ROW:
            for key in (f"HR@{k}", f"MRR@{k}"):
                metrics[f"baseline.{name}.{split}_{_metric_name(key)}"] = row[key]
    mlflow.log_metrics({n: float(v) for n, v in metrics.items() if _finite(v)})

    for path, figure in (figures or {}).items():
        mlflow.log_figure(figure, path)
    if table is not None:
        mlflow.log_text(table + "\n", "evaluation.txt")
    mlflow.log_dict(json_safe(evaluation), "evaluation.json")
    mlflow.log_dict(json_safe({
        "train_config": asdict(result.config),
        "model_config": asdict(result.model_config),
        "run_dir": str(run_dir.resolve()),
        "evaluation_split": split,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "history": [asdict(stats) for stats in result.history],
        "prepare_summary": summary or {},
    }), "config.json")
    with tempfile.TemporaryDirectory(prefix="srgnn-vocab-") as tmp:
        recommender.save(tmp)
        mlflow.log_artifact(str(Path(tmp) / "vocab.parquet"), "data")

    info = log_recommender(recommender, _example_sessions(run_dir, split), name="model",
                           registered_model_name=model_name, k=k)
    return info, metrics


def _example_sessions(run_dir: Path, split: str, count: int = 5) -> list[list[str]]:
    """A few real prefixes in raw ids (the logged model's input example)."""
    for name in (split, "train"):
        sessions = raw_examples(run_dir, name)[0]
        if len(sessions):
            return sessions.slice(0, count).to_pylist()
    raise ValueError(f"{run_dir} holds no examples to build the model's input example from.")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelVersionInfo:
    """Which model :func:`load_recommender` loaded.

    ``name`` and ``version`` are set for registry URIs (``models:/NAME@ALIAS``,
    ``models:/NAME/VERSION``) and ``None`` for a local folder or a run's model.
    """

    uri: str  # the URI or path as given
    resolved_uri: str  # models:/NAME/VERSION for registry URIs (an alias resolved once)
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    aliases: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)


def _parse_registry_uri(uri: str) -> tuple[str, str, str] | None:
    """``(name, "alias"|"version", value)`` of a ``models:/`` URI naming a registered model."""
    if not uri.startswith("models:/"):
        return None
    rest = uri[len("models:/"):].strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, "alias", alias
    parts = rest.split("/")
    if len(parts) == 2 and parts[1].isdigit():
        return parts[0], "version", parts[1]
    return None  # models:/m-<id> (a logged model) or models:/NAME/latest-like forms


def _recommender_folder(model_dir: Path) -> Path:
    """The Recommender folder inside a downloaded pyfunc model (or the folder itself)."""
    if (model_dir / "recommender.json").exists():
        return model_dir
    if (model_dir / "MLmodel").exists():
        from mlflow.models import Model

        flavor = Model.load(str(model_dir / "MLmodel")).flavors.get("python_function", {})
        artifacts = flavor.get("artifacts") or {}
        if ARTIFACT_KEY in artifacts:
            return model_dir / artifacts[ARTIFACT_KEY]["path"]
    raise ValueError(
        f"{model_dir} holds neither a saved recommender (recommender.json) nor an MLflow model "
        f"with a '{ARTIFACT_KEY}' artifact."
    )


def load_recommender(model_uri: str = f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}", *,
                     settings: Settings | None = None, **scorer_options):
    """The :class:`Recommender` of a registered model, without the pyfunc layer.

    Args:
        model_uri: ``models:/srgnn@champion`` (default), ``models:/srgnn/<version>``, any
            other MLflow model URI (``runs:/...``, ``models:/m-<id>``), or a local folder
            (a saved recommender, or a downloaded MLflow model).
        settings: when given, :func:`connect` to its tracking URI first.
        **scorer_options: passed to :class:`srgnn.predict.Scorer` (``batch_size``, ``device``).

    Returns:
        ``(recommender, ModelVersionInfo)``. An alias is resolved to a version once, and that
        version is what is downloaded: a promotion happening meanwhile cannot mix versions.
    """
    from srgnn.recommender import Recommender

    if settings is not None:
        connect(settings)
    scheme = urlparse(model_uri).scheme
    if len(scheme) <= 1 or scheme == "file":  # a local path (or a Windows drive letter)
        local = Path(urlparse(model_uri).path if scheme == "file" else model_uri)
        if not local.exists():
            raise FileNotFoundError(f"no model folder at {local}.")
        recommender = Recommender.load(_recommender_folder(local), **scorer_options)
        return recommender, ModelVersionInfo(uri=model_uri, resolved_uri=str(local.resolve()))

    info = ModelVersionInfo(uri=model_uri, resolved_uri=model_uri)
    parsed = _parse_registry_uri(model_uri)
    if parsed is not None:
        name, kind, value = parsed
        tracking = client()
        if kind == "alias":
            version = tracking.get_model_version_by_alias(name, value)
        else:
            version = tracking.get_model_version(name, value)
        info = ModelVersionInfo(
            uri=model_uri,
            resolved_uri=f"models:/{name}/{version.version}",
            name=name,
            version=str(version.version),
            run_id=version.run_id,
            aliases=tuple(version.aliases or ()),
            tags=dict(version.tags or {}),
        )
    with tempfile.TemporaryDirectory(prefix="srgnn-load-") as tmp:
        path = mlflow.artifacts.download_artifacts(artifact_uri=info.resolved_uri, dst_path=tmp)
        recommender = Recommender.load(_recommender_folder(Path(path)), **scorer_options)
    return recommender, info


def champion_version(tracking=None, model_name: str = MODEL_NAME, alias: str = CHAMPION_ALIAS):
    """The ``ModelVersion`` holding ``alias`` (default ``champion``), or ``None``."""
    tracking = tracking or client()
    try:
        return tracking.get_model_version_by_alias(model_name, alias)
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


# --------------------------------------------------------------------------------------------
# Evaluation through raw ids
# --------------------------------------------------------------------------------------------
def raw_examples(run_dir, split: str = "test"):
    """The examples of ``graphs/<split>`` in raw ids of the run's vocabulary.

    Returns:
        ``(sessions, targets, prefix_lengths, item_ids, popularity)``: ``sessions`` a pyarrow
        ``list<string>`` array of the prefixes, ``targets`` (S,) object array of raw ids,
        ``prefix_lengths`` (S,), and the run's vocabulary (``item_ids[i - 1]`` is index ``i``;
        ``popularity`` (N + 1,) training clicks).
    """
    import pyarrow as pa

    from srgnn.evaluate import load_split
    from srgnn.recommender import read_vocab

    item_ids, popularity = read_vocab(Path(run_dir) / "vocab.parquet")
    examples = load_split(run_dir, split)
    sessions = pa.ListArray.from_arrays(
        pa.array(examples.prefix_offsets, pa.int64()).cast(pa.int32()),
        pa.array(item_ids[examples.prefix_values - 1].astype(str), pa.string()),
    )
    targets = item_ids[examples.targets - 1]
    return sessions, targets, examples.prefix_lengths, item_ids, popularity


def evaluate_recommender(recommender, run_dir, split: str = "test", k: int = 20,
                         batch_size: int = 20_000) -> dict:
    """HR@K, MRR@K and more of ``recommender`` on ``graphs/<split>`` of a run folder.

    The run's prefixes are turned back into raw item ids (through the run's
    ``vocab.parquet``) and given to ``recommender.recommend``, whose top-K raw ids are compared
    with the raw target ids. A recommender with another vocabulary (an older champion) is
    therefore judged on exactly the same examples; prefixes it cannot map at all get its
    popularity fallback, as in production.

    Returns:
        The keys of :func:`srgnn.evaluate.evaluate_ranked` (``HR@K``, ``MRR@K``, ``NDCG@K``,
        ``coverage@K`` and ``popularity_bias@K`` over the run's catalogue, ``examples``,
        ``by_length``) plus ``fallback_share`` (share of prefixes answered by the fallback)
        and ``recommend_s``.
    """
    import pandas as pd

    from srgnn import metrics

    sessions, targets, lengths, item_ids, popularity = raw_examples(run_dir, split)
    started = time.perf_counter()
    top_parts, fallback = [], 0
    for start in range(0, len(sessions), batch_size):
        recs = recommender.recommend(sessions.slice(start, batch_size), k=k)
        top_parts.append(np.asarray(recs.item_ids, dtype=object))
        fallback += int((np.asarray(recs.source) != "model").sum())
    seconds = time.perf_counter() - started
    top = np.concatenate(top_parts) if top_parts else np.empty((0, k), dtype=object)
    top = top[:, :k]

    ranks = metrics.ranks_from_topk(top, targets)  # raw ids against raw ids
    # The run's indices of the recommended ids (0 = not in the run's catalogue) for the
    # list-level measures, which are defined over the run's catalogue.
    run_index = pd.Index(item_ids.astype(str))
    top_indices = (run_index.get_indexer(top.astype(str).ravel()) + 1).reshape(top.shape)
    num_items = len(item_ids)
    hr = metrics.by_length_bucket(metrics.hit_rate_at_k, lengths, ranks, k=k)
    mrr = metrics.by_length_bucket(metrics.mrr_at_k, lengths, ranks, k=k)
    return {
        f"HR@{k}": metrics.hit_rate_at_k(ranks, k),
        f"MRR@{k}": metrics.mrr_at_k(ranks, k),
        f"NDCG@{k}": metrics.ndcg_at_k(ranks, k),
        f"coverage@{k}": metrics.coverage_at_k(top_indices, num_items, k) if len(top) else math.nan,
        f"popularity_bias@{k}": metrics.popularity_bias_at_k(top_indices, popularity, k),
        "examples": int(len(ranks)),
        "by_length": {
            label: {f"HR@{k}": hr[label][0], f"MRR@{k}": mrr[label][0], "examples": hr[label][1]}
            for label in metrics.length_bucket_labels()
        },
        "fallback_share": fallback / len(ranks) if len(ranks) else math.nan,
        "recommend_s": seconds,
    }


# --------------------------------------------------------------------------------------------
# Promotion
# --------------------------------------------------------------------------------------------
def _split_examples(run_dir, split: str) -> int:
    import pyarrow.dataset as ds

    path = Path(run_dir) / "graphs" / split
    if not path.exists():
        return 0
    return ds.dataset(path, format="parquet", exclude_invalid_files=True).count_rows()


def gate_split(run_dir) -> str:
    """The held-out split the gate compares on: ``test``, or ``valid`` when test is empty."""
    return "test" if _split_examples(run_dir, "test") > 0 else "valid"


def is_better(candidate: dict, champion: dict, k: int = 20) -> bool:
    """True when ``candidate`` has the higher HR@K, or the same HR@K and a higher MRR@K.

    A NaN (no examples) is never better. Equal figures are not better: the champion stays.
    """
    c = (candidate[f"HR@{k}"], candidate[f"MRR@{k}"])
    o = (champion[f"HR@{k}"], champion[f"MRR@{k}"])
    if any(math.isnan(x) for x in c):
        return False
    if any(math.isnan(x) for x in o):
        return True
    return c > o  # lexicographic: HR first, MRR breaks a tie


@dataclass(frozen=True)
class GateResult:
    """What :func:`promote_if_better` decided for one model version."""

    model_name: str
    version: str
    decision: str  # DECISION_FIRST, DECISION_PROMOTED or DECISION_KEPT
    reason: str
    promoted: bool  # True when the alias now points at this version
    champion_version: str | None  # holder of the alias after the gate
    previous_champion_version: str | None
    split: str
    examples: int
    k: int
    candidate: dict  # {"HR@K": .., "MRR@K": ..}
    champion: dict | None  # the previous champion's figures on the same examples

    def tags(self) -> dict[str, str]:
        """Model-version tags recording the decision."""
        k = self.k
        out = {
            "gate.decision": self.decision,
            "gate.reason": self.reason,
            "gate.split": self.split,
            "gate.examples": str(self.examples),
            f"gate.candidate_hr_at_{k}": _fmt(self.candidate.get(f"HR@{k}")),
            f"gate.candidate_mrr_at_{k}": _fmt(self.candidate.get(f"MRR@{k}")),
        }
        if self.previous_champion_version is not None:
            out["gate.champion_version"] = self.previous_champion_version
        if self.champion is not None:
            out[f"gate.champion_hr_at_{k}"] = _fmt(self.champion.get(f"HR@{k}"))
            out[f"gate.champion_mrr_at_{k}"] = _fmt(self.champion.get(f"MRR@{k}"))
        return out

    def as_dict(self) -> dict:
        return {
            "model_name": self.model_name, "version": self.version, "decision": self.decision,
            "reason": self.reason, "promoted": self.promoted,
            "champion_version": self.champion_version,
            "previous_champion_version": self.previous_champion_version,
            "split": self.split, "examples": self.examples, "k": self.k,
            "candidate": self.candidate, "champion": self.champion,
        }


def _fmt(value) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.6f}"


def promote(version, *, model_name: str = MODEL_NAME, alias: str = CHAMPION_ALIAS,
            reason: str | None = None, tracking=None) -> None:
    """Point ``alias`` at ``version`` without evaluation.

    The gate calls this after its comparison. Called by hand (rolling back, or overriding a
    gate decision) give a ``reason``: the version is then tagged
    ``gate.decision = "promoted by hand"`` and ``gate.reason = reason``.
    """
    tracking = tracking or client()
    tracking.set_registered_model_alias(model_name, alias, str(version))
    if reason is not None:
        tracking.set_model_version_tag(model_name, str(version), "gate.decision", DECISION_MANUAL)
        tracking.set_model_version_tag(model_name, str(version), "gate.reason", reason)


def promote_if_better(
    version,
    run_dir,
    *,
    candidate=None,
    model_name: str = MODEL_NAME,
    alias: str = CHAMPION_ALIAS,
    k: int = 20,
    split: str | None = None,
    candidate_metrics: dict | None = None,
    tracking=None,
) -> GateResult:
    """The gate: move ``alias`` to ``version`` only if it beats the current holder.

    Both models are evaluated with :func:`evaluate_recommender` on the same examples: the
    ``split`` of ``run_dir`` (default :func:`gate_split`: ``test``, else ``valid``). Without a
    champion the candidate becomes it (``first model``). A champion that cannot be loaded or
    evaluated is kept (the candidate can still be promoted by hand with :func:`promote`).

    Args:
        version: the registered version under consideration.
        run_dir: the candidate's prepare run folder.
        candidate: the candidate :class:`Recommender` if already in memory (else loaded).
        candidate_metrics: its :func:`evaluate_recommender` result on ``split``, if known.
        tracking: an ``MlflowClient`` (default: one on the current URIs).

    Returns:
        A :class:`GateResult`; its :meth:`~GateResult.tags` are set on the version.
    """
    tracking = tracking or client()
    version = str(version)
    split = split or gate_split(run_dir)
    if candidate_metrics is None:
        if candidate is None:
            candidate, _ = load_recommender(f"models:/{model_name}/{version}")
        candidate_metrics = evaluate_recommender(candidate, run_dir, split, k)
    cand = {f"HR@{k}": candidate_metrics[f"HR@{k}"], f"MRR@{k}": candidate_metrics[f"MRR@{k}"]}
    examples = int(candidate_metrics["examples"])
    current = champion_version(tracking, model_name, alias)
    previous = str(current.version) if current is not None else None
    champ = None

    if current is None:
        decision, promoted = DECISION_FIRST, True
        reason = f"no model held the alias '{alias}'; version {version} is the first champion"
    elif previous == version:  # the gate ran again for the same version (a retried task)
        decision, promoted = DECISION_PROMOTED, True
        reason = f"version {version} already holds the alias '{alias}'"
    elif examples == 0:
        decision, promoted = DECISION_KEPT, False
        reason = f"no held-out examples in {split} to compare on; version {previous} stays champion"
    else:
        try:
            champion_model, _ = load_recommender(f"models:/{model_name}/{previous}")
            result = evaluate_recommender(champion_model, run_dir, split, k)
            champ = {f"HR@{k}": result[f"HR@{k}"], f"MRR@{k}": result[f"MRR@{k}"]}
        except Exception as exc:  # noqa: BLE001 - an unreadable champion must not crash training
            logger.exception("the champion version %s could not be evaluated", previous)
            decision, promoted = DECISION_KEPT, False
            reason = (f"the champion (version {previous}) could not be evaluated "
                      f"({type(exc).__name__}: {exc}); it stays champion until promoted by hand")
        else:
            promoted = is_better(cand, champ, k)
            decision = DECISION_PROMOTED if promoted else DECISION_KEPT
            reason = _compare_reason(cand, champ, k, version, previous, promoted)

    if promoted and previous != version:
        promote(version, model_name=model_name, alias=alias, tracking=tracking)
    gate = GateResult(
        model_name=model_name,
        version=version,
        decision=decision,
        reason=reason,
        promoted=promoted,
        champion_version=version if promoted else previous,
        previous_champion_version=previous,
        split=split,
        examples=examples,
        k=k,
        candidate=cand,
        champion=champ,
    )
    for key, value in gate.tags().items():
        tracking.set_model_version_tag(model_name, version, key, value)
    logger.info("gate for %s version %s: %s (%s)", model_name, version, decision, reason)
    return gate


def _compare_reason(cand: dict, champ: dict, k: int, version: str, previous: str,
                    promoted: bool) -> str:
    hr, mrr = f"HR@{k}", f"MRR@{k}"
    figures = (f"candidate {hr} {cand[hr]:.4f} / {mrr} {cand[mrr]:.4f} vs champion "
               f"(version {previous}) {champ[hr]:.4f} / {champ[mrr]:.4f}")
    if promoted:
        why = f"higher {hr}" if cand[hr] > champ[hr] else f"same {hr}, higher {mrr}"
        return f"{why}: {figures}"
    if cand[hr] == champ[hr] and cand[mrr] == champ[mrr]:
        return f"not better (equal): {figures}"
    why = f"lower {hr}" if cand[hr] < champ[hr] else f"same {hr}, {mrr} not higher"
    return f"{why}: {figures}"
