"""The warehouse's tables as Python sees them, and the checks on what callers want written.

The names of the tables, the Arrow schema of ``recommendations`` (the column order and types
of ``sql/ddl/01_recommendations.sql``), and the functions that validate and normalise the
arguments of a load before anything touches the database: the day, the run description, and
the recommendations as an Arrow table or as Parquet files (whose columns are checked from the
files' footers).
"""

from __future__ import annotations

import datetime as dt
import numbers
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

RECOMMENDATIONS_TABLE = "recommendations"
RUNS_TABLE = "scoring_runs"
STAGING_TABLE = "recommendations_staging"  # per-load: a temp table (Postgres) or an Arrow view
# The only names ever put into SQL text: the `{table}` of a check is one of these.
CHECK_TABLES = frozenset({RECOMMENDATIONS_TABLE, STAGING_TABLE})

# Column order and types of `recommendations` (sql/ddl/01_recommendations.sql) as Arrow.
RECOMMENDATIONS_SCHEMA = pa.schema([
    ("ds", pa.date32()),
    ("session_id", pa.string()),
    ("rank", pa.int32()),
    ("item_id", pa.string()),
    ("score", pa.float64()),
    ("model_name", pa.string()),
    ("model_version", pa.string()),
    ("generated_at", pa.timestamp("us")),  # naive, UTC
])
REQUIRED_COLUMNS = ("session_id", "rank", "item_id", "score")
OPTIONAL_COLUMNS = ("ds", "model_name", "model_version", "generated_at")  # default: the run's
# The counts a run reports (columns of scoring_runs): non-negative ints or None.
RUN_COUNTS = ("sessions_in", "sessions_scored", "fallbacks", "quarantined", "clicks_read",
              "duplicates_dropped", "unknown_clicks", "category_fallbacks")
RUN_KEYS = frozenset({"model_name", "model_version", "started_at", *RUN_COUNTS})


def as_date(value: dt.date | str) -> dt.date:
    """A day given as a date or as 'YYYY-MM-DD' (a datetime is refused: which day would it be?)."""
    if isinstance(value, dt.datetime):
        raise TypeError(f"ds must be a date or 'YYYY-MM-DD', not a datetime ({value!r})")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return dt.date.fromisoformat(value)
    raise ValueError(f"ds must be a date or 'YYYY-MM-DD', got {value!r}")


def utc_naive(value: dt.datetime) -> dt.datetime:
    """The wall time in UTC, without tzinfo (how the tables store timestamps)."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def validate_run(run: Mapping[str, Any], *, need_model: bool = True) -> dict[str, Any]:
    """A copy of the run description with its defaults filled in, or ValueError/TypeError."""
    if not isinstance(run, Mapping):
        raise TypeError(f"run must be a mapping, got {type(run).__name__}")
    unknown = set(run) - RUN_KEYS
    if unknown:
        raise ValueError(f"unknown run key(s) {sorted(unknown)}; known: {sorted(RUN_KEYS)}")
    out = dict(run)
    if need_model and not out.get("model_version"):
        raise ValueError("run['model_version'] is required (e.g. 'srgnn:7')")
    out.setdefault("model_name", "srgnn")
    out.setdefault("model_version", None)
    for key in RUN_COUNTS:
        value = out.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"run[{key!r}] must be a non-negative int, got {value!r}")
        out[key] = int(value)
    if out.get("started_at") is not None:
        if not isinstance(out["started_at"], dt.datetime):
            raise TypeError("run['started_at'] must be a datetime")
        out["started_at"] = utc_naive(out["started_at"])
    return out


def run_row(run_id: str, day: dt.date, run: Mapping[str, Any],
            expected_k: int | None) -> dict[str, Any]:
    """The columns of a ``scoring_runs`` row known before the load: the run id, the day, the
    validated ``run``'s model and counts (missing ones None), ``expected_k``, ``started_at``."""
    return {"run_id": run_id, "ds": day, "model_name": run.get("model_name"),
            "model_version": run.get("model_version"), "expected_k": expected_k,
            "started_at": run.get("started_at"), **{key: run.get(key) for key in RUN_COUNTS}}


def _check_columns(names: list[str], what: str) -> set[str]:
    """The set of ``names`` when they are columns of ``recommendations`` with the required ones
    among them; ValueError otherwise (``what`` names the rows in the message)."""
    present = set(names)
    missing = [c for c in REQUIRED_COLUMNS if c not in present]
    unknown = sorted(present - set(RECOMMENDATIONS_SCHEMA.names))
    if missing or unknown or len(present) != len(names):
        raise ValueError(
            f"{what} columns {names}: missing {missing}, unknown {unknown}; expected "
            f"{list(RECOMMENDATIONS_SCHEMA.names)} (ds, model_name, model_version and "
            f"generated_at are optional)"
        )
    return present


