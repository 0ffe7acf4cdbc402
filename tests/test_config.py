"""The one settings table (srgnn.config): precedence, parsing, and everything built from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from srgnn import config
from srgnn.cli import cli
from srgnn.config import Deployment, PrepareConfig, ScoreConfig, Settings, TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def test_flag_beats_variable_beats_default():
    environ = {"SRGNN_EPOCHS": "7", "SRGNN_LR": "0.01"}
    assert config.from_env(TrainConfig, environ).epochs == 7
    assert config.from_env(TrainConfig, environ, epochs=3).epochs == 3
    assert config.from_env(TrainConfig, {}).epochs == 30
    assert config.from_env(TrainConfig, environ).lr == 0.01
    assert config.from_env(TrainConfig, {"SRGNN_EPOCHS": "  "}).epochs == 30  # empty = unset


def test_values_are_parsed_by_type():
    environ = {"SRGNN_NONHYBRID": "yes", "SRGNN_SHORT_FALLBACK": "off",
               "SRGNN_MAX_EXAMPLES_PER_EPOCH": "none", "SRGNN_HOME": "/data/srgnn"}
    train = config.from_env(TrainConfig, environ)
    assert train.nonhybrid is True and train.short_fallback is False
    assert train.max_examples_per_epoch is None
    assert Settings.from_env(environ).home == Path("/data/srgnn")
    assert Deployment.from_env({"SRGNN_TASK_RETRIES": "0"}).task_retries == 0


@pytest.mark.parametrize("variable, value, message", [
    ("SRGNN_EPOCHS", "ten", "SRGNN_EPOCHS must be an integer, not 'ten'"),
    ("SRGNN_LR", "fast", "SRGNN_LR must be a number"),
    ("SRGNN_NONHYBRID", "maybe", "SRGNN_NONHYBRID must be true or false"),
    ("SRGNN_PRECISION", "half", "SRGNN_PRECISION must be one of auto, float32, bfloat16"),
    ("SRGNN_EPOCHS", "0", "SRGNN_EPOCHS must be at least 1"),
])
def test_a_bad_variable_is_one_sentence_naming_it(variable, value, message):
    with pytest.raises(config.SettingError, match=message):
        config.from_env(TrainConfig, {variable: value})


def test_the_dataclass_checks_combinations_too():
    with pytest.raises(config.SettingError, match="SRGNN_LR_DECAY_RATE must be in \\(0, 1\\]"):
        config.from_env(TrainConfig, {"SRGNN_LR_DECAY_RATE": "1.5"})
    with pytest.raises(config.SettingError, match="popularity_penalty needs the full softmax"):
        config.from_env(TrainConfig, {"SRGNN_POPULARITY_PENALTY": "0.1", "SRGNN_SOFTMAX": "sampled"})


def test_every_variable_is_distinct_and_named_after_srgnn():
    variables = [opt.env for cls in config.TABLES for opt in config.options(cls) if opt.env]
    assert len(variables) == len(set(variables))
    assert all(v.startswith("SRGNN_") or v == "MLFLOW_TRACKING_URI" for v in variables)


def test_the_readme_lists_every_setting_as_the_code_has_it():
    assert config.markdown_table() in (ROOT / "README.md").read_text()
    printed = subprocess.run([sys.executable, "-m", "srgnn.config"], capture_output=True, text=True,
                             check=True).stdout
    assert printed.strip() == config.markdown_table()


def test_command_line_flags_come_from_the_table(monkeypatch):
    runner = CliRunner()
    help_text = runner.invoke(cli, ["train", "--help"], terminal_width=200).output
    for cls in (PrepareConfig, TrainConfig):
        for opt in config.options(cls):
            if opt.cli:
                assert opt.flag in help_text or f"--{opt.name.replace('_', '-')}/" in help_text, opt.name
                if opt.env:
                    assert opt.env in help_text, opt.env
    score_help = runner.invoke(cli, ["score", "--help"], terminal_width=200).output
    assert "--model" in score_help and "SRGNN_MODEL_URI" in score_help
    assert "--top-k" in score_help and str(ScoreConfig().top_k) in score_help


def test_a_bad_variable_stops_a_command_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SRGNN_EPOCHS", "ten")
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "train", "--clicks", str(tmp_path)])
    assert result.exit_code != 0
    assert "SRGNN_EPOCHS must be an integer, not 'ten'" in result.output
    assert "Traceback" not in result.output
