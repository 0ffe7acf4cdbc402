"""Connections to the two engines: the small part of the warehouse that differs between them.

An engine runs a compiled :class:`~srgnn.warehouse.sqlfiles.Statement` with its values bound
in the driver's style, opens a transaction, stages the rows of a load under the name
``recommendations_staging`` and takes the lock that serialises loads:

- :class:`DuckDBEngine` (``duckdb``): the staged Arrow table is registered as a view, so the
  checks and the insert scan it in place; one writer per file, no lock needed.
- :class:`PostgresEngine` (psycopg 3, autocommit outside explicit transactions): the rows are
  sent with ``COPY ... FROM STDIN`` into a temporary table, and ``LOCK TABLE`` serialises
  concurrent loads without blocking readers.

The statements the engines run themselves come from ``sql/load/`` and ``sql/session/``.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Union

import pyarrow as pa

from srgnn.warehouse.sqlfiles import SqlFiles, Statement
from srgnn.warehouse.tables import RECOMMENDATIONS_SCHEMA, STAGING_TABLE
from srgnn.warehouse.urls import WarehouseURL

log = logging.getLogger(__name__)

_COPY_BATCH_ROWS = 65_536

Rows = tuple[tuple[str, ...], list[tuple]]  # (column names, rows); no columns: no result set


class DuckDBEngine:
    """A DuckDB file (or ``:memory:``) through the ``duckdb`` module."""

    dialect = "duckdb"

    def __init__(self, target: str, read_only: bool, sql: SqlFiles):
        import duckdb

        if target != ":memory:":
            path = Path(target).expanduser()
            if not read_only:
                path.parent.mkdir(parents=True, exist_ok=True)
            target = str(path)
        self.sql = sql
        self.con = duckdb.connect(target, read_only=read_only)
        self._staged = False

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
        pass  # one writer per file; concurrent writers of a day conflict at commit

    def stage(self, table: pa.Table) -> None:
        # A view over the Arrow memory: checks and the insert scan it, nothing is copied twice.
        self.con.register(STAGING_TABLE, table)
        self._staged = True

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

    def __init__(self, target: str, read_only: bool, sql: SqlFiles):
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        options = conninfo_to_dict(target)
        options.setdefault("connect_timeout", 10)
        options.setdefault("application_name", "srgnn-warehouse")
        self.sql = sql
        # Autocommit outside explicit transactions: queries never leave one open.
        self.con = psycopg.connect(**options, autocommit=True)
        if read_only:  # for the session, so that autocommit statements are covered too
            try:
                self.run("session", "read_only")
            except BaseException:
                self.con.close()
                raise

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
        self.run("load", "lock_recommendations")

    def stage(self, table: pa.Table) -> None:
        import pyarrow.csv as pacsv

        if table.column_names != RECOMMENDATIONS_SCHEMA.names:  # the COPY's column list
            raise ValueError(f"staged columns {table.column_names} are not "
                             f"{RECOMMENDATIONS_SCHEMA.names}")
        copy = self.sql.statement("load", "copy_staging")
        options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
        self.run("load", "create_staging")
        with self.con.cursor() as cursor:
            # CSV from Arrow's C++ writer: strings always quoted (so "" is an empty string and
            # an unquoted empty field is NULL), doubles in shortest round-trip form.
            with cursor.copy(copy.sql, copy.bind({})) as out:
                for batch in table.to_batches(max_chunksize=_COPY_BATCH_ROWS):
                    buffer = io.BytesIO()
                    pacsv.write_csv(batch, buffer, write_options=options)
                    out.write(buffer.getbuffer())

    def unstage(self) -> None:
        pass  # ON COMMIT DROP (and a rollback) removes the temporary table

    def close(self) -> None:
        self.con.close()


Engine = Union[DuckDBEngine, PostgresEngine]


def open_engine(url: WarehouseURL, read_only: bool, sql: SqlFiles) -> Engine:
    """Connect to the engine ``url`` names; ``sql`` holds the statements it runs itself."""
    if sql.dialect != url.dialect:
        raise ValueError(f"SQL files for {sql.dialect}, but the URL names {url.dialect}")
    engine_cls = DuckDBEngine if url.dialect == "duckdb" else PostgresEngine
    return engine_cls(url.target, read_only, sql)
