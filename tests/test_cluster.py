"""srgnn on a real Spark standalone cluster (a master and a worker started here from the installed
PySpark's launchers, not ``local[*]``).

The worker starts its executors with the PATH of this machine, whose ``python3`` does not have
the project installed: a job whose Python workers import ``srgnn`` (prepare's ``mapInArrow``
steps) only runs when the driver tells the executors which Python to start.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _master_state(ui_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    """``(master URL, web UI port)`` of a running master with one 1-core, 1 GiB worker."""
    import pyspark

    spark_home = os.path.dirname(pyspark.__file__)
    spark_class = os.path.join(spark_home, "bin", "spark-class")
    if not os.path.exists(spark_class):
        pytest.skip("the installed PySpark has no bin/spark-class")
    logs = tmp_path_factory.mktemp("cluster-logs")
    port, ui_port, worker_ui = _free_port(), _free_port(), _free_port()
    env = {**os.environ, "SPARK_HOME": spark_home, "SPARK_LOG_DIR": str(logs),
           "SPARK_WORKER_DIR": str(logs / "work")}
    env.pop("PYSPARK_PYTHON", None)  # executors get only what the driver tells them
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # this venv's python is not on the workers' PATH
    started = []
    for name, args in (
        ("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                    "--port", str(port), "--webui-port", str(ui_port)]),
        ("worker", ["org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}",
                    "--host", "127.0.0.1", "--cores", "1", "--memory", "1g",
                    "--webui-port", str(worker_ui)]),
    ):
        log = open(logs / f"{name}.log", "w")
        started.append(subprocess.Popen([spark_class, *args], env=env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True))
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if any(w["state"] == "ALIVE" for w in _master_state(ui_port)["workers"]):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in started):
                tail = "".join((logs / f"{n}.log").read_text()[-1500:] for n in ("master", "worker"))
                pytest.fail(f"the standalone cluster did not come up:\n{tail}")
            time.sleep(0.5)
        yield f"spark://127.0.0.1:{port}", ui_port
    finally:
        for process in started:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.slow
def test_prepare_runs_on_a_standalone_cluster_with_the_project_python(standalone_cluster, tmp_path):
    master, ui_port = standalone_cluster
    rows = [f"s{s},{1700000000 + 60 * i + 3600 * s},{(s + i) % 5}" for s in range(40) for i in range(3)]
    clicks = tmp_path / "clicks.csv"
    clicks.write_text("session_id,timestamp,item_id\n" + "\n".join(rows) + "\n")
    out = tmp_path / "run"
    env = {**os.environ, "SRGNN_HOME": str(tmp_path / "home"), "SRGNN_SPARK_MASTER": master,
           "SRGNN_SPARK_DRIVER_MEMORY": "1g", "SRGNN_SPARK_EXECUTOR_MEMORY": "600m"}
    env.pop("PYSPARK_PYTHON", None)
    result = subprocess.run(
        [sys.executable, "-m", "srgnn.cli", "prepare", "--clicks", str(clicks), "--out", str(out),
         "--min-item-support", "1", "--test-days", "0", "--valid-days", "0"],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    summary = json.loads(Path(out / "summary.json").read_text())
    assert summary["splits"]["train"]["sessions"] == 40
    assert summary["splits"]["train"]["examples"] == 80  # two prefixes of each 3-click session
    # The job ran on the cluster's executor, with the memory asked for.
    apps = _master_state(ui_port)["completedapps"]
    assert len(apps) == 1 and apps[0]["name"].startswith("srgnn"), apps
    assert apps[0]["memoryperexecutor"] == 600 or apps[0].get("memoryperslave") == 600, apps[0]
    # A small split is one file on a cluster too (the shuffle has 200 partitions there).
    for sub in ("sessions/train", "graphs/train"):
        assert len(list((out / sub).glob("part-*.parquet"))) == 1, sub
