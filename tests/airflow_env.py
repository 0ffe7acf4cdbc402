"""A private Airflow + srgnn environment for the end-to-end DAG tests, and the DAG runner.

Airflow binds its metadata database when it is first imported (``airflow.settings`` reads
``AIRFLOW_HOME`` and ``sql_alchemy_conn`` once), so a pytest process that has already imported
it for another test module cannot be pointed at a new database afterwards. The end-to-end
tests therefore run their DAG runs through this file, as a script in a fresh interpreter with
the environment given explicitly::

    python tests/airflow_env.py '[{"dag": "training", "conf": {...}},
                                  {"dag": "scoring", "logical_date": "2026-11-26"}]'

The script runs the listed DAG runs in order with ``dag.test()`` (the same way ``srgnn demo``
does) and prints one JSON line: per run its id, logical date, final state, task states and
the asset events its tasks emitted.
The tests then read the registry, the run folders and the warehouse themselves.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"
DAG_FILES = {"training": ("srgnn_training.py", "training_dag"),
             "scoring": ("srgnn_scoring.py", "scoring_dag")}
# Variables of the calling shell that would point the scenario at other stores or settings.
FOREIGN_PREFIXES = ("AIRFLOW", "SRGNN_", "MLFLOW_", "_AIRFLOW")


def environment(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a scenario: ``srgnn demo``'s Airflow settings under ``home``.

    Airflow's metadata goes to ``home/airflow/airflow.db``, the MLflow store, run folders
    and warehouse under ``home``; both DAGs are triggered-only and tasks are not retried.
    ``extra`` adds or overrides variables (``SRGNN_SCORING_CLICKS``, ``SRGNN_TOP_K``...).
    """
    from srgnn.demo import _airflow_env

    base = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_PREFIXES)}
    base.update(_airflow_env(Path(home).resolve()))
    # Small data on a small machine: two Spark threads and a small driver are plenty.
    base.update(SRGNN_SPARK_MASTER="local[2]", SRGNN_SPARK_DRIVER_MEMORY="1g")
    base.update(extra)
    return base


def apply(patch, env: dict[str, str]) -> None:
    """Make this process's environment ``env`` through a ``pytest.MonkeyPatch`` (undone with it)."""
    for name in [n for n in os.environ if n.startswith(FOREIGN_PREFIXES) and n not in env]:
        patch.delenv(name)
    for name, value in env.items():
        patch.setenv(name, value)


def migrate(env: dict[str, str], timeout: float = 120) -> None:
    """``airflow db migrate`` into the scenario's SQLite file."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    result = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env,
                            cwd=env["AIRFLOW_HOME"], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")


def run_dags(env: dict[str, str], runs: list[dict], timeout: float = 300) -> list[dict]:
    """Run ``runs`` (see :func:`main`) in a fresh interpreter; return what :func:`main` printed."""
    result = subprocess.run([sys.executable, str(Path(__file__).resolve()), json.dumps(runs)], env=env,
                            cwd=env["AIRFLOW_HOME"], capture_output=True, text=True, timeout=timeout)
    lines = [line for line in result.stdout.splitlines() if line.startswith('{"runs":')]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"the DAG runner exited with {result.returncode}:\n"
                           f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return json.loads(lines[-1])["runs"]


def test_task(env: dict[str, str], dag_id: str, task_id: str, run_id: str,
              timeout: float = 300) -> subprocess.CompletedProcess:
    """``airflow tasks test DAG TASK RUN_ID``: run one task of an existing DAG run again, with
    its XCom inputs from that run (what a retry or a cleared task does, without a scheduler)."""
    env = {**env, "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO"}  # the task's own log lines
    return subprocess.run([sys.executable, "-m", "airflow", "tasks", "test", dag_id, task_id, run_id],
                          env=env, cwd=env["AIRFLOW_HOME"], capture_output=True, text=True,
                          timeout=timeout)


def _asset_events(run_id: str) -> list[dict]:
    """The asset events the run's tasks emitted, read from the metadata database."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == run_id)).all()
        return [{"uri": event.asset.uri, "task_id": event.source_task_id, "extra": event.extra}
                for event in events]


def _run_one(spec: dict) -> dict:
    from srgnn.demo import _load_dag

    # Read when the DAG file is parsed (params) or when its task runs (Settings.from_env()).
    os.environ.update(spec.get("env", {}))
    file_name, attribute = DAG_FILES[spec["dag"]]
    dag = _load_dag(DAGS / file_name, attribute)
    kwargs = {}
    if spec.get("conf"):
        kwargs["run_conf"] = spec["conf"]
    if spec.get("logical_date"):
        day = dt.date.fromisoformat(spec["logical_date"])
        kwargs["logical_date"] = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)
    dag_run = dag.test(**kwargs)
    tasks = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    return {"dag_id": dag.dag_id, "run_id": dag_run.run_id, "state": str(dag_run.state),
            "logical_date": dag_run.logical_date.isoformat() if dag_run.logical_date else None,
            "tasks": tasks, "asset_events": _asset_events(dag_run.run_id)}


def main(argv: list[str]) -> int:
    """Run each ``{"dag": "training"|"scoring", "conf": {...}, "logical_date": "YYYY-MM-DD",
    "env": {...}}`` of the JSON list ``argv[0]`` with ``dag.test()``, in order and in this
    process, and print the outcomes as one JSON line. ``env`` is added to the environment
    before the DAG file is parsed and stays for the runs after it.

    A failed run does not stop the next ones: the caller decides from the states.
    """
    runs = [_run_one(spec) for spec in json.loads(argv[0])]
    print(json.dumps({"runs": runs}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
