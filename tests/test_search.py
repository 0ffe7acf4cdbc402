"""The search on validation (srgnn.training.search): budgets, the user's configuration as the
first trial, a bad configuration improved on, the budget cutting a trial, and ``srgnn train
--search`` with its trials as MLflow child runs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from srgnn.config import TrainConfig, parse_budget
from srgnn.data.runfolder import RunFolder
from srgnn.training.search import SPACE, search, space

from test_registry import synthetic_splits, write_run_folder

QUICK = TrainConfig(hidden_size=8, batch_size=50, epochs=2, patience=2, progress=False,
                    num_threads=1, short_fallback=False, seed=3)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return RunFolder(write_run_folder(tmp_path_factory.mktemp("run"),
                                      synthetic_splits(num_sessions=600, seed=8)))


@pytest.mark.parametrize("text, seconds", [("900", 900), ("900s", 900), ("30m", 1800),
                                           ("2h", 7200), ("1.5h", 5400), (" 1d ", 86400),
                                           ("", 0)])
def test_budgets_are_read_in_the_usual_units(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["0", "-5m", "2 hours", "m", "30x"])
def test_a_malformed_budget_is_refused_in_one_line(text):
    with pytest.raises(ValueError, match="positive duration such as 900s, 30m or 2h"):
        TrainConfig(search=text)


def test_search_refuses_several_processes():
    with pytest.raises(ValueError, match="search"):
        TrainConfig(search="10m", processes=2)


def test_the_space_holds_the_users_own_values():
    widened = space(TrainConfig(hidden_size=8, lr=1e-6, steps=5))
    assert 8 in widened["hidden_size"][1] and widened["lr"][1] == 1e-6 and widened["steps"][2] == 5
    assert space(TrainConfig()) == SPACE  # the paper's settings are inside it already


@pytest.mark.slow
def test_the_search_improves_on_a_hopeless_configuration(run):
    base = TrainConfig(**{**QUICK.__dict__, "lr": 1e-6})  # learns nothing in 2 epochs
    found = search(run, base, budget_seconds=900, max_trials=4, tracked=False)
    first = found.trials[0]
    assert first["params"]["lr"] == 1e-6 and first["params"]["hidden_size"] == 8  # asked first
    assert len(found.trials) == 4
    best = found.trials[found.best]
    assert best["valid_hit_rate"] == max(t["valid_hit_rate"] for t in found.trials
                                         if t["state"] != "pruned")
    assert best["valid_hit_rate"] > first["valid_hit_rate"] + 0.05
    assert found.config.lr == best["params"]["lr"] != 1e-6
    assert {t["state"] for t in found.trials} <= {"complete", "pruned"}


@pytest.mark.slow
def test_the_budget_stops_the_running_trial_after_its_epoch(run):
    found = search(run, QUICK, budget_seconds=0.01, tracked=False)
    [trial] = found.trials  # no second trial starts
    assert trial["state"] == "cut" and trial["epochs"] == 1
    assert not math.isnan(trial["valid_hit_rate"])
    assert found.config == QUICK  # the user's own configuration, the only trial


@pytest.mark.slow
def test_srgnn_train_search_logs_its_trials_as_child_runs(run, tmp_path):
    import shutil

    import mlflow

    from srgnn.config import Settings

    folder = tmp_path / "run"
    shutil.copytree(run.path, folder)
    home = tmp_path / "home"
    tracking_uri = Settings(home=home).tracking_uri
    env = {name: value for name, value in os.environ.items()  # not another test's MLflow
           if not name.startswith(("MLFLOW_", "SRGNN_"))}
    env.update(SRGNN_HOME=str(home), MLFLOW_TRACKING_URI=tracking_uri)
    result = subprocess.run(
        [sys.executable, "-m", "srgnn.cli", "train", "--clicks", str(folder / "unused"),
         "--out", str(folder), "--resume", "--epochs", "2", "--hidden-size", "8",
         "--batch-size", "50", "--no-short-fallback", "--no-refit", "--candidates", "srgnn",
         "--search", "10m", "--search-trials", "3"],
        env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    kept = json.loads((folder / "search.json").read_text())
    assert len(kept["trials"]) == 3 and kept["trials"][0]["params"]["hidden_size"] == 8
    trained = json.loads((folder / "training.json").read_text())
    assert trained["search"]["trials"] == 3 and trained["search"]["chosen"] == kept["chosen"]
    client = mlflow.MlflowClient(tracking_uri)
    parent = client.get_run(trained["run_id"])
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{trained['run_id']}'")
    assert sorted(c.data.tags["search.trial"] for c in children) == ["0", "1", "2"]
    assert all("valid_hr_at_20" in c.data.metrics for c in children)  # every epoch it ran
    chosen = kept["chosen"]
    assert parent.data.params["hidden_size"] == str(chosen["hidden_size"])
    assert parent.data.params["lr"] == str(chosen["lr"])
    assert parent.data.metrics["search_trials"] == 3


def test_a_search_without_validation_examples_is_refused_before_any_trial(tmp_path):
    from srgnn.config import SettingError
    from srgnn.training.run import _searched

    splits = synthetic_splits(num_sessions=300, seed=8)
    folder = RunFolder(write_run_folder(tmp_path / "run", {**splits, "valid": []}))
    with pytest.raises(SettingError, match="no validation examples: prepare it with --valid-days"):
        _searched(folder, TrainConfig(search="10m"), resume=False)
