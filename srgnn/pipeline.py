"""Pipeline steps: what each Airflow task (and each CLI command) calls, one function a step.

Every step takes plain JSON-able arguments, reads its settings (home folder, MLflow URI,
warehouse URL, Spark master) from the environment through :class:`srgnn.config.Settings`,
and returns a JSON-able dict: paths, URIs and counts travel between tasks, never data.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import PrepareConfig, Settings


def _write_json(run_dir: str, name: str, payload: dict) -> None:
    """Keep a step's result beside the run's data (local run folders only)."""
    if "://" not in run_dir:
        Path(run_dir, name).write_text(json.dumps(payload, indent=2, default=str) + "\n")


def prepare_step(clicks: str, fmt: str = "auto", out_dir: str | None = None,
                 min_item_support: int | None = None, test_days: int | None = None,
                 valid_days: int | None = None) -> dict:
    """Raw clicks -> session graphs with Spark. Returns ``{"run_dir", "summary"}``."""
    from .prepare import default_out_dir, run_prepare
    from .spark import get_spark

    settings = Settings.from_env()
    defaults = PrepareConfig()
    config = PrepareConfig(
        min_item_support=defaults.min_item_support if min_item_support is None else min_item_support,
        test_days=defaults.test_days if test_days is None else test_days,
        valid_days=defaults.valid_days if valid_days is None else valid_days,
    )
    out_dir = out_dir or default_out_dir(settings.home)
    spark = get_spark(settings, app_name="srgnn-prepare")
    result = run_prepare(spark, clicks, out_dir, config, fmt)
    return {"run_dir": result.out_dir, "summary": result.summary}


def train_step(run_dir: str, epochs: int | None = None, refit: bool = False, **overrides) -> dict:
    """Train SR-GNN on a prepared run, log it to MLflow, register it and run the champion gate.

    ``overrides`` are :class:`srgnn.train.TrainConfig` fields (``hidden_size``, ``lr``, ...);
    ``refit``: see :func:`srgnn.training_run.run_training`.
    Returns ``{"run_id", "version", "model_uri", "metrics", "promoted", ...}``.
    """
    from .config import TrainConfig
    from .training_run import run_training

    settings = Settings.from_env()
    if epochs is not None:
        overrides["epochs"] = epochs
    overrides.setdefault("progress", False)
    result = run_training(settings, run_dir, TrainConfig(**overrides), refit=refit)
    _write_json(run_dir, "training.json", result)
    return result


def evaluate_step(run_dir: str, model_uri: str | None = None) -> dict:
    """SR-GNN (default: the champion) and the baselines on the run's test split."""
    from .training_run import evaluate_run

    results, table = evaluate_run(Settings.from_env(), run_dir, model_uri=model_uri)
    out = {"run_dir": run_dir, "model_uri": model_uri, "results": results, "table": table}
    _write_json(run_dir, "evaluation.json", out)
    if "://" not in run_dir:
        Path(run_dir, "evaluation.txt").write_text(table + "\n")
    return out


def score_step(clicks: str, ds: str, model_uri: str | None = None, top_k: int = 20,
               engine: str = "local", fmt: str = "auto") -> dict:
    """Score the day ``ds`` into the warehouse (replaces that day atomically)."""
    from .score import score_day

    return score_day(Settings.from_env(), clicks, ds, model_uri=model_uri, top_k=top_k, engine=engine, fmt=fmt)
