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


def config_dict(config) -> dict:
    """A flat, JSON-friendly dict of a config dataclass (used for MLflow params and summaries)."""
    out = {}
    for f in fields(config):
        value = getattr(config, f.name)
        out[f.name] = str(value) if isinstance(value, Path) else value
    return out


__all__ = ["Settings", "PrepareConfig", "config_dict", "asdict", "field"]
