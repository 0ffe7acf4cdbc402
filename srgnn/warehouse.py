"""The warehouse: the ``recommendations`` table, the ``scoring_runs`` log and their queries.

One API over two engines:

- DuckDB (the embedded default): ``duckdb:///relative/path.duckdb``,
  ``duckdb:////absolute/path.duckdb`` (SQLAlchemy's convention: the path is whatever follows
  the third slash), ``duckdb:///:memory:``, or a plain file path.
- PostgreSQL: ``postgresql+psycopg://user:password@host:5432/db`` (also ``postgresql://``,
  ``postgres://``), through psycopg 3. libpq parameters ride in the query string, e.g.
  ``?sslmode=require`` or ``?options=-csearch_path%3Danalytics`` to use another schema.

The SQL lives in ``sql/``: ``ddl/`` (applied on connect, ``CREATE ... IF NOT EXISTS``),
``checks/`` (data-quality queries run on every load, each returning the violating rows) and
``queries/`` (for downstream users, run by name with :meth:`Warehouse.run_query`). The files
are portable SQL with ``:name`` parameters, converted here to each driver's placeholder style;
values are always bound, never formatted into SQL. A file ``NAME.duckdb.sql`` or
``NAME.postgresql.sql`` overrides ``NAME.sql`` for that engine. The only text ever substituted
into SQL is ``{table}`` in a check, and only with a name from a fixed set.

A day is written by :meth:`Warehouse.replace_day` in one transaction: stage the Arrow table
(DuckDB scans it in place; PostgreSQL receives it with ``COPY ... FROM STDIN`` into a
temporary table), run every check on the staged rows, delete the day, insert the staged rows,
append to the run log, commit. Any error rolls everything back, so a rerun never duplicates a
day and a crash never leaves half of one. Example::

    from srgnn.warehouse import Warehouse

    with Warehouse.connect("duckdb:///var/warehouse.duckdb") as warehouse:
        result = warehouse.replace_day("2024-05-01", recommendations, expected_k=20,
                                       run={"model_name": "srgnn", "model_version": "srgnn:7"})
        top = warehouse.run_query("top_items", ds="2024-05-01", limit=10)
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import numbers
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

DEFAULT_SQL_DIR = Path(__file__).resolve().parent.parent / "sql"

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
RUN_KEYS = frozenset({"model_name", "model_version", "sessions_in", "sessions_scored",
                      "fallbacks", "quarantined", "started_at"})

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_DIALECTS = ("duckdb", "postgresql")
_COPY_BATCH_ROWS = 65_536
_SHOWN_VIOLATIONS = 5


class WarehouseError(RuntimeError):
    """Base class of the errors raised by this module."""


class DataQualityError(WarehouseError):
    """A data-quality check found violations; the load was rolled back.

    ``check`` names the check (its file in ``sql/checks/``), ``ds`` the day, ``columns`` and
    ``rows`` the first offending rows, ``total`` how many there were.
    """

    def __init__(self, check: str, ds: dt.date, columns: Sequence[str], rows: Sequence[tuple],
                 total: int, during_load: bool = True):
        self.check = check
        self.ds = ds
        self.columns = tuple(columns)
        self.rows = list(rows)
        self.total = total
        self.during_load = during_load
        shown = "; ".join(
            "(" + ", ".join(f"{c}={_short_repr(v)}" for c, v in zip(self.columns, row)) + ")"
            for row in self.rows
        )
        more = f" (first {len(self.rows)} shown)" if total > len(self.rows) else ""
        outcome = (" The load was rolled back; the stored day is unchanged." if during_load
                   else "")
        super().__init__(
            f"data-quality check {check!r} failed for ds={ds.isoformat()}: {total} offending "
            f"row(s){more}: {shown}.{outcome}"
        )

    def __reduce__(self):  # keeps the fields when the error crosses a process boundary
        return (type(self), (self.check, self.ds, self.columns, self.rows, self.total,
                             self.during_load))


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "...'"


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


# --------------------------------------------------------------------------------------------
# SQL files and parameters
# --------------------------------------------------------------------------------------------
_TOKENS = re.compile(
    r"""
      (?P<string>'(?:[^']|'')*')                       # 'literal' ('' escapes a quote)
    | (?P<quoted>"(?:[^"]|"")*")                       # "identifier"
    | (?P<comment>--[^\n]*|/\*.*?\*/)
    | (?P<cast>::)                                     # Postgres cast, not a parameter
    | (?<![\w:]):(?P<param>[A-Za-z_][A-Za-z0-9_]*)      # :name
    | \{(?P<placeholder>[A-Za-z_][A-Za-z0-9_]*)\}      # {table} in checks
    | (?P<percent>%)
    | (?P<semicolon>;)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Statement:
    """One SQL statement in the driver's placeholder style, and its parameter names."""

    sql: str
    params: tuple[str, ...]  # in order of first appearance


