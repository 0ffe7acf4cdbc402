"""What the srgnn DAG files share: their settings, params built from the settings table, and the
rules for failing.

Everything here is read from the environment when a DAG file is parsed, through the settings
table of :mod:`srgnn.config` (the same variables, defaults and checks as the command line), so
the deployment (``.env`` / docker-compose.yml, or the shell that runs ``airflow standalone``)
decides the schedules, the execution mode and the inputs; nobody edits a DAG file to change
them.

Failing: a user's mistake (a missing clicks folder, a bad column, a bad setting, a manual
scoring run without a logical date) fails the task at once, without retries
(:func:`fail_fast_on_user_errors`); retries (``SRGNN_TASK_RETRIES``) are for faults of the
environment. A day whose clicks may still be arriving is waited for by a sensor with a timeout
(``SRGNN_SCORING_WAIT_MINUTES``), not by retries.

Light on purpose: the dag-processor imports this on every parse. It imports nothing heavier
than ``srgnn.config`` (no torch, pyspark or mlflow); the tasks import the package's pipeline
steps themselves. ``.airflowignore`` keeps this file out of DAG parsing.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jinja2
from airflow.sdk import Asset, Param
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from srgnn import config

# The model alias `champion` of the registered model `srgnn`, as an Airflow asset: the training
# DAG emits an event on it whenever a new version takes the alias.
CHAMPION = Asset("srgnn://models/srgnn/champion")

# Static and in the past; with catchup=False only the latest interval runs when a DAG is
# unpaused, while `airflow backfill create` can still reach back to this date.
START_DATE = datetime(2025, 1, 1, tzinfo=timezone.utc)



def deployment() -> config.Deployment:
    """The DAGs' settings from the environment, read at each parse."""
    return config.Deployment.from_env()


def schedule(value: str) -> str | None:
    """A cron expression or preset; ``none`` means triggered runs only."""
    return None if value.lower() in ("none", "null", "manual") else value


def default_args() -> dict:
    return {
        "owner": "srgnn",
        "retries": deployment().task_retries,
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": True,
    }


def home() -> Path:
    """The project home as an absolute path (task processes do not share the parser's cwd)."""
    return config.Settings.from_env().home.resolve()


def jobs_dir() -> str:
    """Folder holding the spark-submit entry points (``jobs/`` next to ``dags/`` by default)."""
    return deployment().jobs_dir or str(Path(__file__).resolve().parents[1] / "jobs")


def spark_submit_options(name: str) -> dict:
    """Keyword arguments of a cluster-mode ``SparkSubmitOperator`` (besides the application and
    its arguments), the same for both DAGs.

    The master comes from the Airflow connection ``SRGNN_SPARK_CONN_ID``. Executors run the
    environment archive ``SRGNN_SPARK_ARCHIVE`` (unpacked as ``./environment``), or else the
    Python ``SRGNN_SPARK_PYTHON`` / this interpreter, which must then exist on every node; the
    driver runs this interpreter (client mode). Driver and executor memory are the settings'.
    """
    import shutil
    import sys

    deploy, settings = deployment(), config.Settings.from_env()
    conf = {"spark.pyspark.driver.python": sys.executable}
    archives = None
    if deploy.spark_archive:
        archives = f"{deploy.spark_archive}#environment"
        conf["spark.pyspark.python"] = "./environment/bin/python"
    else:
        conf["spark.pyspark.python"] = settings.spark_python or sys.executable
    binary = deploy.spark_submit
    if binary is None and shutil.which("spark-submit") is None:
        beside = Path(sys.executable).parent / "spark-submit"  # PySpark's, in this environment
        binary = str(beside) if beside.exists() else None
    return {
        "conn_id": deploy.spark_conn_id,
        "name": name,
        "py_files": deploy.spark_py_files,
        "archives": archives,
        "conf": conf,
        "driver_memory": settings.spark_driver_memory,
        "executor_memory": settings.spark_executor_memory,
        "spark_binary": binary,
    }


