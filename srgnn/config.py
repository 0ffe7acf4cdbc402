"""Configuration objects: one place where defaults, environment variables and flags meet.

Every setting a user may change has a field here. The command line builds these objects
(flags win over ``SRGNN_*`` environment variables, which win over the defaults) and passes
them down; library functions take them as arguments and never read the environment
themselves. Creating a config has no side effects (no folders are created).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    """Where things live. Embedded defaults keep everything under one home folder."""

    home: Path = Path("var")  # project home ($SRGNN_HOME): runs, MLflow store, warehouse
    mlflow_tracking_uri: str | None = None  # $MLFLOW_TRACKING_URI; default sqlite:///<home>/mlflow.db
    warehouse_url: str | None = None  # $SRGNN_WAREHOUSE_URL; default duckdb:///<home>/warehouse.duckdb
    spark_master: str = "local[*]"  # $SRGNN_SPARK_MASTER (spark://host:7077, yarn, k8s://...)
    spark_driver_memory: str = "2g"  # $SRGNN_SPARK_DRIVER_MEMORY

    def __post_init__(self) -> None:
        if not isinstance(self.home, Path):
            object.__setattr__(self, "home", Path(self.home))

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        values = {
            "home": Path(_env("SRGNN_HOME", "var")),
            "mlflow_tracking_uri": _env("MLFLOW_TRACKING_URI"),
            "warehouse_url": _env("SRGNN_WAREHOUSE_URL"),
            "spark_master": _env("SRGNN_SPARK_MASTER", "local[*]"),
            "spark_driver_memory": _env("SRGNN_SPARK_DRIVER_MEMORY", "2g"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["home"] = Path(values["home"])
        return cls(**values)

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> str:
        return (self.home / "mlartifacts").resolve().as_uri()

    @property
    def warehouse(self) -> str:
        if self.warehouse_url:
            return self.warehouse_url
        return f"duckdb:///{(self.home / 'warehouse.duckdb').resolve()}"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"


@dataclass(frozen=True)
class PrepareConfig:
    """Sessionisation, filtering and split settings (reference SR-GNN preprocessing)."""

    min_item_support: int = 5  # drop items with fewer clicks than this (over all days)
    min_session_length: int = 2  # sessions shorter than this are dropped (before and after the item filter)
    test_days: int = 7  # test = sessions whose last click falls in the last N days (0 = none)
    valid_days: int = 7  # validation = sessions ending in the N days before the test window (0 = none)

    def __post_init__(self) -> None:
        if self.min_item_support < 1:
            raise ValueError("min_item_support must be at least 1.")
        if self.min_session_length < 2:
            raise ValueError("min_session_length must be at least 2 (a session needs a next item).")
        if self.test_days < 0 or self.valid_days < 0:
            raise ValueError("test_days and valid_days must be non-negative.")


# Arithmetic choices of training (TrainConfig.precision) and scoring (srgnn.predict.Scorer):
# "auto" resolves to bfloat16 where the CPU multiplies it natively, float32 elsewhere.
PRECISIONS = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting, with the SR-GNN paper's values as defaults."""

    hidden_size: int = 100  # d: item embedding and node state width
    steps: int = 1  # propagation steps of the gated graph cell
    nonhybrid: bool = False  # True: session embedding from attention only (no last-click term)
    batch_size: int = 100  # training examples per optimizer step
    lr: float = 0.001  # Adam learning rate
    lr_decay_step: int = 3  # multiply the learning rate by lr_decay_rate every this many epochs
    lr_decay_rate: float = 0.1  # step decay factor
    l2: float = 1e-5  # L2 penalty (Adam weight_decay, added to the gradient as in the reference)
    epochs: int = 30  # upper bound on training epochs
    patience: int = 5  # stop after this many epochs without a better validation HR@top_k
    top_k: int = 20  # K of the validation metrics HR@K and MRR@K (HR@K selects the epoch)
    seed: int = 2019  # seeds the initial weights and the shuffling of every epoch
    num_threads: int = 0  # torch CPU threads; 0 = all usable cores (fewer can win on a busy machine)
    max_examples_per_epoch: int | None = None  # cap on training examples per epoch (quick runs)
    max_valid_examples: int | None = None  # cap on validation examples (quick runs); None = all
    eval_batch_size: int = 500  # examples per batch when scoring the validation split
    shuffle_buffer: int = 1_000_000  # rows shuffled together (~150 B each); covers a Diginetica-size split whole
    progress: bool = True  # show a tqdm progress bar per epoch
    short_fallback: bool = True  # item-KNN for 1-3 click sessions where validation by length shows it better
    # Operands of the loss's catalogue products: "float32", "bfloat16" (float32 accumulation,
    # softmax and parameters), or "auto" = bfloat16 where the CPU multiplies it natively.
    precision: str = "auto"

    def __post_init__(self) -> None:
        positive = ("hidden_size", "steps", "batch_size", "lr_decay_step", "epochs", "patience",
                    "top_k", "eval_batch_size", "shuffle_buffer")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}.")
        if not 0 < self.lr_decay_rate <= 1:
            raise ValueError(f"lr_decay_rate must be in (0, 1], got {self.lr_decay_rate}.")
        if self.l2 < 0:
            raise ValueError(f"l2 must be non-negative, got {self.l2}.")
        if self.num_threads < 0:
            raise ValueError(
                f"num_threads must be 0 (all cores) or positive, got {self.num_threads}."
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}."
            )
        for name in ("max_examples_per_epoch", "max_valid_examples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive integer or None, got {value}.")

    def model_config(self, num_items: int):
        """The :class:`srgnn.model.ModelConfig` of this config for ``num_items`` items."""
        from .model import ModelConfig

        return ModelConfig(
            num_items=num_items,
            hidden_size=self.hidden_size,
            steps=self.steps,
            nonhybrid=self.nonhybrid,
        )

    def training_precision(self) -> str:
        """``precision`` with "auto" resolved for this machine: "bfloat16" or "float32"."""
        if self.precision != "auto":
            return self.precision
        from .predict import native_bfloat16

        return "bfloat16" if native_bfloat16() else "float32"

    def threads(self) -> int:
        """The number of torch threads this config asks for (0 resolved to all usable cores)."""
        if self.num_threads:
            return self.num_threads
        if hasattr(os, "sched_getaffinity"):
            return len(os.sched_getaffinity(0))
        return os.cpu_count() or 1


def config_dict(config) -> dict:
    """A flat, JSON-friendly dict of a config dataclass (used for MLflow params and summaries)."""
    out = {}
    for f in fields(config):
        value = getattr(config, f.name)
        out[f.name] = str(value) if isinstance(value, Path) else value
    return out


__all__ = ["Settings", "PrepareConfig", "TrainConfig", "config_dict", "asdict", "field"]