def _cast(values, column: pa.Field):
    """``values`` (an Arrow array) as the type of ``column``, or ValueError."""
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    try:
        if pa.types.is_timestamp(column.type) and pa.types.is_timestamp(values.type):
            # Aware timestamps are stored as UTC wall time; ns are cut to us.
            return pc.cast(values, column.type, safe=False)
        return pc.cast(values, column.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"column {column.name!r} of type {values.type} cannot be "
                         f"stored as {column.type}: {exc}") from exc


def canonical_table(table: pa.Table, day: dt.date, run: Mapping[str, Any], *,
                    generated_at: dt.datetime | None = None,
                    ignore_columns: Iterable[str] = ()) -> pa.Table:
    """``table`` with exactly the columns and types of ``recommendations``.

    Missing optional columns (``ds``, ``model_name``, ``model_version``, ``generated_at``)
    come from ``day`` and the validated ``run`` (``generated_at``: this value, else the run's
    ``started_at``, else now); ``ignore_columns`` are left out; values that the tables cannot
    hold raise ValueError.
    """
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    elif isinstance(table, pa.RecordBatchReader):
        table = table.read_all()
    if not isinstance(table, pa.Table):
        raise TypeError(f"expected a pyarrow.Table, got {type(table).__name__}")
    ignored = [name for name in table.column_names if name in set(ignore_columns)]
    if ignored:
        table = table.drop_columns(ignored)
    names = _check_columns(table.column_names, "recommendation table")
    n = table.num_rows
    generated_at = generated_at or run.get("started_at") or utcnow()
    defaults = {
        "ds": pa.array([day] * n, pa.date32()),
        "model_name": pa.array([run["model_name"]] * n, pa.string()),
        "model_version": pa.array([run["model_version"]] * n, pa.string()),
        "generated_at": pa.array([generated_at] * n, pa.timestamp("us")),
    }
    columns = [_cast(table[column.name], column) if column.name in names
               else defaults[column.name] for column in RECOMMENDATIONS_SCHEMA]
    canonical = pa.Table.from_arrays(columns, schema=RECOMMENDATIONS_SCHEMA)

    if "ds" in names:
        other = pc.sum(pc.cast(pc.not_equal(canonical["ds"], pa.scalar(day, pa.date32())),
                               pa.int64())).as_py()
        if other:
            raise ValueError(other_days_message(other, day))
    for name in TEXT_COLUMNS:
        if n and pc.any(pc.match_substring(canonical[name], "\x00")).as_py():
            raise ValueError(nul_message(name))
    return canonical


TEXT_COLUMNS = ("session_id", "item_id", "model_name", "model_version")


def other_days_message(rows: int, day: dt.date) -> str:
    return f"{rows} row(s) have a ds other than {day.isoformat()}"


def nul_message(column: str) -> str:
    return (f"column {column!r} holds a NUL character, which PostgreSQL text cannot store; "
            "clean the ids before writing")


def parquet_files(source: str | os.PathLike | Iterable[str | os.PathLike], *,
                  allow_empty: bool = False) -> list[Path]:
    """The Parquet files of ``source``: a folder (its ``*.parquet`` files at any depth, as Spark
    writes them, without hidden ``.``/``_`` files such as ``_SUCCESS``) or a list of files.
    ValueError when a file is missing or, unless ``allow_empty``, there is no file at all."""
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.is_dir():
            raise ValueError(f"no folder of Parquet files at {folder}")
        files = sorted(path for path in folder.rglob("*.parquet")
                       if path.is_file() and not path.name.startswith((".", "_")))
        if not files and not allow_empty:
            raise ValueError(f"no Parquet file (*.parquet) in {folder}")
        return files
    files = [Path(path) for path in source]
    if not files:
        raise ValueError("an empty list of Parquet files")
    for path in files:
        if not path.is_file():
            raise ValueError(f"no Parquet file at {path}")
    return files


def parquet_columns(files: list[Path], ignore_columns: Iterable[str] = ()) -> dict[str, pa.DataType]:
    """The columns of ``recommendations`` that the Parquet ``files`` hold, with their Arrow
    types (from the files' footers), or ValueError: a file that is no Parquet, columns that
    differ between files, a required column missing, an unknown one (other than
    ``ignore_columns``), a type the table cannot hold."""
    import pyarrow.parquet as pq

    ignored = set(ignore_columns)
    first, present = None, {}
    for path in files:
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise ValueError(f"{path} is not a readable Parquet file: {exc}") from None
        names = [name for name in schema.names if name not in ignored]
        if first is None:
            first = (path, names)
            _check_columns(names, f"Parquet file {path}:")
            for column in RECOMMENDATIONS_SCHEMA:
                if column.name in names:  # the cast of the type, on no values
                    present[column.name] = schema.field(column.name).type
                    _cast(pa.array([], present[column.name]), column)
        elif set(names) != set(first[1]):
            raise ValueError(f"Parquet files with different columns: {first[0]} has "
                             f"{first[1]}, {path} has {names}")
    return present
