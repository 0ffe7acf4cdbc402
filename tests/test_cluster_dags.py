"""Both DAGs in cluster mode against a real Spark standalone cluster (the ``standalone_cluster``
fixture), the way the README's cluster section sets them up:

* the executors' Python environment is the archive ``make spark-env`` builds
  (``scripts/spark_env.sh``), shipped by spark-submit with ``--archives`` and named by
  ``SRGNN_SPARK_ARCHIVE``; the workers' own ``python3`` has no srgnn, pandas or torch;
* the master and the spark-submit command come from the Airflow connection
  ``spark_default`` (its ``spark-binary`` extra, looked up on PATH);
* prepare and score are spark-submit jobs; the scoring job uses the ``spark`` engine.

Slow (several minutes): the archive is built once (about 530 MB, 1.7 GB unpacked) and each
job unpacks it on each executor.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

import airflow_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TRAIN_DAYS = ["2026-11-22", "2026-11-23", "2026-11-24"]
SCORE_DAY = "2026-11-25"


@pytest.fixture(scope="session")
def spark_env_archive(tmp_path_factory) -> Path:
    """The executors' environment archive, built by the script behind ``make spark-env``."""
    out = tmp_path_factory.mktemp("spark-env") / "srgnn-env.tar.gz"
    result = subprocess.run([str(ROOT / "scripts" / "spark_env.sh"), str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_the_archive_holds_the_package_and_its_python(spark_env_archive):
    import tarfile

    with tarfile.open(spark_env_archive, "r:gz") as archive:
        names = set(archive.getnames())
    assert "bin/python" in names
    assert any(name.endswith("site-packages/srgnn/serving/score.py") for name in names)
    assert any(name.endswith("site-packages/torch/__init__.py") for name in names)
    assert not any("/airflow/" in name for name in names)  # executors do not run Airflow


def test_both_dags_run_in_cluster_mode_with_the_environment_archive(standalone_cluster,
                                                                    spark_env_archive,
                                                                    tmp_path):
    from srgnn.data.synth import SynthConfig, write_clickstream

    home = tmp_path / "home"
    clicks = home / "clicks"
    generated = write_clickstream(str(clicks), SynthConfig(sessions=800, items=120, days=4,
                                                           end_date=SCORE_DAY, seed=3), by_day=True)
    assert generated.days == [*TRAIN_DAYS, SCORE_DAY]
    score_clicks = home / "score"
    score_clicks.mkdir()
    shutil.move(str(clicks / f"ds={SCORE_DAY}"), str(score_clicks / f"ds={SCORE_DAY}"))

    host_port = standalone_cluster.master.removeprefix("spark://")
    env = airflow_env.environment(
        home,
        SRGNN_EXECUTION_MODE="cluster",
        AIRFLOW_CONN_SPARK_DEFAULT=f"spark://{host_port}?spark-binary=spark-submit&deploy-mode=client",
        # spark-submit by name, as the connection says: found on PATH (PySpark's, in this venv).
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        SRGNN_SPARK_ARCHIVE=str(spark_env_archive),
        SRGNN_SPARK_DRIVER_MEMORY="1g", SRGNN_SPARK_EXECUTOR_MEMORY="700m",
        SRGNN_SCORING_CLICKS=str(score_clicks), SRGNN_TOP_K="5",
    )
    env.pop("SRGNN_SPARK_MASTER")  # spark-submit jobs take the master from the connection
    env.pop("PYSPARK_PYTHON", None)
    before = {app["id"] for app in standalone_cluster.completed_apps()}
    airflow_env.migrate(env)
    training, scoring = airflow_env.run_dags(env, [
        {"dag": "training", "conf": {"clicks": str(clicks), "format": "csv", "test_days": 1,
                                     "valid_days": 0, "min_item_support": 1, "epochs": 1}},
        {"dag": "scoring", "logical_date": SCORE_DAY},
    ], timeout=1500)
    assert training["state"] == "success", training["tasks"]
    assert scoring["state"] == "success", scoring["tasks"]
    assert training["tasks"]["prepare"] == scoring["tasks"]["score"] == "success"

    # Both Spark jobs ran on the cluster, each with the archive unpacked on its executors.
    apps = {app["id"]: app for app in standalone_cluster.completed_apps() if app["id"] not in before}
    names = sorted(app["name"].split("-")[1] for app in apps.values())
    assert names == ["prepare", "score"], [app["name"] for app in apps.values()]
    for app_id in apps:
        executor_dirs = list((standalone_cluster.logs / "work" / app_id).iterdir())
        assert executor_dirs and all((d / "environment" / "bin" / "python").exists()
                                     for d in executor_dirs), executor_dirs
        assert all(app["memoryperexecutor"] == 700 for app in apps.values())

    # The day is in the warehouse: every session of the day file, five rows each.
    sessions = {line.split(",")[0] for path in (score_clicks / f"ds={SCORE_DAY}").glob("*")
                for line in path.read_text().splitlines()[1:] if line}
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute("select session_id, count(*) from recommendations where ds = ? "
                           "group by session_id", [SCORE_DAY]).fetchall()
        logged = con.execute("select status, sessions_scored from scoring_runs where ds = ?",
                             [SCORE_DAY]).fetchall()
    assert rows and all(count == 5 for _, count in rows)
    assert logged == [("succeeded", len(rows))]
    assert {session for session, _ in rows} <= sessions
