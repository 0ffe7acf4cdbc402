"""The warehouse: the ``recommendations`` table, the ``scoring_runs`` log and their queries.

One API over two engines, chosen by the URL (see :mod:`srgnn.warehouse.urls`): a DuckDB file
(the embedded default) or PostgreSQL. This module holds the :class:`Warehouse` itself and its
results; the errors are in :mod:`srgnn.warehouse.errors`, the engines in
:mod:`srgnn.warehouse.engines`, the bounded lock wait in :mod:`srgnn.warehouse.locks`, the SQL
files and their compilation in :mod:`srgnn.warehouse.sqlfiles`, the table definitions and
input checks in :mod:`srgnn.warehouse.tables`, the fallback file of failed runs in
:mod:`srgnn.warehouse.runlog`.

Opening waits for a lock another process holds (a DuckDB file is opened by one writer at a
time; see :mod:`srgnn.warehouse.locks`) for at most ``lock_wait_seconds``, then raises
:class:`WarehouseLocked`; a warehouse that cannot be opened at all raises
:class:`WarehouseUnavailable`. Both are one line naming the URL with its password hidden.

All SQL lives in ``sql/`` (``ddl/``, ``checks/``, ``queries/``, ``load/``, ``session/``), one
statement per file, with ``:name`` parameters whose values are always bound.

A day is written by :meth:`Warehouse.replace_day` in one transaction: stage the Arrow table
or the Parquet files (DuckDB scans the table in place and reads the files itself; PostgreSQL
receives the rows with ``COPY ... FROM STDIN`` into a temporary table, file by file and batch
by batch), run every check on the staged rows, delete the day, insert the staged rows,
append to the run log, commit. Any error rolls everything back, so a rerun never duplicates a
day and a crash never leaves half of one; the failed attempt is then logged in
``scoring_runs``, or in the ``failed_runs`` file when the table cannot be written. Example::

    from srgnn.warehouse import Warehouse

    with Warehouse.connect("duckdb:///var/warehouse.duckdb") as warehouse:
        result = warehouse.replace_day("2024-05-01", recommendations, expected_k=20,
                                       run={"model_name": "srgnn", "model_version": "srgnn:7"})
        top = warehouse.run_query("top_items", ds="2024-05-01", limit=10)
"""

from __future__ import annotations

import datetime as dt
import logging
import numbers
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from srgnn.config import Settings
from srgnn.warehouse.engines import Engine, driver_errors, open_engine
from srgnn.warehouse.errors import (DataQualityError, WarehouseError, WarehouseLoadError,
                                    WarehouseLocked, WarehouseUnavailable, first_line)
from srgnn.warehouse.runlog import record_failed_run
from srgnn.warehouse.sqlfiles import (DEFAULT_SQL_DIR, NAME, SqlFiles, compile_sql,
                                      fill_placeholders, quote_identifier)
from srgnn.warehouse.tables import (CHECK_TABLES, RECOMMENDATIONS_SCHEMA, RECOMMENDATIONS_TABLE,
                                    RUNS_TABLE, STAGING_TABLE, as_date, canonical_table,
                                    parquet_columns, parquet_files, run_row, utcnow,
                                    validate_run)
from srgnn.warehouse.urls import WarehouseURL, hide_secrets, redact_url

log = logging.getLogger(__name__)

_SHOWN_VIOLATIONS = 5
# How long opening (and loading) waits for a lock another process holds, unless told otherwise.
DEFAULT_LOCK_WAIT_SECONDS = Settings().warehouse_lock_wait_seconds


@dataclass(frozen=True)
class LoadResult:
    """What :meth:`Warehouse.replace_day` did."""

    run_id: str  # key of the run's row in scoring_runs
    ds: dt.date
    rows_written: int  # rows stored for the day now
    rows_replaced: int  # rows of the previous version of the day, now gone
    sessions_scored: int
    checks: tuple[str, ...]  # the data-quality checks that passed
    duration_seconds: float  # of the load itself (staging to commit)


@dataclass(frozen=True)
class QueryResult:
    """Rows of a named query, as tuples, with their column names."""

    columns: tuple[str, ...]
    rows: list[tuple] = field(default_factory=list)

    def to_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row)) for row in self.rows]


