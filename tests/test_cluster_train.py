"""``srgnn train`` with two training processes on a real Spark standalone cluster (the
``standalone_cluster`` fixture, tests/cluster.py: a master and two 1-core workers).

TorchDistributor runs the two DDP ranks as the tasks of a barrier stage on the cluster's
executors; rank 0 logs to MLflow and registers. The run folder is written without Spark
(:func:`test_registry.write_run_folder`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from test_registry import synthetic_splits, write_run_folder


def _srgnn_train(env, run_dir, *flags):
    return subprocess.run(
        [sys.executable, "-m", "srgnn.cli", "train", "--clicks", str(run_dir / "unused"),
         "--out", str(run_dir), "--resume", "--epochs", "1", "--hidden-size", "8",
         "--no-short-fallback", "--no-refit", *flags],
        env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_train_with_two_processes_on_a_standalone_cluster(standalone_cluster, tmp_path):
    import mlflow

    from srgnn.config import Settings

    run_dir = write_run_folder(tmp_path / "run", synthetic_splits(num_sessions=300, seed=5))
    home = tmp_path / "home"
    env = standalone_cluster.env(SRGNN_HOME=str(home), SRGNN_SPARK_DRIVER_MEMORY="1g",
                                 SRGNN_SPARK_EXECUTOR_MEMORY="600m", SRGNN_TRAIN_PROCESSES="2")
    before = {app["id"] for app in standalone_cluster.completed_apps()}

    # More processes than the cluster's two task slots: one line, no waiting barrier stage.
    refused = _srgnn_train({**env, "SRGNN_TRAIN_PROCESSES": "3"}, run_dir)
    assert refused.returncode == 1, (refused.stdout[-2000:], refused.stderr[-3000:])
    assert "needs 3 task slots" in refused.stderr and "Traceback" not in refused.stderr

    result = _srgnn_train(env, run_dir)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert "registered srgnn version 1" in result.stdout

    trained = json.loads((run_dir / "training.json").read_text())
    assert (trained["version"], trained["epochs"]) == (1, 1)
    client = mlflow.MlflowClient(Settings(home=home).tracking_uri)
    assert [int(v.version) for v in client.search_model_versions("name='srgnn'")] == [1]
    run = client.get_run(trained["run_id"])
    assert run.data.params["processes"] == "2"
    for metric in ("train_loss", "valid_hr_at_20", "examples_per_second"):  # rank 0 alone
        history = client.get_metric_history(trained["run_id"], metric)
        assert [m.step for m in history] == [1], (metric, history)
    # Cross-entropy over the catalogue after one epoch: positive and not blown up (scale x cosine
    # scores, on by default, start a little above the uniform ln N).
    assert 0 < run.data.metrics["train_loss"] < 15
    # Both ranks ran on the cluster, in the training's application (the refused one started
    # its own, which let it count the slots).
    apps = [a for a in standalone_cluster.completed_apps() if a["id"] not in before]
    assert sorted(a["name"] for a in apps) == ["srgnn-train", "srgnn-train"], apps
    assert all(a["cores"] == 2 for a in apps), apps