def split_statements(text: str) -> list[str]:
    """Split a file on top-level semicolons (not those in literals or comments)."""
    statements, start = [], 0
    for match in _TOKENS.finditer(text):
        if match.lastgroup == "semicolon":
            statements.append(text[start:match.start()])
            start = match.end()
    statements.append(text[start:])
    return [s for s in statements if _TOKENS.sub(_drop_comments, s).strip()]


def _drop_comments(match: re.Match) -> str:
    return "" if match.lastgroup == "comment" else match.group(0)


def compile_sql(text: str, dialect: str,
                identifiers: Mapping[str, str] | None = None) -> Statement:
    """Turn neutral SQL (``:name`` parameters) into the driver's style.

    DuckDB gets ``$name``; psycopg gets ``%(name)s``, with literal ``%`` doubled. ``{name}``
    placeholders are replaced from ``identifiers`` (already validated and quoted); any other
    placeholder is an error.
    """
    if dialect not in _DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}; expected one of {_DIALECTS}")
    identifiers = identifiers or {}
    names: list[str] = []

    def replace(match: re.Match) -> str:
        kind = match.lastgroup
        if kind == "param":
            name = match.group("param")
            if name not in names:
                names.append(name)
            return f"${name}" if dialect == "duckdb" else f"%({name})s"
        if kind == "placeholder":
            name = match.group("placeholder")
            if name not in identifiers:
                raise ValueError(f"SQL placeholder {{{name}}} has no value")
            return identifiers[name]
        if kind == "percent":
            return "%" if dialect == "duckdb" else "%%"
        if dialect == "postgresql":  # psycopg reads % everywhere, literals and comments too
            return match.group(0).replace("%", "%%")
        return match.group(0)

    return Statement(_TOKENS.sub(replace, text), tuple(names))


def _single_statement(path: Path) -> str:
    statements = split_statements(path.read_text())
    if len(statements) != 1:
        raise ValueError(f"{path} must hold exactly one SQL statement, not {len(statements)}")
    return statements[0]


def quote_identifier(name: str, allowed: frozenset[str]) -> str:
    """Quote a table name that belongs to ``allowed`` (and looks like a plain name)."""
    if name not in allowed or not _NAME.match(name):
        raise ValueError(f"table name {name!r} is not one of {sorted(allowed)}")
    return f'"{name}"'


def sql_files(sql_dir: Path, folder: str, dialect: str) -> dict[str, Path]:
    """Name -> file of ``sql_dir/folder``, engine-specific files winning over portable ones."""
    found: dict[str, Path] = {}
    for path in sorted((sql_dir / folder).glob("*.sql")):
        stem = path.name[: -len(".sql")]
        base, _, suffix = stem.rpartition(".")
        if base and suffix in _DIALECTS:
            if suffix == dialect:
                found[base] = path
        elif stem not in found:
            found[stem] = path
    return dict(sorted(found.items()))