class Warehouse:
    """A connection to the warehouse. Use :meth:`connect`, preferably as a context manager."""

    def __init__(self, engine: Engine, url: str, sql_dir: Path,
                 failed_runs: Path | None = None):
        self._engine = engine
        self.url = redact_url(url)
        self.sql_dir = sql_dir
        self.failed_runs = failed_runs  # JSON Lines file for failed runs scoring_runs missed
        self.failure_logged = False  # the last failed load was recorded (table or file)
        self._sql = SqlFiles(sql_dir, engine.dialect)  # ddl/, checks/, queries/
        self._own_sql = SqlFiles(DEFAULT_SQL_DIR, engine.dialect)  # load/: always the package's

    @classmethod
    def connect(cls, url: str | os.PathLike, *, read_only: bool = False,
                sql_dir: str | os.PathLike | None = None,
                lock_wait_seconds: float = DEFAULT_LOCK_WAIT_SECONDS,
                failed_runs: str | os.PathLike | None = None) -> "Warehouse":
        """Open the warehouse at ``url`` and, unless ``read_only``, apply the DDL.

        ``sql_dir`` replaces the package's ``ddl/``, ``checks/`` and ``queries/`` folders
        with those of another folder; the statements of a load stay the package's.
        A lock held by another process is waited for up to ``lock_wait_seconds`` (then
        :class:`WarehouseLocked`); a warehouse that cannot be opened raises
        :class:`WarehouseUnavailable`; a URL the warehouse cannot serve, ValueError. A failed
        load whose row cannot be written to ``scoring_runs`` is appended to the JSON Lines
        file ``failed_runs`` when one is given (:mod:`srgnn.warehouse.runlog`).
        """
        parsed = WarehouseURL.parse(url)
        sql_path = Path(sql_dir) if sql_dir is not None else DEFAULT_SQL_DIR
        if not (sql_path / "ddl").is_dir():
            raise FileNotFoundError(f"no ddl/ folder under {sql_path} (pass sql_dir=)")
        shown = redact_url(url)
        try:
            engine = open_engine(parsed, read_only, SqlFiles(DEFAULT_SQL_DIR, parsed.dialect),
                                 lock_wait_seconds)
        except WarehouseError:
            raise
        except (OSError, *driver_errors(parsed.dialect)) as exc:
            raise WarehouseUnavailable(f"cannot open the warehouse {shown}: "
                                       f"{hide_secrets(first_line(exc), url)}") from exc
        warehouse = cls(engine, os.fspath(url), sql_path,
                        Path(failed_runs) if failed_runs is not None else None)
        try:
            if not read_only:
                warehouse.ensure_schema()
        except BaseException as exc:
            warehouse.close()
            if isinstance(exc, engine.driver_errors):
                raise WarehouseUnavailable(
                    f"cannot apply the schema (sql/ddl) to the warehouse {shown}: "
                    f"{hide_secrets(first_line(exc), url)}") from exc
            raise
        return warehouse

    @property
    def dialect(self) -> str:
        return self._engine.dialect

    def __repr__(self) -> str:
        return f"Warehouse({self.url!r})"

    def __enter__(self) -> "Warehouse":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._engine.close()

    # -- SQL plumbing ----------------------------------------------------------------------
    def _execute(self, sql: str, params: Mapping[str, Any] | None = None,
                 placeholders: Mapping[str, str] | None = None) -> QueryResult:
        """Run one statement of portable SQL (``:name`` parameters) with ``params`` bound."""
        statement = compile_sql(sql, self.dialect, placeholders)
        columns, rows = self._engine.execute(statement, params or {})
        return QueryResult(columns, rows)

    def _load_sql(self, name: str, params: Mapping[str, Any] | None = None,
                  placeholders: Mapping[str, str] | None = None) -> QueryResult:
        """Run the statement of ``sql/load/<name>.sql``."""
        return self._execute(self._own_sql.read("load", name), params, placeholders)

    def ensure_schema(self) -> None:
        """Apply ``sql/ddl/*.sql`` in name order (idempotent: ``IF NOT EXISTS``)."""
        files = self._sql.files("ddl")
        if not files:
            raise FileNotFoundError(f"no DDL files in {self.sql_dir / 'ddl'}")

        def apply(timeout: float) -> None:
            with self._engine.transaction():
                self._engine.set_lock_timeout(timeout)  # PostgreSQL: per try, then again
                for path in files.values():
                    self._execute(path.read_text())

        self._engine.waiting(f"the tables of the warehouse {self.url} (to apply sql/ddl)", apply)

    # -- queries ---------------------------------------------------------------------------
    def list_queries(self) -> list[str]:
        """Names of the queries in ``sql/queries/``."""
        return self._sql.names("queries")

    def run_query(self, name: str, **params: Any) -> QueryResult:
        """Run the query ``sql/queries/<name>.sql`` with its ``:name`` parameters bound."""
        files = self._sql.files("queries")
        if not NAME.match(name) or name not in files:
            raise ValueError(f"unknown query {name!r}; available: {', '.join(files)}")
        sql = files[name].read_text()
        wanted = set(compile_sql(sql, self.dialect).params)
        if set(params) != wanted:
            raise ValueError(
                f"query {name!r} takes parameters {sorted(wanted)}, got {sorted(params)}"
            )
        return self._execute(sql, params)

    # -- data-quality checks ---------------------------------------------------------------
    def list_checks(self) -> list[str]:
        """Names of the data-quality checks in ``sql/checks/``."""
        return self._sql.names("checks")

    def _run_checks(self, table: str, ds: dt.date, expected_k: int,
                    expected_rows: int) -> tuple[str, ...]:
        identifiers = {"table": quote_identifier(table, CHECK_TABLES)}
        params = {"ds": ds, "expected_k": expected_k, "expected_rows": expected_rows,
                  "limit": _SHOWN_VIOLATIONS}
        names = []
        for name, path in self._sql.files("checks").items():
            check = {"check": fill_placeholders(path.read_text(), identifiers)}
            found = self._load_sql("check_sample", params, check)
            if found.rows:
                total = self._load_sql("check_total", params, check).rows[0][0]
                raise DataQualityError(name, ds, found.columns, found.rows, total,
                                       during_load=table == STAGING_TABLE)
            names.append(name)
        return tuple(names)

    def check_day(self, ds: dt.date | str, expected_k: int,
                  expected_rows: int | None = None) -> tuple[str, ...]:
        """Run the checks on a stored day; raise :class:`DataQualityError` or return their names.

        ``expected_rows`` defaults to (sessions stored for the day) x ``expected_k``.
        """
        day = as_date(ds)
        if expected_rows is None:
            sessions = self._load_sql("count_sessions", {"ds": day}).rows[0][0]
            expected_rows = sessions * expected_k
        return self._run_checks(RECOMMENDATIONS_TABLE, day, expected_k, expected_rows)

    # -- loading a day ---------------------------------------------------------------------
    def replace_day(self, ds: dt.date | str, table: pa.Table | str | os.PathLike | Iterable,
                    expected_k: int, run: Mapping[str, Any], *, expected_rows: int | None = None,
                    ignore_columns: Iterable[str] = ()) -> LoadResult:
        """Replace the recommendations of day ``ds`` with ``table``, atomically.

        ``table`` is an Arrow table, or Parquet files: a folder (its ``*.parquet`` files, as
        Spark writes them) or a list of files, which are never read into memory whole (DuckDB
        reads them itself; PostgreSQL receives them batch by batch). It has the columns
        ``session_id, rank, item_id, score`` and may add ``ds`` (must
        equal ``ds``), ``model_name``, ``model_version`` (per row, e.g. 'fallback:pop') and
        ``generated_at``; missing ones come from ``run``; ``ignore_columns`` are other
        columns it may hold, which are not loaded. ``expected_k`` is the number of rows
        every session must have: min(top_k, catalogue size). ``run`` describes the scoring
        run for the log: ``model_version`` (required), ``model_name`` (default 'srgnn'),
        ``sessions_in``, ``sessions_scored`` (default: distinct sessions in ``table``),
        ``fallbacks``, ``quarantined``, ``started_at`` (also the rows' default
        ``generated_at``). ``expected_rows`` defaults to ``sessions_scored * expected_k``.

        ``run`` may also give ``clicks_read``, ``duplicates_dropped``, ``unknown_clicks`` and
        ``category_fallbacks``.

        In one transaction: stage, run ``sql/checks``, delete the day, insert, log the run.
        A failed check raises :class:`DataQualityError`, the table lock of another load held
        past the lock wait :class:`WarehouseLocked`, an error of the database
        :class:`WarehouseLoadError`; on any error the transaction is rolled back (the previous
        version of the day stays whole) and a 'failed' row is appended to ``scoring_runs``
        afterwards (or to the ``failed_runs`` file when that fails). Bad arguments (columns,
        types, values the table cannot hold) raise ValueError.
        """
        day = as_date(ds)
        if (isinstance(expected_k, bool) or not isinstance(expected_k, numbers.Integral)
                or expected_k < 0):
            raise ValueError(f"expected_k must be a non-negative int, got {expected_k!r}")
        expected_k = int(expected_k)
        run = validate_run(run)
        ignore_columns = tuple(ignore_columns)
        generated_at = run.get("started_at") or utcnow()  # one value for every batch
        if isinstance(table, (pa.Table, pa.RecordBatch, pa.RecordBatchReader)):
            files = None
            rows = canonical_table(table, day, run, generated_at=generated_at,
                                   ignore_columns=ignore_columns)
        else:
            files = parquet_files(table)
            present = parquet_columns(files, ignore_columns)
        sessions_scored = run.get("sessions_scored")
        if sessions_scored is None and files is None:
            sessions_scored = pc.count_distinct(rows["session_id"]).as_py()

        run_id = uuid.uuid4().hex
        log_row = {**run_row(run_id, day, run, expected_k), "sessions_scored": sessions_scored}
        clock = time.monotonic()
        try:
            with self._engine.transaction():
                if files is None:
                    self._engine.stage(rows)
                else:
                    self._engine.stage_files(files, present, day, run, generated_at)
                    if sessions_scored is None:
                        sessions_scored = self._load_sql("count_staged_sessions").rows[0][0]
                        log_row["sessions_scored"] = sessions_scored
                self._engine.lock_for_load()
                checks = self._run_checks(STAGING_TABLE, day, expected_k,
                                          sessions_scored * expected_k
                                          if expected_rows is None else expected_rows)
                rows_replaced = self._delete_day(day)
                self._insert_day(day)
                rows_written = self._count_day(day)
                self._append_run(log_row, status="succeeded", rows_written=rows_written,
                                 rows_replaced=rows_replaced, clock=clock)
        except BaseException as error:
            self._log_failure(log_row, error, clock)
            if isinstance(error, self._engine.driver_errors):
                raise WarehouseLoadError(
                    f"loading ds={day.isoformat()} into the warehouse {self.url} failed and was "
                    f"rolled back (the stored day is unchanged): {first_line(error)}") from error
            raise
        finally:
            self._engine.unstage()
        duration = time.monotonic() - clock
        log.info("wrote %d recommendation rows for %s (%d replaced) in %.1f s",
                 rows_written, day, rows_replaced, duration)
        return LoadResult(run_id, day, rows_written, rows_replaced, sessions_scored, checks,
                          duration)

    # The steps of a load, separate so that tests can make one of them fail.
    def _delete_day(self, day: dt.date) -> int:
        replaced = self._count_day(day)
        self._load_sql("delete_day", {"ds": day})
        return replaced

    def _insert_day(self, day: dt.date) -> None:
        self._load_sql("insert_day", {"ds": day})

    def _count_day(self, day: dt.date) -> int:
        return self._load_sql("count_day", {"ds": day}).rows[0][0]

    def _append_run(self, row: Mapping[str, Any], *, status: str, rows_written: int | None,
                    rows_replaced: int | None, clock: float, message: str | None = None) -> None:
        finished_at = utcnow()
        started_at = row.get("started_at")
        if started_at is not None:
            duration = (finished_at - started_at).total_seconds()
        else:
            duration = time.monotonic() - clock
        values = {**row, "status": status, "rows_written": rows_written,
                  "rows_replaced": rows_replaced, "duration_seconds": duration,
                  "finished_at": finished_at, "message": message}
        self._load_sql("insert_run", values)

    def _log_failure(self, row: Mapping[str, Any], error: BaseException, clock: float) -> None:
        """Record a failed load in scoring_runs, else in the ``failed_runs`` file; never raises
        (the load's own error is what the caller must see)."""
        message = f"{type(error).__name__}: {error}"[:4000]
        self.failure_logged = False
        try:
            with self._engine.transaction():
                self._append_run(row, status="failed", rows_written=None, rows_replaced=None,
                                 clock=clock, message=message)
            self.failure_logged = True
            return
        except Exception as failure:  # the connection may be what failed; keep the first error
            reason = first_line(failure)
        if self.failed_runs is None:
            log.warning("could not record the failed run in %s: %s", RUNS_TABLE, reason)
            return
        try:
            path = record_failed_run(self.failed_runs, row, message=message, warehouse=self.url,
                                     not_logged_because=reason)
        except OSError:
            log.warning("could not record the failed run in %s (%s) nor in %s", RUNS_TABLE,
                        reason, self.failed_runs, exc_info=True)
            return
        self.failure_logged = True
        log.warning("could not record the failed run in %s (%s); recorded in %s instead",
                    RUNS_TABLE, reason, path)

    def log_run(self, ds: dt.date | str, run: Mapping[str, Any], *, status: str,
                rows_written: int | None = None, message: str | None = None) -> str:
        """Append a row to ``scoring_runs`` for a run that wrote nothing through
        :meth:`replace_day` (e.g. skipped, or failed before scoring). Returns its run id."""
        if not NAME.match(status):
            raise ValueError(f"status must be a short lowercase word, got {status!r}")
        run = validate_run(run, need_model=False)
        row = run_row(uuid.uuid4().hex, as_date(ds), run, expected_k=None)
        with self._engine.transaction():
            self._append_run(row, status=status, rows_written=rows_written, rows_replaced=None,
                             clock=time.monotonic(), message=message)
        return row["run_id"]


__all__ = [
    "DEFAULT_LOCK_WAIT_SECONDS", "DataQualityError", "LoadResult", "QueryResult",
    "RECOMMENDATIONS_SCHEMA", "Warehouse", "WarehouseError", "WarehouseLoadError",
    "WarehouseLocked", "WarehouseURL", "WarehouseUnavailable", "redact_url",
]