_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string", Path: "string"}
# The bounds of the settings table under their JSON Schema names: the form refuses what the
# task would (scale 0, dropout 1).
_JSON_BOUNDS = {"minimum": "minimum", "exclusive_minimum": "exclusiveMinimum",
                "maximum": "maximum", "exclusive_maximum": "exclusiveMaximum"}


def params(config_class, only=None, **defaults) -> dict[str, Param]:
    """DAG params for the user-facing fields of ``config_class`` (or the fields in ``only``):
    default from the environment (or ``defaults``), type, range, choices and description from
    the settings table."""
    out = {}
    for opt in config.options(config_class):
        if only is not None and opt.name not in only:
            continue
        if only is None and not opt.cli:
            continue
        kind = _JSON_TYPES[opt.type]
        schema = {"type": [kind, "null"] if opt.optional else kind}
        if opt.choices:
            schema["enum"] = list(opt.choices)
        for name, bound in config.bounds(opt).items():  # minimum, exclusive_maximum, ...
            schema[_JSON_BOUNDS[name]] = bound
        if opt.type is str and not opt.optional and opt.default != "":
            schema["minLength"] = 1  # (an empty default, e.g. search, means "none")
        default = defaults.get(opt.name, config.env_value(opt))
        out[opt.name] = Param(str(default) if isinstance(default, Path) else default,
                              description=opt.help, **schema)
    return out


def build(config_class, values: dict):
    """``config_class`` from a run's params (the fields it has); a bad value fails the task."""
    try:
        return config.from_values(config_class, values)
    except config.SettingError as exc:
        raise AirflowFailException(f"error: {exc}") from None


def fail_fast_on_user_errors(function):
    """Run a task body so that a user's mistake fails the task without retries.

    ``InputError`` (bad input files) and ``SettingError`` (bad settings) become
    ``AirflowFailException`` with the one-line message; anything else is retried as usual.
    """
    @functools.wraps(function)
    def run(*args, **kwargs):
        from srgnn.data.inputs import InputError

        try:
            return function(*args, **kwargs)
        except (InputError, config.SettingError) as exc:
            raise AirflowFailException(f"error: {exc}") from None
    return run


def path_safe(value: str) -> str:
    """A run id as a folder name: Hadoop paths reject ':' and '+' appears in UTC offsets."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(value)).strip("_")


def day_path(template: str, ds: str) -> str:
    """Render a path template such as ``/data/clicks/ds={{ ds }}/`` for one logical date.

    Params are not rendered by Airflow, so the DAGs render this template themselves;
    ``ds`` and ``ds_nodash`` are available.
    """
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    return environment.from_string(template).render(ds=ds, ds_nodash=ds.replace("-", ""))


# Macros and filters both DAGs register, so that task arguments and spark-submit arguments
# are built by the same templates in local and cluster mode.
TEMPLATE_MACROS = {"day_path": day_path}
TEMPLATE_FILTERS = {"path_safe": path_safe}


def run_dir_template(dag_id: str) -> str:
    """Where a DAG run's prepare output goes, decided before the run starts.

    ``<SRGNN_HOME>/runs/<dag_id>/<run id>``: a retry of the same run rewrites the same folder
    (and its training resumes there), and in cluster mode the path is known to spark-submit and
    to the training task alike.
    """
    return f"{home() / 'runs' / dag_id}/{{{{ run_id | path_safe }}}}"


def publish_champion(gate: dict, outlet_events) -> dict:
    """Emit a champion asset event only when the gate moved the alias.

    A skipped task emits no asset event, so consumers of CHAMPION see only real promotions.
    """
    if not gate.get("promoted"):
        raise AirflowSkipException(
            f"model version {gate.get('version')} did not beat the champion; the alias stays "
            f"where it was ({gate.get('reason')})"
        )
    extra = {
        "model_uri": gate["model_uri"],
        "version": str(gate["version"]),
        "run_id": gate["run_id"],
        "metrics": gate.get("candidate", {}),
    }
    outlet_events[CHAMPION].extra = extra
    return extra
