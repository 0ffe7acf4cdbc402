"""The run log's fallback file: failed runs that could not be written to ``scoring_runs``.

A failed scoring run is logged in ``scoring_runs`` after its rollback. When that is not
possible (the warehouse could not be opened at all: a DuckDB file locked past the lock wait,
a PostgreSQL server that does not answer; or the connection died with the load), the same
row is appended as one JSON object per line to a file, by default
``<home>/logs/scoring_runs_failed.jsonl``, so that no attempt goes unrecorded. Each line holds
the columns of ``scoring_runs`` (dates and times as ISO-8601 text, UTC), ``warehouse`` (its
URL, password hidden) and ``not_logged_because`` (why the row is not in the table).

:func:`record_failed_run` completes a failed run's row and :func:`append_failed_run` writes
it (one ``write`` of the whole line, flushed and synced); :func:`read_failed_runs` reads them
back.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from srgnn.warehouse.tables import utcnow

FAILED_RUNS_FILE = Path("logs") / "scoring_runs_failed.jsonl"  # under the project home


def _json_value(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


def append_failed_run(path: str | os.PathLike, row: Mapping[str, Any]) -> Path:
    """Append ``row`` (a ``scoring_runs`` row and notes) to the JSON Lines file ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({key: _json_value(value) for key, value in row.items()},
                      ensure_ascii=False, sort_keys=False) + "\n"
    with open(target, "a", encoding="utf-8") as out:
        out.write(line)
        out.flush()
        os.fsync(out.fileno())
    return target


def record_failed_run(path: str | os.PathLike, row: Mapping[str, Any], *, message: str,
                      warehouse: str, not_logged_because: str) -> Path:
    """Append a failed run to ``path``: ``row`` (the run's ``scoring_runs`` columns known so
    far, from :func:`srgnn.warehouse.tables.run_row`) completed as a failed row, with the
    warehouse's URL (password already hidden) and why the table did not take it."""
    finished = utcnow()
    started = row.get("started_at")
    return append_failed_run(path, {
        **row, "status": "failed", "rows_written": None, "rows_replaced": None,
        "duration_seconds": (finished - started).total_seconds() if started else None,
        "finished_at": finished, "message": message, "warehouse": warehouse,
        "not_logged_because": not_logged_because})


def read_failed_runs(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of the file ``path`` (none when it does not exist), oldest first."""
    target = Path(path)
    if not target.exists():
        return []
    with open(target, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]
