"""Shared fixtures: one local SparkSession for the whole test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from srgnn.config import Settings
    from srgnn.data.spark import get_spark

    home = tmp_path_factory.mktemp("spark-home")
    session = get_spark(Settings(home=home, spark_master="local[2]"), app_name="srgnn-tests",
                        shuffle_partitions=4)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def standalone_cluster(tmp_path_factory):
    """A running Spark standalone cluster (tests/cluster.py): a master and two 1-core workers,
    shared by the tests of this session."""
    from cluster import start_cluster

    try:
        cluster = start_cluster(tmp_path_factory.mktemp("cluster-logs"))
    except FileNotFoundError as missing:
        pytest.skip(f"the installed PySpark has no launcher {missing}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


def write_text(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return os.fspath(path)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server from Debian's package (skipped where it is absent)."""
    from srgnn.warehouse.localpg import PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()