# --------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WarehouseURL:
    dialect: str  # "duckdb" | "postgresql"
    target: str  # DuckDB: file path or ":memory:"; Postgres: a libpq URL (postgresql://...)

    @classmethod
    def parse(cls, url: str | os.PathLike) -> "WarehouseURL":
        if isinstance(url, os.PathLike):
            return cls("duckdb", os.fspath(url))
        if not isinstance(url, str) or not url:
            raise ValueError(f"warehouse URL must be a non-empty string, got {url!r}")
        scheme, sep, rest = url.partition("://")
        if not sep:
            return cls("duckdb", url)  # a plain path
        base, _, driver = scheme.lower().partition("+")
        if base == "duckdb":
            if driver or (rest and not rest.startswith("/")):
                raise ValueError(
                    f"bad DuckDB URL {url!r}: use duckdb:///relative/path.duckdb, "
                    "duckdb:////absolute/path.duckdb or duckdb:///:memory:"
                )
            path = rest[1:]
            return cls("duckdb", path or ":memory:")
        if base in ("postgresql", "postgres"):
            if driver not in ("", "psycopg", "psycopg2"):
                raise ValueError(f"unsupported PostgreSQL driver {driver!r} in URL; use "
                                 "postgresql+psycopg://")
            return cls("postgresql", "postgresql://" + rest)
        raise ValueError(f"unsupported warehouse URL scheme {scheme!r}; expected duckdb:/// or "
                         "postgresql+psycopg://")


def redact_url(url: str | os.PathLike) -> str:
    """The URL with its password replaced by ``***`` (for logs and error messages)."""
    return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", os.fspath(url))


def _as_date(value: dt.date | str) -> dt.date:
    if isinstance(value, dt.datetime):
        raise TypeError(f"ds must be a date or 'YYYY-MM-DD', not a datetime ({value!r})")
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return dt.date.fromisoformat(value)
    raise ValueError(f"ds must be a date or 'YYYY-MM-DD', got {value!r}")


