"""srgnn prepare on a real Spark standalone cluster (the ``standalone_cluster`` fixture,
tests/cluster.py): its ``mapInArrow`` steps import ``srgnn`` in the executors' Python workers,
which only works when the driver tells the executors which Python to start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_prepare_runs_on_a_standalone_cluster_with_the_project_python(standalone_cluster, tmp_path):
    rows = [f"s{s},{1700000000 + 60 * i + 3600 * s},{(s + i) % 5}" for s in range(40) for i in range(3)]
    clicks = tmp_path / "clicks.csv"
    clicks.write_text("session_id,timestamp,item_id\n" + "\n".join(rows) + "\n")
    out = tmp_path / "run"
    env = standalone_cluster.env(SRGNN_HOME=str(tmp_path / "home"), SRGNN_SPARK_DRIVER_MEMORY="1g",
                                 SRGNN_SPARK_EXECUTOR_MEMORY="600m")
    before = {app["id"] for app in standalone_cluster.completed_apps()}
    result = subprocess.run(
        [sys.executable, "-m", "srgnn.cli", "prepare", "--clicks", str(clicks), "--out", str(out),
         "--min-item-support", "1", "--test-days", "0", "--valid-days", "0"],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    summary = json.loads(Path(out / "summary.json").read_text())
    assert summary["splits"]["train"]["sessions"] == 40
    assert summary["splits"]["train"]["examples"] == 80  # two prefixes of each 3-click session
    # The job ran on the cluster's executor, with the memory asked for.
    apps = [app for app in standalone_cluster.completed_apps() if app["id"] not in before]
    assert [app["name"] for app in apps] == ["srgnn-prepare"], apps
    assert apps[0]["memoryperexecutor"] == 600 or apps[0].get("memoryperslave") == 600, apps[0]
    # A small split is in no more files than the cluster's two task slots, not in one per
    # shuffle partition (200 there).
    for sub in ("sessions/train", "graphs/train"):
        assert 1 <= len(list((out / sub).glob("part-*.parquet"))) <= 2, sub


@pytest.mark.slow
def test_executors_on_a_cluster_see_the_drivers_srgnn_settings(standalone_cluster, tmp_path):
    """Python workers on a cluster do not inherit the driver's environment; the settings that
    code running there reads (Settings.from_env()) are forwarded, credentials are not."""
    code = (
        "import json, os\n"
        "from srgnn.data.spark import get_spark\n"
        "spark = get_spark(app_name='srgnn-env-test')\n"
        "names = ['SRGNN_TOPK_INDEX', 'SRGNN_HOME', 'SRGNN_WAREHOUSE_URL']\n"
        "seen = spark.sparkContext.parallelize([0], 1).map("
        "lambda _: {n: os.environ.get(n) for n in names}).collect()[0]\n"
        "print('SEEN ' + json.dumps(seen))\n"
    )
    env = standalone_cluster.env(SRGNN_HOME="relative-home", SRGNN_TOPK_INDEX="exact",
                                 SRGNN_WAREHOUSE_URL="postgresql://u:secret@db/w",
                                 SRGNN_SPARK_DRIVER_MEMORY="1g", SRGNN_SPARK_EXECUTOR_MEMORY="600m")
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.split("SEEN ", 1)[1])
    assert seen == {"SRGNN_TOPK_INDEX": "exact", "SRGNN_HOME": str(tmp_path / "relative-home"),
                    "SRGNN_WAREHOUSE_URL": None}
