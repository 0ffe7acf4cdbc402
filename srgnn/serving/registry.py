"""The MLflow tracking store and model registry: connecting, loading and naming versions.

Where things live (:func:`configure`):

* embedded default: tracking and registry in the SQLite file ``$SRGNN_HOME/mlflow.db``,
  artifacts under ``$SRGNN_HOME/mlartifacts/`` (the experiment is created with that artifact
  location the first time it is used);
* ``MLFLOW_TRACKING_URI=http://mlflow:5000`` (read by :class:`srgnn.config.Settings`): a
  tracking server, which also decides where artifacts go. (A database URI without a server,
  e.g. another SQLite file, keeps the artifacts under the project home.)

Batch consumers skip the pyfunc layer (:mod:`srgnn.serving.pyfunc`): :func:`load_recommender`
downloads the artifact of ``models:/srgnn@champion`` (or any model URI, or a local folder) and
returns the :class:`~srgnn.serving.recommender.Recommender` with the resolved version.
:func:`versions_of_run` finds the versions a training run registered (a retried training uses
it to register nothing twice); :func:`promote` moves the ``champion`` alias (the gate in
:mod:`srgnn.evaluation.gate` decides when). There are no registry stages (deprecated in MLflow).

Importing this module imports MLflow (several seconds) and nothing else happens: no tracking
URI is set and no folder is created until :func:`configure` (or :func:`connect`) is called.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import mlflow

from srgnn.config import Settings
from srgnn.serving.pyfunc import ARTIFACT_KEY

__all__ = [
    "MODEL_NAME",
    "CHAMPION_ALIAS",
    "CHAMPION_URI",
    "EXPERIMENT_NAME",
    "ModelVersionInfo",
    "connect",
    "configure",
    "client",
    "load_recommender",
    "champion_version",
    "versions_of_run",
    "promote",
    "DECISION_MANUAL",
]

logger = logging.getLogger(__name__)

MODEL_NAME = "srgnn"  # registered model
CHAMPION_ALIAS = "champion"
CHAMPION_URI = f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}"
EXPERIMENT_NAME = "srgnn"
DECISION_MANUAL = "promoted by hand"

_SERVER_SCHEMES = ("http", "https", "databricks")


def connect(settings: Settings) -> str:
    """Point MLflow's tracking and registry at ``settings.tracking_uri``; returns the URI.

    For the embedded SQLite store the home folder is created (the database file itself is
    created by MLflow on first use). Artifact download progress bars are switched off unless
    ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` is set: they fill task logs with carriage returns.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from srgnn.logs import adopt

    adopt("mlflow")  # MLflow's own stderr handler would file its notes as errors in task logs
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


def load_recommender(model_uri: str = CHAMPION_URI, *,
                     settings: Settings | None = None, **scorer_options):
    """The :class:`Recommender` of a registered model, without the pyfunc layer.

    Args:
        model_uri: ``models:/srgnn@champion`` (default), ``models:/srgnn/<version>``, any
            other MLflow model URI (``runs:/...``, ``models:/m-<id>``), or a local folder
            (a saved recommender, or a downloaded MLflow model).
        settings: when given, :func:`connect` to its tracking URI first.
        **scorer_options: passed to :class:`srgnn.serving.predict.Scorer` (``batch_size``, ``device``).

    Returns:
        ``(recommender, ModelVersionInfo)``. An alias is resolved to a version once, and that
        version is what is downloaded: a promotion happening meanwhile cannot mix versions.
    """
    from srgnn.serving.recommender import Recommender

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


def versions_of_run(run_id: str, model_name: str = MODEL_NAME, tracking=None) -> list:
    """The registered versions of ``model_name`` whose model was logged by run ``run_id``,
    oldest first."""
    tracking = tracking or client()
    found = tracking.search_model_versions(f"name='{model_name}' and run_id='{run_id}'")
    return sorted(found, key=lambda v: int(v.version))


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
