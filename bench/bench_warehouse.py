"""Benchmark of the warehouse load: how long replacing one day takes on DuckDB and PostgreSQL.

Builds a synthetic day (sessions x K rows), writes it once into an empty day and once over
itself (the nightly rerun case), and runs the downstream queries. Prints one table row per
engine. Not run by CI.

    .venv/bin/python bench/bench_warehouse.py --sessions 50000 --top-k 20
    .venv/bin/python bench/bench_warehouse.py --postgres-url postgresql+psycopg://u:p@host/db

Without --postgres-url, a throwaway server is started from the installed PostgreSQL binaries
(:mod:`srgnn.warehouse.localpg`); without those, only DuckDB is measured.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from common import machine, text_table
from srgnn.warehouse import Warehouse

DAY = "2024-05-01"


def synthetic_day(sessions: int, top_k: int, items: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    # Distinct items per session: the first top_k of a random offset into a shuffled catalogue.
    catalogue = rng.permutation(items)
    offsets = rng.integers(0, items, size=sessions)
    picks = catalogue[(offsets[:, None] + np.arange(top_k)[None, :]) % items]  # (S, K)
    scores = -np.sort(-rng.random((sessions, top_k)), axis=1)  # non-increasing per row
    return pa.table({
        "session_id": pa.array(np.repeat(np.arange(sessions), top_k).astype(str)),
        "rank": pa.array(np.tile(np.arange(1, top_k + 1, dtype=np.int32), sessions)),
        "item_id": pa.array(picks.ravel().astype(str)),
        "score": pa.array(scores.ravel()),
    })


def measure(url: str, table: pa.Table, top_k: int) -> dict[str, float]:
    timings = {}
    with Warehouse.connect(url) as warehouse:
        run = {"model_version": "srgnn:bench"}
        start = time.perf_counter()
        warehouse.replace_day(DAY, table, expected_k=top_k, run=run)
        timings["first load s"] = time.perf_counter() - start
        start = time.perf_counter()
        result = warehouse.replace_day(DAY, table, expected_k=top_k, run=run)
        timings["rerun s"] = time.perf_counter() - start
        assert result.rows_replaced == result.rows_written == table.num_rows
        start = time.perf_counter()
        warehouse.run_query("top_items", ds=DAY, limit=100)
        warehouse.run_query("coverage_by_day", start_ds=DAY, end_ds=DAY)
        warehouse.run_query("session_recommendations", ds=DAY, session_id="123")
        timings["3 queries s"] = time.perf_counter() - start
    timings["rows/s (rerun)"] = table.num_rows / timings["rerun s"]
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50_000)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--items", type=int, default=40_000)
    parser.add_argument("--postgres-url", default=None)
    args = parser.parse_args()

    table = synthetic_day(args.sessions, args.top_k, args.items)
    print(f"{table.num_rows:,} rows ({args.sessions:,} sessions x K={args.top_k}); {machine()}")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        results["duckdb"] = measure(f"duckdb:///{Path(folder) / 'bench.duckdb'}", table, args.top_k)

    server = None
    url = args.postgres_url
    if url is None:
        from srgnn.warehouse.localpg import PostgresServer, PostgresUnavailable

        try:
            server = PostgresServer.start()
            url = server.create_database("bench")
        except PostgresUnavailable as exc:
            print(f"postgresql skipped: {exc}")
    try:
        if url:
            results["postgresql"] = measure(url, table, args.top_k)
    finally:
        if server is not None:
            server.stop()

    columns = list(next(iter(results.values())))
    print(text_table(["engine", *columns], [
        [engine, *(f"{timings[c]:,.0f}" if c.startswith("rows/s") else f"{timings[c]:.2f}"
                   for c in columns)]
        for engine, timings in results.items()]))


if __name__ == "__main__":
    main()
