"""Connections to the two engines: the small part of the warehouse that differs between them.

An engine runs a compiled :class:`~srgnn.warehouse.sqlfiles.Statement` with its values bound
in the driver's style, opens a transaction, stages the rows of a load under the name
``recommendations_staging`` and takes the lock that serialises loads:

- :class:`DuckDBEngine` (``duckdb``): the staged Arrow table is registered as a view, so the
  checks and the insert scan it in place; staged Parquet files are a view over
  ``read_parquet`` (``sql/load/stage_parquet.duckdb.sql``), which DuckDB reads itself. The
  file itself is the lock: one process at a time opens it for writing, and none while
  another process holds it open, even read-only. Opening waits for that lock
  (:func:`~srgnn.warehouse.locks.wait_for_lock`); DuckDB's error names the process holding
  it.
- :class:`PostgresEngine` (psycopg 3, autocommit outside explicit transactions): the rows are
  sent with ``COPY ... FROM STDIN`` into a temporary table (Parquet files batch by batch, so
  that no more than one batch is in memory), and ``LOCK TABLE`` serialises concurrent loads
  without blocking readers. Every lock wait is bounded by ``lock_timeout`` (the whole lock
  wait for the session); the load's lock and the DDL are tried again under a
  short ``lock_timeout`` each time, so that the wait is logged with the holders that
  ``pg_locks`` shows. The load's lock is taken in a savepoint: a timeout keeps the staged rows.

Each engine tells its lock errors from other errors (:meth:`is_lock_error`) and its driver's
errors from Python's (:attr:`driver_errors`). The statements the engines run themselves come
from ``sql/load/`` and ``sql/session/``.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, Union

import pyarrow as pa

from srgnn.warehouse.locks import wait_for_lock
from srgnn.warehouse.sqlfiles import SqlFiles, Statement
from srgnn.warehouse.tables import (OPTIONAL_COLUMNS, RECOMMENDATIONS_SCHEMA, STAGING_TABLE,
                                    canonical_table, nul_message, other_days_message)
from srgnn.warehouse.urls import WarehouseURL

log = logging.getLogger(__name__)

_COPY_BATCH_ROWS = 65_536

Rows = tuple[tuple[str, ...], list[tuple]]  # (column names, rows); no columns: no result set
T = TypeVar("T")

# DuckDB's refusal to open a file another process holds, and the holder it names.
_DUCKDB_LOCKED = re.compile(r"Could not set lock on file")
_DUCKDB_HOLDER = re.compile(r"Conflicting lock is held in (.+?) \(PID (\d+)\)")
_DUCKDB_ADVICE = ("; a DuckDB file takes one writer, and no other process may hold it open "
                  "(even read-only) while it writes: close the other connection, keep readers' "
                  "connections short, or use PostgreSQL for concurrent readers")


class DuckDBEngine:
    """A DuckDB file (or ``:memory:``) through the ``duckdb`` module."""

    dialect = "duckdb"

    def __init__(self, target: str, read_only: bool, sql: SqlFiles, lock_wait_seconds: float):
        import duckdb

        if target != ":memory:":
            path = Path(target).expanduser()
            if not read_only:
                path.parent.mkdir(parents=True, exist_ok=True)
            target = str(path)
        self.sql = sql
        self.lock_wait_seconds = lock_wait_seconds
        self.driver_errors = (duckdb.Error,)
        self._staged = False
        self.con = self.waiting(f"the DuckDB file {target}",
                                lambda _timeout: duckdb.connect(target, read_only=read_only),
                                advice=_DUCKDB_ADVICE)

    @staticmethod
    def is_lock_error(error: BaseException) -> bool:
        import duckdb

        return isinstance(error, duckdb.IOException) and bool(_DUCKDB_LOCKED.search(str(error)))

    @staticmethod
    def lock_holder(error: BaseException) -> str | None:
        found = _DUCKDB_HOLDER.search(str(error))
        return f"{os.path.basename(found.group(1))} (PID {found.group(2)})" if found else None

    def waiting(self, what: str, attempt: Callable[[float], T], advice: str = "") -> T:
        """``attempt(timeout)``, tried again while another process holds the file."""
        return wait_for_lock(attempt, seconds=self.lock_wait_seconds, what=what,
                             is_locked=self.is_lock_error, holder=self.lock_holder, advice=advice)

    def set_lock_timeout(self, seconds: float) -> None:
        pass  # no lock waits once the file is open: this process is its only writer

    def execute(self, statement: Statement, params: Mapping[str, Any]) -> Rows:
        cursor = self.con.execute(statement.sql, statement.bind(params) or None)
        if cursor.description is None:
            return (), []
        columns = tuple(d[0] for d in cursor.description)
        return columns, cursor.fetchall()  # fetchall: DuckDB 2 stays busy otherwise

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.con.begin()
        try:
            yield
        except BaseException:
            try:
                self.con.rollback()
            except Exception:  # a dead connection rolls back by itself; keep the first error
                log.warning("rollback failed", exc_info=True)
            raise
        self.con.commit()

    def lock_for_load(self) -> None:
        pass  # the open file is the lock: no other process writes it

    def stage(self, table: pa.Table) -> None:
        # A view over the Arrow memory: checks and the insert scan it, nothing is copied twice.
        self.con.register(STAGING_TABLE, table)
        self._staged = True

    def stage_files(self, files: list[Path], present: Mapping[str, pa.DataType], day: dt.date,
                    run: Mapping[str, Any], generated_at: dt.datetime) -> None:
        """A temporary view over the Parquet ``files`` (holding the table's columns
        ``present``) that casts and completes their columns in SQL, as canonical_table does;
        then what canonical_table refuses (``staged_faults``) raises ValueError."""
        values = {"files": [str(path) for path in files], "ds": day,
                  "model_name": run["model_name"], "model_version": run["model_version"],
                  "generated_at": generated_at,
                  "generated_at_aware": getattr(present.get("generated_at"), "tz", None)
                  is not None,
                  **{f"has_{name}": name in present for name in OPTIONAL_COLUMNS}}
        statement = self.sql.statement("load", "stage_parquet")
        relation = self.con.sql(statement.sql, params=statement.bind(values))
        self.con.register(STAGING_TABLE, relation)  # a TEMP view, dropped by unstage()
        self._staged = True
        columns, [counts] = self.execute(self.sql.statement("load", "staged_faults"), values)
        faults = dict(zip(columns, counts))
        other_days = faults.pop("other_days")
        if other_days:
            raise ValueError(other_days_message(other_days, day))
        for name, count in faults.items():
            if count:
                raise ValueError(nul_message(name))

    def unstage(self) -> None:
        if self._staged:
            self._staged = False
            try:
                self.con.unregister(STAGING_TABLE)
            except Exception:  # the connection may be gone after a crash; nothing to free then
                log.debug("could not unregister the staging view", exc_info=True)

    def close(self) -> None:
        self.con.close()


class PostgresEngine:
    """A PostgreSQL database through psycopg 3."""

    dialect = "postgresql"

    def __init__(self, target: str, read_only: bool, sql: SqlFiles, lock_wait_seconds: float):
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        options = conninfo_to_dict(target)
        options.setdefault("connect_timeout", 10)
        options.setdefault("application_name", "srgnn-warehouse")
        self.sql = sql
        self.lock_wait_seconds = lock_wait_seconds
        self.driver_errors = (psycopg.Error,)
        # Autocommit outside explicit transactions: queries never leave one open.
        self.con = psycopg.connect(**options, autocommit=True)
        try:
            self.set_lock_timeout(lock_wait_seconds, local=False)  # every wait of the session
            if read_only:  # for the session, so that autocommit statements are covered too
                self.run("session", "read_only")
        except BaseException:
            self.con.close()
            raise

    @staticmethod
    def is_lock_error(error: BaseException) -> bool:
        from psycopg import errors

        return isinstance(error, errors.LockNotAvailable)

    def lock_holder(self, error: BaseException) -> str | None:
        """Who holds locks on the warehouse's tables now (``pg_locks``), or None."""
        _, rows = self.run("load", "lock_holders")
        return ", ".join(f"PID {pid} ({application or 'no application name'}, user {user}, "
                         f"{mode} on {table})" for pid, application, user, mode, table in rows
                         ) or None

    def waiting(self, what: str, attempt: Callable[[float], T], advice: str = "") -> T:
        """``attempt(timeout)``, tried again while it times out waiting for a lock."""
        return wait_for_lock(attempt, seconds=self.lock_wait_seconds, what=what,
                             is_locked=self.is_lock_error, holder=self.lock_holder, advice=advice)

    def set_lock_timeout(self, seconds: float, *, local: bool = True) -> None:
        """``lock_timeout`` for the transaction (``local``) or the session; 0 would mean no
        limit to PostgreSQL, so the shortest is 1 ms."""
        milliseconds = max(int(seconds * 1000), 1)
        self.run("session", "lock_timeout", {"lock_timeout": str(milliseconds), "is_local": local})

    def execute(self, statement: Statement, params: Mapping[str, Any]) -> Rows:
        with self.con.cursor() as cursor:
            cursor.execute(statement.sql, statement.bind(params))  # a mapping: `%%` means `%`
            if cursor.description is None:
                return (), []
            columns = tuple(d.name for d in cursor.description)
            return columns, cursor.fetchall()

    def run(self, folder: str, name: str, params: Mapping[str, Any] | None = None) -> Rows:
        """Run the statement of ``sql/<folder>/<name>.sql``."""
        return self.execute(self.sql.statement(folder, name), params or {})

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.con.transaction():
            yield

    def lock_for_load(self) -> None:
        def attempt(timeout: float) -> None:
            with self.con.transaction():  # a savepoint: a timeout keeps the staged rows
                self.set_lock_timeout(timeout)
                self.run("load", "lock_recommendations")
            self.set_lock_timeout(self.lock_wait_seconds)  # the rest of the load: the whole wait

        self.waiting("the table recommendations (another load holds it until it commits)",
                     attempt)

    def stage(self, table: pa.Table) -> None:
        self._copy(table.to_batches(max_chunksize=_COPY_BATCH_ROWS))

    def stage_files(self, files: list[Path], present: Mapping[str, pa.DataType], day: dt.date,
                    run: Mapping[str, Any], generated_at: dt.datetime) -> None:
        """COPY the Parquet ``files`` (their columns ``present``), file by file and batch by
        batch, each batch made canonical (canonical_table) first."""
        import pyarrow.parquet as pq

        def batches() -> Iterator[pa.RecordBatch]:
            for path in files:
                with pq.ParquetFile(path) as parquet:
                    for batch in parquet.iter_batches(batch_size=_COPY_BATCH_ROWS,
                                                      columns=sorted(present)):
                        yield from canonical_table(batch, day, run,
                                                   generated_at=generated_at).to_batches()

        self._copy(batches())

    def _copy(self, batches: Iterable[pa.RecordBatch]) -> None:
        """Create the staging table and COPY ``batches`` (canonical columns) into it."""
        import pyarrow.csv as pacsv

        copy = self.sql.statement("load", "copy_staging")
        options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
        self.run("load", "create_staging")
        with self.con.cursor() as cursor:
            # CSV from Arrow's C++ writer: strings always quoted (so "" is an empty string and
            # an unquoted empty field is NULL), doubles in shortest round-trip form.
            with cursor.copy(copy.sql, copy.bind({})) as out:
                for batch in batches:
                    if batch.schema.names != RECOMMENDATIONS_SCHEMA.names:  # the COPY's columns
                        raise ValueError(f"staged columns {batch.schema.names} are not "
                                         f"{RECOMMENDATIONS_SCHEMA.names}")
                    buffer = io.BytesIO()
                    pacsv.write_csv(batch, buffer, write_options=options)
                    out.write(buffer.getbuffer())

    def unstage(self) -> None:
        pass  # ON COMMIT DROP (and a rollback) removes the temporary table

    def close(self) -> None:
        self.con.close()


Engine = Union[DuckDBEngine, PostgresEngine]


def open_engine(url: WarehouseURL, read_only: bool, sql: SqlFiles,
                lock_wait_seconds: float = 0.0) -> Engine:
    """Connect to the engine ``url`` names; ``sql`` holds the statements it runs itself.

    A DuckDB file that another process holds is waited for up to ``lock_wait_seconds``, which
    also bounds every lock wait of a PostgreSQL session.
    """
    if sql.dialect != url.dialect:
        raise ValueError(f"SQL files for {sql.dialect}, but the URL names {url.dialect}")
    engine_cls = DuckDBEngine if url.dialect == "duckdb" else PostgresEngine
    return engine_cls(url.target, read_only, sql, lock_wait_seconds)


def driver_errors(dialect: str) -> tuple[type[BaseException], ...]:
    """The base classes of the errors of ``dialect``'s driver (imports the driver)."""
    if dialect == "duckdb":
        import duckdb

        return (duckdb.Error,)
    import psycopg

    return (psycopg.Error,)
