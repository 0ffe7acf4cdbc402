"""Settings and small helpers shared by the srgnn DAG files.

Everything here is read from the environment when a DAG file is parsed, so the deployment
(``.env`` / docker-compose.yml, or the shell that runs ``airflow standalone``) decides the
schedules, the execution mode and the inputs; nobody edits a DAG file to change them.

Light on purpose: the dag-processor imports this on every parse. It imports nothing heavier
than ``srgnn.config`` and ``srgnn.io`` (no torch, pyspark or mlflow); the tasks import the
package's pipeline steps themselves.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jinja2
from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowSkipException

from srgnn.config import Settings

EXECUTION_MODES = ("local", "cluster")

# The model alias `champion` of the registered model `srgnn`, as an Airflow asset: the training
# DAG emits an event on it whenever a new version takes the alias.
CHAMPION = Asset("srgnn://models/srgnn/champion")
CHAMPION_URI = "models:/srgnn@champion"

# Static and in the past; with catchup=False only the latest interval runs when a DAG is
# unpaused, while `airflow backfill create` can still reach back to this date.
START_DATE = datetime(2025, 1, 1, tzinfo=timezone.utc)


def env(name: str, default: str | None = None) -> str | None:
    """An environment variable, with empty values treated as unset."""
    value = os.environ.get(name, "").strip()
    return value or default


def env_int(name: str, default: int) -> int:
    value = env(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, not {value!r}.") from None


def execution_mode() -> str:
    """``local`` (tasks call the package in-process, Spark local) or ``cluster`` (spark-submit)."""
    mode = env("SRGNN_EXECUTION_MODE", "local").lower()
    if mode not in EXECUTION_MODES:
        raise ValueError(f"SRGNN_EXECUTION_MODE must be one of {', '.join(EXECUTION_MODES)}, not {mode!r}.")
    return mode


def schedule(name: str, default: str) -> str | None:
    """A cron expression or preset from the environment; ``none`` means triggered runs only."""
    value = env(name, default)
    return None if value.lower() in ("none", "null", "manual") else value


def default_args() -> dict:
    return {
        "owner": "srgnn",
        "retries": env_int("SRGNN_TASK_RETRIES", 2),
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": True,
    }


def home() -> Path:
    """The project home as an absolute path (task processes do not share the parser's cwd)."""
    return Settings.from_env().home.resolve()


def jobs_dir() -> str:
    """Folder holding the spark-submit entry points (``jobs/`` next to ``dags/`` by default)."""
    return env("SRGNN_JOBS_DIR", str(Path(__file__).resolve().parents[1] / "jobs"))


def spark_conn_id() -> str:
    return env("SRGNN_SPARK_CONN_ID", "spark_default")


def spark_py_files() -> str | None:
    """Optional zip of the package for clusters whose nodes do not have it installed."""
    return env("SRGNN_SPARK_PY_FILES")


def path_safe(value: str) -> str:
    """A run id as a folder name: Hadoop paths reject ':' and '+' appears in UTC offsets."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(value)).strip("_")


def day_path(template: str, ds: str) -> str:
    """Render a path template such as ``/data/clicks/ds={{ ds }}/`` for one logical date.

    Params are not rendered by Airflow, so the scoring DAG calls this from its own templates
    (``{{ day_path(params.clicks, ds) }}``); ``ds`` and ``ds_nodash`` are available.
    """
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    return environment.from_string(template).render(ds=ds, ds_nodash=ds.replace("-", ""))


# Macros and filters both DAGs register, so that task arguments and spark-submit arguments
# are built by the same templates in local and cluster mode.
TEMPLATE_MACROS = {"day_path": day_path}
TEMPLATE_FILTERS = {"path_safe": path_safe}


def run_dir_template(dag_id: str) -> str:
    """Where a DAG run's prepare output goes, decided before the run starts.

    ``<SRGNN_HOME>/runs/<dag_id>/<run id>``: a retry of the same run rewrites the same folder,
    and in cluster mode the path is known to spark-submit and to the training task alike.
    """
    return f"{home() / 'runs' / dag_id}/{{{{ run_id | path_safe }}}}"


def publish_champion(trained: dict, outlet_events) -> dict:
    """The gate: emit a champion asset event only when training moved the alias.

    A skipped task emits no asset event, so consumers of CHAMPION see only real promotions.
    """
    if not trained.get("promoted"):
        raise AirflowSkipException(
            f"model version {trained.get('version')} did not beat the champion; the alias stays where it was"
        )
    extra = {
        "model_uri": trained["model_uri"],
        "version": str(trained["version"]),
        "run_id": trained["run_id"],
        "metrics": trained.get("metrics", {}),
    }
    outlet_events[CHAMPION].extra = extra
    return extra