def _utc_naive(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


# --------------------------------------------------------------------------------------------
# Engines: the small part that differs between DuckDB and PostgreSQL
# --------------------------------------------------------------------------------------------
class _DuckDB:
    dialect = "duckdb"

    def __init__(self, target: str, read_only: bool):
        import duckdb

        if target != ":memory:":
            path = Path(target).expanduser()
            if not read_only:
                path.parent.mkdir(parents=True, exist_ok=True)
            target = str(path)
        self.con = duckdb.connect(target, read_only=read_only)
        self._staged = False

    def execute(self, statement: Statement, params: Mapping[str, Any]) -> QueryResult:
        values = {name: params[name] for name in statement.params}
        cursor = self.con.execute(statement.sql, values or None)
        if cursor.description is None:
            return QueryResult(())
        columns = tuple(d[0] for d in cursor.description)
        return QueryResult(columns, cursor.fetchall())  # fetchall: DuckDB 2 stays busy otherwise

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


class _Postgres:
    dialect = "postgresql"
    _LOCK = f'LOCK TABLE "{RECOMMENDATIONS_TABLE}" IN SHARE ROW EXCLUSIVE MODE'
    _CREATE_STAGING = (
        f'CREATE TEMPORARY TABLE "{STAGING_TABLE}" ON COMMIT DROP AS '
        f'SELECT * FROM "{RECOMMENDATIONS_TABLE}" WITH NO DATA'
    )

    def __init__(self, target: str, read_only: bool):
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        options = conninfo_to_dict(target)
        options.setdefault("connect_timeout", 10)
        options.setdefault("application_name", "srgnn-warehouse")
        # Autocommit outside explicit transactions: queries never leave one open.
        self.con = psycopg.connect(**options, autocommit=True)
        if read_only:  # for the session, so that autocommit statements are covered too
            self.con.execute("SET default_transaction_read_only = on")

    def execute(self, statement: Statement, params: Mapping[str, Any]) -> QueryResult:
        values = {name: params[name] for name in statement.params}
        with self.con.cursor() as cursor:
            cursor.execute(statement.sql, values)  # always a mapping, so `%%` means `%`
            if cursor.description is None:
                return QueryResult(())
            columns = tuple(d.name for d in cursor.description)
            return QueryResult(columns, cursor.fetchall())

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.con.transaction():
            yield

    def lock_for_load(self) -> None:
        # Serialises concurrent loads (of any day) without blocking readers: two writers of the
        # same day would otherwise both delete the old rows and then collide on the key.
        self.con.execute(self._LOCK)

    def stage(self, table: pa.Table) -> None:
        import pyarrow.csv as pacsv

        columns = ", ".join(f'"{name}"' for name in table.column_names)
        options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
        with self.con.cursor() as cursor:
            cursor.execute(self._CREATE_STAGING)
            # CSV from Arrow's C++ writer: strings always quoted (so "" is an empty string and
            # an unquoted empty field is NULL), doubles in shortest round-trip form.
            copy_sql = f'COPY "{STAGING_TABLE}" ({columns}) FROM STDIN (FORMAT csv)'
            with cursor.copy(copy_sql) as copy:
                for batch in table.to_batches(max_chunksize=_COPY_BATCH_ROWS):
                    buffer = io.BytesIO()
                    pacsv.write_csv(batch, buffer, write_options=options)
                    copy.write(buffer.getbuffer())

    def unstage(self) -> None:
        pass  # ON COMMIT DROP (and a rollback) removes the temporary table

    def close(self) -> None:
        self.con.close()


# --------------------------------------------------------------------------------------------
# The warehouse
# --------------------------------------------------------------------------------------------
_DELETE_DAY = f'DELETE FROM "{RECOMMENDATIONS_TABLE}" WHERE ds = CAST(:ds AS DATE)'
_COUNT_DAY = f'SELECT COUNT(*) FROM "{RECOMMENDATIONS_TABLE}" WHERE ds = CAST(:ds AS DATE)'
_COLUMNS = ", ".join(f'"{name}"' for name in RECOMMENDATIONS_SCHEMA.names)
_INSERT_DAY = (
    f'INSERT INTO "{RECOMMENDATIONS_TABLE}" ({_COLUMNS}) '
    f'SELECT {_COLUMNS} FROM "{STAGING_TABLE}" WHERE ds = CAST(:ds AS DATE)'
)
_RUN_COLUMNS = ("run_id", "ds", "status", "model_name", "model_version", "sessions_in",
                "sessions_scored", "fallbacks", "quarantined", "expected_k", "rows_written",
                "rows_replaced", "duration_seconds", "started_at", "finished_at", "message")
_INSERT_RUN = (
    f'INSERT INTO "{RUNS_TABLE}" ({", ".join(_RUN_COLUMNS)}) '
    f'VALUES ({", ".join(":" + c for c in _RUN_COLUMNS)})'
)


class Warehouse:
    """A connection to the warehouse. Use :meth:`connect`, preferably as a context manager."""

    def __init__(self, engine: _DuckDB | _Postgres, url: str, sql_dir: Path):
        self._engine = engine
        self.url = redact_url(url)
        self.sql_dir = sql_dir

    @classmethod
    def connect(cls, url: str | os.PathLike, *, read_only: bool = False,
                sql_dir: str | os.PathLike | None = None) -> "Warehouse":
        """Open the warehouse at ``url`` and, unless ``read_only``, apply the DDL."""
        parsed = WarehouseURL.parse(url)
        sql_path = Path(sql_dir) if sql_dir is not None else DEFAULT_SQL_DIR
        if not (sql_path / "ddl").is_dir():
            raise FileNotFoundError(f"no ddl/ folder under {sql_path} (pass sql_dir=)")
        engine_cls = _DuckDB if parsed.dialect == "duckdb" else _Postgres
        warehouse = cls(engine_cls(parsed.target, read_only), os.fspath(url), sql_path)
        try:
            if not read_only:
                warehouse.ensure_schema()
        except BaseException:
            warehouse.close()
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
                 identifiers: Mapping[str, str] | None = None) -> QueryResult:
        statement = compile_sql(sql, self.dialect, identifiers)
        missing = [name for name in statement.params if name not in (params or {})]
        if missing:
            raise ValueError(f"missing SQL parameter(s): {', '.join(missing)}")
        return self._engine.execute(statement, params or {})

    def _files(self, folder: str) -> dict[str, Path]:
        return sql_files(self.sql_dir, folder, self.dialect)

    def ensure_schema(self) -> None:
        """Apply ``sql/ddl/*.sql`` in name order (idempotent: ``IF NOT EXISTS``)."""
        files = self._files("ddl")
        if not files:
            raise FileNotFoundError(f"no DDL files in {self.sql_dir / 'ddl'}")
        with self._engine.transaction():
            for path in files.values():
                for sql in split_statements(path.read_text()):
                    self._execute(sql)

    # -- queries ---------------------------------------------------------------------------
    def list_queries(self) -> list[str]:
        """Names of the queries in ``sql/queries/``."""
        return list(self._files("queries"))

    def run_query(self, name: str, **params: Any) -> QueryResult:
        """Run the query ``sql/queries/<name>.sql`` with its ``:name`` parameters bound."""
        files = self._files("queries")
        if not _NAME.match(name) or name not in files:
            raise ValueError(f"unknown query {name!r}; available: {', '.join(files)}")
        sql = _single_statement(files[name])
        wanted = set(compile_sql(sql, self.dialect).params)
        if set(params) != wanted:
            raise ValueError(
                f"query {name!r} takes parameters {sorted(wanted)}, got {sorted(params)}"
            )
        return self._execute(sql, params)

    # -- data-quality checks ---------------------------------------------------------------
    def list_checks(self) -> list[str]:
        """Names of the data-quality checks in ``sql/checks/``."""
        return list(self._files("checks"))

    def _run_checks(self, table: str, ds: dt.date, expected_k: int,
                    expected_rows: int) -> tuple[str, ...]:
        identifiers = {"table": quote_identifier(table, CHECK_TABLES)}
        params = {"ds": ds, "expected_k": expected_k, "expected_rows": expected_rows}
        names = []
        for name, path in self._files("checks").items():
            check = _single_statement(path)
            # The newline keeps a trailing `-- comment` from swallowing the parenthesis.
            found = self._execute(
                f"SELECT * FROM (\n{check}\n) AS violations LIMIT {_SHOWN_VIOLATIONS}",
                params, identifiers)
            if found.rows:
                total = self._execute(f"SELECT COUNT(*) FROM (\n{check}\n) AS violations",
                                      params, identifiers).rows[0][0]
                raise DataQualityError(name, ds, found.columns, found.rows, total,
                                       during_load=table == STAGING_TABLE)
            names.append(name)
        return tuple(names)

    def check_day(self, ds: dt.date | str, expected_k: int,
                  expected_rows: int | None = None) -> tuple[str, ...]:
        """Run the checks on a stored day; raise :class:`DataQualityError` or return their names.

        ``expected_rows`` defaults to (sessions stored for the day) x ``expected_k``.
        """
        day = _as_date(ds)
        if expected_rows is None:
            sessions = self._execute(
                f'SELECT COUNT(DISTINCT session_id) FROM "{RECOMMENDATIONS_TABLE}" '
                "WHERE ds = CAST(:ds AS DATE)", {"ds": day}).rows[0][0]
            expected_rows = sessions * expected_k
        return self._run_checks(RECOMMENDATIONS_TABLE, day, expected_k, expected_rows)

    # -- loading a day ---------------------------------------------------------------------
    def replace_day(self, ds: dt.date | str, table: pa.Table, expected_k: int,
                    run: Mapping[str, Any], *, expected_rows: int | None = None) -> LoadResult:
        """Replace the recommendations of day ``ds`` with ``table``, atomically.

        ``table`` has the columns ``session_id, rank, item_id, score`` and may add ``ds`` (must
        equal ``ds``), ``model_name``, ``model_version`` (per row, e.g. 'fallback:pop') and
        ``generated_at``; missing ones come from ``run``. ``expected_k`` is the number of rows
        every session must have: min(top_k, catalogue size). ``run`` describes the scoring
        run for the log: ``model_version`` (required), ``model_name`` (default 'srgnn'),
        ``sessions_in``, ``sessions_scored`` (default: distinct sessions in ``table``),
        ``fallbacks``, ``quarantined``, ``started_at`` (also the rows' default
        ``generated_at``). ``expected_rows`` defaults to ``sessions_scored * expected_k``.

        In one transaction: stage, run ``sql/checks``, delete the day, insert, log the run.
        A failed check raises :class:`DataQualityError`; on any error the transaction is rolled
        back (the previous version of the day stays whole) and a 'failed' row is appended to
        ``scoring_runs`` afterwards.
        """
        day = _as_date(ds)
        if (isinstance(expected_k, bool) or not isinstance(expected_k, numbers.Integral)
                or expected_k < 0):
            raise ValueError(f"expected_k must be a non-negative int, got {expected_k!r}")
        expected_k = int(expected_k)
        run = self._validate_run(run)
        rows = self._canonical_table(table, day, run)
        sessions_scored = run.get("sessions_scored")
        if sessions_scored is None:
            sessions_scored = pc.count_distinct(rows["session_id"]).as_py()
        if expected_rows is None:
            expected_rows = sessions_scored * expected_k

        run_id = uuid.uuid4().hex
        log_row = {
            "run_id": run_id, "ds": day, "model_name": run["model_name"],
            "model_version": run["model_version"], "sessions_in": run.get("sessions_in"),
            "sessions_scored": sessions_scored, "fallbacks": run.get("fallbacks"),
            "quarantined": run.get("quarantined"), "expected_k": expected_k,
            "started_at": run.get("started_at"),
        }
        clock = time.monotonic()
        try:
            with self._engine.transaction():
                self._engine.stage(rows)
                self._engine.lock_for_load()
                checks = self._run_checks(STAGING_TABLE, day, expected_k, expected_rows)
                rows_replaced = self._delete_day(day)
                self._insert_day(day)
                rows_written = self._count_day(day)
                self._append_run(log_row, status="succeeded", rows_written=rows_written,
                                 rows_replaced=rows_replaced, clock=clock)
        except BaseException as error:
            self._log_failure(log_row, error, clock)
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
        self._execute(_DELETE_DAY, {"ds": day})
        return replaced

    def _insert_day(self, day: dt.date) -> None:
        self._execute(_INSERT_DAY, {"ds": day})

    def _count_day(self, day: dt.date) -> int:
        return self._execute(_COUNT_DAY, {"ds": day}).rows[0][0]

    def _append_run(self, row: Mapping[str, Any], *, status: str, rows_written: int | None,
                    rows_replaced: int | None, clock: float, message: str | None = None) -> None:
        finished_at = _utcnow()
        started_at = row.get("started_at")
        if started_at is not None:
            duration = (finished_at - started_at).total_seconds()
        else:
            duration = time.monotonic() - clock
        values = {**row, "status": status, "rows_written": rows_written,
                  "rows_replaced": rows_replaced, "duration_seconds": duration,
                  "finished_at": finished_at, "message": message}
        self._execute(_INSERT_RUN, values)

    def _log_failure(self, row: Mapping[str, Any], error: BaseException, clock: float) -> None:
        message = f"{type(error).__name__}: {error}"[:4000]
        try:
            with self._engine.transaction():
                self._append_run(row, status="failed", rows_written=None, rows_replaced=None,
                                 clock=clock, message=message)
        except Exception:  # the connection may be what failed; the original error matters
            log.warning("could not record the failed run in %s", RUNS_TABLE, exc_info=True)

    def log_run(self, ds: dt.date | str, run: Mapping[str, Any], *, status: str,
                rows_written: int | None = None, message: str | None = None) -> str:
        """Append a row to ``scoring_runs`` for a run that wrote nothing through
        :meth:`replace_day` (e.g. skipped, or failed before scoring). Returns its run id."""
        if not _NAME.match(status):
            raise ValueError(f"status must be a short lowercase word, got {status!r}")
        run = self._validate_run(run, need_model=False)
        row = {
            "run_id": uuid.uuid4().hex, "ds": _as_date(ds), "model_name": run["model_name"],
            "model_version": run["model_version"], "sessions_in": run.get("sessions_in"),
            "sessions_scored": run.get("sessions_scored"), "fallbacks": run.get("fallbacks"),
            "quarantined": run.get("quarantined"), "expected_k": None,
            "started_at": run.get("started_at"),
        }
        with self._engine.transaction():
            self._append_run(row, status=status, rows_written=rows_written, rows_replaced=None,
                             clock=time.monotonic(), message=message)
        return row["run_id"]

    # -- input validation ------------------------------------------------------------------
    @staticmethod
    def _validate_run(run: Mapping[str, Any], *, need_model: bool = True) -> dict[str, Any]:
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
        for key in ("sessions_in", "sessions_scored", "fallbacks", "quarantined"):
            value = out.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"run[{key!r}] must be a non-negative int, got {value!r}")
            out[key] = int(value)
        if out.get("started_at") is not None:
            if not isinstance(out["started_at"], dt.datetime):
                raise TypeError("run['started_at'] must be a datetime")
            out["started_at"] = _utc_naive(out["started_at"])
        return out

    @staticmethod
    def _canonical_table(table: pa.Table, day: dt.date, run: Mapping[str, Any]) -> pa.Table:
        """``table`` with exactly the columns and types of ``recommendations``."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        elif isinstance(table, pa.RecordBatchReader):
            table = table.read_all()
        if not isinstance(table, pa.Table):
            raise TypeError(f"expected a pyarrow.Table, got {type(table).__name__}")
        names = set(table.column_names)
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        unknown = sorted(names - set(RECOMMENDATIONS_SCHEMA.names))
        if missing or unknown or len(names) != table.num_columns:
            raise ValueError(
                f"recommendation table columns {table.column_names}: missing {missing}, "
                f"unknown {unknown}; expected {list(RECOMMENDATIONS_SCHEMA.names)} "
                f"(ds, model_name, model_version and generated_at are optional)"
            )
        n = table.num_rows
        generated_at = run.get("started_at") or _utcnow()
        defaults = {
            "ds": pa.array([day] * n, pa.date32()),
            "model_name": pa.array([run["model_name"]] * n, pa.string()),
            "model_version": pa.array([run["model_version"]] * n, pa.string()),
            "generated_at": pa.array([generated_at] * n, pa.timestamp("us")),
        }
        columns = []
        for column in RECOMMENDATIONS_SCHEMA:
            if column.name not in names:
                columns.append(defaults[column.name])
                continue
            values = table[column.name]
            if pa.types.is_dictionary(values.type):
                values = values.cast(values.type.value_type)
            try:
                if pa.types.is_timestamp(column.type) and pa.types.is_timestamp(values.type):
                    # Aware timestamps are stored as UTC wall time; ns are cut to us.
                    values = pc.cast(values, column.type, safe=False)
                else:
                    values = pc.cast(values, column.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ValueError(f"column {column.name!r} of type {values.type} cannot be "
                                 f"stored as {column.type}: {exc}") from exc
            columns.append(values)
        canonical = pa.Table.from_arrays(columns, schema=RECOMMENDATIONS_SCHEMA)

        if "ds" in names:
            other = pc.sum(pc.cast(pc.not_equal(canonical["ds"], pa.scalar(day, pa.date32())),
                                   pa.int64())).as_py()
            if other:
                raise ValueError(f"{other} row(s) have a ds other than {day.isoformat()}")
        for name in ("session_id", "item_id", "model_name", "model_version"):
            if n and pc.any(pc.match_substring(canonical[name], "\x00")).as_py():
                raise ValueError(f"column {name!r} holds a NUL character, which PostgreSQL text "
                                 "cannot store; clean the ids before writing")
        return canonical


__all__ = [
    "DataQualityError", "LoadResult", "QueryResult", "RECOMMENDATIONS_SCHEMA", "Warehouse",
    "WarehouseError", "WarehouseURL", "compile_sql", "redact_url", "split_statements",
]
