"""Warehouse tests, each run on a DuckDB file and on a real PostgreSQL server.

The PostgreSQL server is started once per test session from the installed server binaries
(see tests/pg.py); every test gets its own database. Without the binaries the PostgreSQL
variants skip and say why.

    .venv/bin/python -m pytest -q tests/test_warehouse.py
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
import itertools
import math
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tomllib
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import duckdb
import pyarrow as pa
import pytest

import srgnn.warehouse
from srgnn.warehouse import (
    RECOMMENDATIONS_SCHEMA,
    DataQualityError,
    Warehouse,
    WarehouseLoadError,
    WarehouseURL,
    redact_url,
)
from srgnn.warehouse.sqlfiles import (
    DEFAULT_SQL_DIR,
    SqlFiles,
    compile_sql,
    fill_placeholders,
    sql_files,
)

REPOSITORY = Path(__file__).resolve().parents[1]
DAY = dt.date(2024, 3, 1)
NEXT_DAY = dt.date(2024, 3, 2)
RUN = {"model_name": "srgnn", "model_version": "srgnn:3"}
_database_names = itertools.count()


# ------------------------------------------------------------------------------------------
# Fixtures and helpers
# ------------------------------------------------------------------------------------------
@pytest.fixture(params=["duckdb", "postgresql"])
def url(request, tmp_path):
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    server = request.getfixturevalue("postgres_server")
    return server.create_database(f"warehouse_test_{next(_database_names)}")


@pytest.fixture
def warehouse(url):
    with Warehouse.connect(url) as connected:
        yield connected


def day_table(sessions: dict[str, list[tuple]], **columns) -> pa.Table:
    """Rows from {session_id: [(item_id, score), ...]} in rank order (1, 2, ...).

    An entry may be (item_id, score, rank) to force a rank; extra columns go in as given.
    """
    rows = {"session_id": [], "rank": [], "item_id": [], "score": []}
    for session_id, items in sessions.items():
        for position, entry in enumerate(items, start=1):
            item_id, score = entry[0], entry[1]
            rows["session_id"].append(session_id)
            rows["rank"].append(entry[2] if len(entry) > 2 else position)
            rows["item_id"].append(item_id)
            rows["score"].append(score)
    table = pa.table({
        "session_id": pa.array(rows["session_id"], pa.string()),
        "rank": pa.array(rows["rank"], pa.int64()),
        "item_id": pa.array(rows["item_id"], pa.string()),
        "score": pa.array(rows["score"], pa.float64()),
    })
    for name, values in columns.items():
        table = table.append_column(name, pa.array(values))
    return table


def stored(warehouse: Warehouse, ds: dt.date) -> list[tuple]:
    """The day's rows as (session_id, rank, item_id, score, model_version), sorted in Python
    (the engines may collate unicode differently)."""
    result = warehouse.run_query("day_recommendations", ds=ds)
    index = {name: i for i, name in enumerate(result.columns)}
    return sorted(
        (r[index["session_id"]], r[index["rank"]], r[index["item_id"]], r[index["score"]],
         r[index["model_version"]])
        for r in result.rows
    )


def runs(warehouse: Warehouse, ds: dt.date) -> list[dict]:
    return warehouse.run_query("scoring_runs", start_ds=ds, end_ds=ds).to_dicts()


TABLE_COLUMNS = {
    "recommendations": ["ds", "session_id", "rank", "item_id", "score", "model_name",
                        "model_version", "generated_at"],
    "scoring_runs": ["run_id", "ds", "status", "model_name", "model_version", "sessions_in",
                     "sessions_scored", "fallbacks", "quarantined", "expected_k",
                     "rows_written", "rows_replaced", "duration_seconds", "started_at",
                     "finished_at", "message", "clicks_read", "duplicates_dropped",
                     "unknown_clicks", "category_fallbacks"],
}

BASE = {  # three sessions, K = 3
    "s1": [("i1", 0.9), ("i2", 0.8), ("i3", 0.7)],
    "s2": [("i2", 0.6), ("i1", 0.6), ("i4", 0.1)],
    "s3": [("i4", 0.5), ("i3", 0.4), ("i1", 0.3)],
}


# ------------------------------------------------------------------------------------------
# SQL plumbing (no database)
# ------------------------------------------------------------------------------------------
def test_compile_sql_converts_named_parameters_per_dialect():
    # SQLAlchemy's text() rules: `::` is a cast, `\:` a literal colon (in strings and comments
    # alike), a colon after a word character no parameter.
    sql = ("SELECT x::date, '\\:not_a_param', \"col:x\", '12:30', 100 % 7 -- 50% \\:nor_this\n"
           "FROM t WHERE a = :a AND b = :b OR c = :a")
    duck = compile_sql(sql, "duckdb")
    pg = compile_sql(sql, "postgresql")
    assert duck.params == pg.params == ("a", "b")
    assert duck.sql == ("SELECT x::date, ':not_a_param', \"col:x\", '12:30', 100 % 7 "
                        "-- 50% :nor_this\nFROM t WHERE a = $1 AND b = $2 OR c = $1")
    assert pg.sql == ("SELECT x::date, ':not_a_param', \"col:x\", '12:30', 100 %% 7 "
                      "-- 50%% :nor_this\nFROM t WHERE a = %(a)s AND b = %(b)s OR c = %(a)s")
    # Values: a list in $1, $2 order for DuckDB, a mapping for psycopg; extra ones are ignored.
    values = {"b": "B", "a": "A", "unused": 0}
    assert duck.bind(values) == ["A", "B"]
    assert pg.bind(values) == {"a": "A", "b": "B"}
    with pytest.raises(ValueError, match="missing SQL parameter.*: b"):
        duck.bind({"a": 1})
    # A parameter cast with `::` would silently not be one: refused with a hint instead.
    with pytest.raises(ValueError, match=r"CAST\(:ds AS type\)"):
        compile_sql("SELECT :ds::date", "postgresql")


def test_compile_sql_only_fills_known_placeholders():
    filled = compile_sql("SELECT * FROM {table}", "duckdb", {"table": '"t"'})
    assert filled.sql == 'SELECT * FROM "t"'
    with pytest.raises(ValueError, match="placeholder"):
        compile_sql("SELECT * FROM {other}", "duckdb", {"table": '"t"'})
    with pytest.raises(ValueError, match="dialect"):
        compile_sql("SELECT 1", "sqlite")


def test_placeholders_are_filled_once_and_never_rescanned():
    check = fill_placeholders("SELECT * FROM {table}", {"table": '"recommendations"'})
    wrapped = compile_sql("SELECT COUNT(*) FROM (\n{check}\n) AS v", "duckdb", {"check": check})
    assert wrapped.sql == 'SELECT COUNT(*) FROM (\nSELECT * FROM "recommendations"\n) AS v'
    # text inserted for a placeholder is not searched for placeholders again
    assert fill_placeholders("{check}", {"check": "{table}", "table": "x"}) == "{table}"


@pytest.mark.parametrize("url, dialect, target", [
    ("duckdb:///var/warehouse.duckdb", "duckdb", "var/warehouse.duckdb"),
    ("duckdb:////tmp/w/warehouse.duckdb", "duckdb", "/tmp/w/warehouse.duckdb"),
    ("duckdb:///:memory:", "duckdb", ":memory:"),
    ("duckdb://", "duckdb", ":memory:"),
    ("some/file.duckdb", "duckdb", "some/file.duckdb"),
    (Path("some/file.duckdb"), "duckdb", "some/file.duckdb"),
    ("postgresql+psycopg://u:p%40ss@db:5432/wh", "postgresql", "postgresql://u:p%40ss@db:5432/wh"),
    ("postgresql://u@db/wh?sslmode=require", "postgresql", "postgresql://u@db/wh?sslmode=require"),
    ("postgresql://u@db/wh?options=-csearch_path%3Danalytics", "postgresql",
     "postgresql://u@db/wh?options=-csearch_path%3Danalytics"),
    ("postgres://u@db/wh", "postgresql", "postgresql://u@db/wh"),
    ("postgresql+psycopg2://u@[::1]:5433/wh", "postgresql", "postgresql://u@[::1]:5433/wh"),
])
def test_url_parsing(url, dialect, target):
    assert WarehouseURL.parse(url) == WarehouseURL(dialect, target)


@pytest.mark.parametrize("url, message", [
    ("mysql://u@h/db", "unsupported warehouse URL scheme 'mysql'"),
    ("duckdb://host/file.duckdb", "bad DuckDB URL 'duckdb://host/file.duckdb'"),
    ("duckdb+x:///file.duckdb", "bad DuckDB URL"),
    ("duckdb:///file.duckdb?mode=ro", "query string"),
    ("postgresql+asyncpg://u@h/db", "unsupported PostgreSQL driver 'asyncpg'"),
    ("postgresql://u:secret@h:port/db", "cannot parse the warehouse URL"),
    ("://nothing", "cannot parse the warehouse URL"),
    ("", "non-empty string"),
])
def test_url_parsing_rejects_what_it_cannot_serve(url, message):
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        WarehouseURL.parse(url)
    assert "secret" not in str(caught.value)


def test_postgres_targets_keep_the_libpq_options():
    from psycopg.conninfo import conninfo_to_dict

    target = WarehouseURL.parse("postgresql+psycopg://u:p%40ss@db:5432/wh"
                                "?sslmode=require&options=-csearch_path%3Danalytics").target
    assert conninfo_to_dict(target) == {"user": "u", "password": "p@ss", "host": "db",
                                        "port": "5432", "dbname": "wh", "sslmode": "require",
                                        "options": "-csearch_path=analytics"}


def test_redact_url_hides_the_password():
    assert redact_url("postgresql+psycopg://user:s3cret@host:5432/db") == \
        "postgresql+psycopg://user:***@host:5432/db"
    assert "s3cret" not in redact_url("postgresql://user@host/db?password=s3cret&sslmode=require")
    assert "sslmode=require" in redact_url("postgresql://u@h/db?password=s3cret&sslmode=require")
    assert "s3cret" not in redact_url("postgresql://user:s3cret@host:port/db")  # unparseable
    for unchanged in ("duckdb:///var/w.duckdb", "duckdb:///:memory:", "var/w.duckdb",
                      "postgresql://u@db/wh?options=-csearch_path%3Danalytics"):
        assert redact_url(unchanged) == unchanged


def test_engine_specific_sql_files_win(tmp_path):
    (tmp_path / "queries").mkdir()
    for name in ("a.sql", "a.postgresql.sql", "b.sql", "c.duckdb.sql"):
        (tmp_path / "queries" / name).write_text("SELECT 1")
    assert {k: v.name for k, v in sql_files(tmp_path, "queries", "duckdb").items()} == \
        {"a": "a.sql", "b": "b.sql", "c": "c.duckdb.sql"}
    assert {k: v.name for k, v in sql_files(tmp_path, "queries", "postgresql").items()} == \
        {"a": "a.postgresql.sql", "b": "b.sql"}
    assert SqlFiles(tmp_path, "postgresql").read("queries", "a") == "SELECT 1"
    with pytest.raises(ValueError, match="no SQL file queries/'c' for postgresql"):
        SqlFiles(tmp_path, "postgresql").read("queries", "c")


SQL_FOLDERS = ("checks", "ddl", "load", "queries", "session")


def test_sql_files_are_found_in_the_installed_package(tmp_path):
    package_dir = Path(srgnn.warehouse.__file__).resolve().parent
    assert DEFAULT_SQL_DIR == package_dir / "sql"
    assert Path(str(importlib.resources.files("srgnn.warehouse") / "sql")).resolve() == \
        DEFAULT_SQL_DIR
    assert sorted(p.name for p in DEFAULT_SQL_DIR.iterdir() if p.is_dir()) == list(SQL_FOLDERS)
    for folder in SQL_FOLDERS:
        assert list((DEFAULT_SQL_DIR / folder).glob("*.sql")), folder

    # Every SQL file ships as package data (pyproject's globs for srgnn.warehouse).
    pyproject = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())
    globs = [PurePosixPath(g) for g in
             pyproject["tool"]["setuptools"]["package-data"]["srgnn.warehouse"]]
    shipped = [PurePosixPath(p.relative_to(package_dir).as_posix())
               for p in DEFAULT_SQL_DIR.rglob("*.sql")]
    not_shipped = [str(p) for p in shipped
                   if not any(p.match(str(g)) and len(p.parts) == len(g.parts) for g in globs)]
    assert shipped and not not_shipped

    # From another working directory (no `sql` folder or link there), a load still works.
    child = textwrap.dedent("""
        import pyarrow as pa
        from srgnn.warehouse import Warehouse

        with Warehouse.connect("duckdb:///:memory:") as warehouse:
            table = pa.table({"session_id": ["s", "s"], "rank": [1, 2], "item_id": ["a", "b"],
                              "score": [0.9, 0.1]})
            result = warehouse.replace_day("2024-03-01", table, expected_k=2,
                                           run={"model_version": "v1"})
            print(warehouse.sql_dir, result.rows_written, len(warehouse.list_queries()))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", child], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    sql_dir, rows_written, queries = done.stdout.split()
    assert (Path(sql_dir), rows_written, int(queries) > 0) == (DEFAULT_SQL_DIR, "2", True)


# sql/load/: name -> parameters; the check wrappers also take those of the check they wrap.
LOAD_STATEMENTS = {
    "check_sample": {"limit"},
    "check_total": set(),
    "count_day": {"ds"},
    "count_sessions": {"ds"},
    "delete_day": {"ds"},
    "insert_day": {"ds"},
    "insert_run": set(TABLE_COLUMNS["scoring_runs"]),
    "count_staged_sessions": set(),
}
POSTGRES_LOAD_STATEMENTS = {"copy_staging": set(), "create_staging": set(),
                            "lock_recommendations": set(), "lock_holders": set()}
DUCKDB_LOAD_STATEMENTS = {
    "stage_parquet": {"files", "ds", "model_name", "model_version", "generated_at",
                      "generated_at_aware", "has_ds", "has_model_name", "has_model_version",
                      "has_generated_at"},
    "staged_faults": {"ds"},
}
CHECK_PARAMETERS = {"ds", "expected_k", "expected_rows"}  # what a load gives every check


def _compiled_parameters(sql: str, dialect: str) -> set[str]:
    """The parameter names a compiled statement really holds (placeholders in the SQL)."""
    statement = compile_sql(sql, dialect)
    if dialect == "duckdb":
        numbers = set(re.findall(r"\$(\d+)", statement.sql))
        assert numbers == {str(i) for i in range(1, len(statement.params) + 1)}
    else:
        assert set(re.findall(r"%\((\w+)\)s", statement.sql)) == set(statement.params)
    assert not re.search(r"(?<![:\w\\]):[A-Za-z_]", statement.sql)  # no :name left over
    return set(statement.params)


@pytest.mark.parametrize("dialect", ["duckdb", "postgresql"])
def test_every_load_statement_compiles_for_both_dialects_with_its_parameters(dialect):
    files = sorted((DEFAULT_SQL_DIR / "load").glob("*.sql"))
    names = {path.name.split(".")[0] for path in files}
    assert names == set(LOAD_STATEMENTS) | set(POSTGRES_LOAD_STATEMENTS) | set(DUCKDB_LOAD_STATEMENTS)
    checks = SqlFiles(DEFAULT_SQL_DIR, dialect).files("checks")
    for path in files:
        name, text = path.name.split(".")[0], path.read_text()
        expected = {**LOAD_STATEMENTS, **POSTGRES_LOAD_STATEMENTS, **DUCKDB_LOAD_STATEMENTS}[name]
        assert text.lstrip().startswith("--"), f"{path.name} explains itself in a comment"
        if "{check}" not in text:
            assert _compiled_parameters(text, dialect) == expected, path.name
            continue
        for check_name, check_path in checks.items():
            check = fill_placeholders(check_path.read_text(), {"table": '"recommendations"'})
            check_parameters = _compiled_parameters(check, dialect)
            assert check_parameters <= CHECK_PARAMETERS, check_name
            wrapped = fill_placeholders(text, {"check": check})
            assert _compiled_parameters(wrapped, dialect) == expected | check_parameters
    # Which statements each engine sees: PostgreSQL's own files exist for it alone.
    seen = SqlFiles(DEFAULT_SQL_DIR, dialect).names("load")
    assert set(seen) == set(LOAD_STATEMENTS) | (
        set(POSTGRES_LOAD_STATEMENTS) if dialect == "postgresql" else set(DUCKDB_LOAD_STATEMENTS))
    copy_text = (DEFAULT_SQL_DIR / "load" / "copy_staging.postgresql.sql").read_text()
    copy_columns = re.search(r"\(([^()]*)\)\s*FROM STDIN", copy_text).group(1)
    assert [c.strip() for c in copy_columns.split(",")] == RECOMMENDATIONS_SCHEMA.names


# ------------------------------------------------------------------------------------------
# Schema and loading, on both engines
# ------------------------------------------------------------------------------------------
def test_connect_applies_the_schema_idempotently(url):
    expected = TABLE_COLUMNS
    for _ in range(2):  # the second connect re-applies the DDL on existing tables
        with Warehouse.connect(url) as warehouse:
            for table, columns in expected.items():
                found = warehouse._execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = :table ORDER BY ordinal_position", {"table": table})
                assert [row[0] for row in found.rows] == columns


def test_the_duckdb_table_has_no_key_index_and_postgres_keeps_its_primary_key(warehouse):
    # DuckDB would rewrite an ART index of every stored day at each load's commit; the load's
    # checks keep (ds, session_id, rank) unique there (test_failed_check_raises_...).
    if warehouse.dialect == "duckdb":
        found = warehouse._execute("SELECT COUNT(*) FROM duckdb_constraints() WHERE table_name = "
                                   "'recommendations' AND constraint_type = 'PRIMARY KEY'")
    else:
        found = warehouse._execute("SELECT COUNT(*) FROM information_schema.table_constraints "
                                   "WHERE table_name = 'recommendations' "
                                   "AND constraint_type = 'PRIMARY KEY'")
    assert found.rows[0][0] == (0 if warehouse.dialect == "duckdb" else 1)


def test_percent_signs_and_casts_reach_the_engine_unchanged(warehouse):
    found = warehouse._execute("SELECT '100%' AS text, 7 % 3 AS remainder, "
                               "CAST(:day AS DATE) AS day -- 50% done", {"day": "2024-03-01"})
    assert found.rows == [("100%", 1, DAY)]


def _engine_statements(warehouse: Warehouse, sql: str) -> tuple[int, int]:
    """(statements, parameters) in ``sql`` (compiled with $1, $2, ...) as the engine parses it."""
    if warehouse.dialect == "duckdb":
        statements = duckdb.extract_statements(sql)
        numbers = set().union(*(s.named_parameters for s in statements))
        assert numbers == {str(i) for i in range(1, len(numbers) + 1)}
        return len(statements), len(numbers)
    # PostgreSQL's Parse message: it refuses several statements and reports the parameters.
    from psycopg import pq

    pgconn = warehouse._engine.con.pgconn
    parsed = pgconn.prepare(b"", sql.encode())
    if parsed.status != pq.ExecStatus.COMMAND_OK:
        message = parsed.error_message.decode()
        if "multiple commands" in message:
            return 2, 0
        raise AssertionError(f"PostgreSQL cannot parse {sql!r}: {message}")
    return 1, pgconn.describe_prepared(b"").nparams


def test_every_sql_file_is_one_statement_with_the_parameters_the_engine_sees(warehouse):
    # The engine's own parser: one statement per file (no splitter), and exactly the
    # parameters SQLAlchemy found, so that none hides in a comment or a string literal.
    files = SqlFiles(warehouse.sql_dir, warehouse.dialect)
    check = fill_placeholders(files.read("checks", "row_count"), {"table": '"recommendations"'})
    placeholders = {"table": '"recommendations"', "check": check}
    seen = 0
    with warehouse._engine.transaction():
        if warehouse.dialect == "postgresql":  # the load's statements read the staging table
            warehouse._engine.run("load", "create_staging")
        for folder in SQL_FOLDERS:
            for name, path in files.files(folder).items():
                sql = fill_placeholders(path.read_text(), placeholders)
                statement = compile_sql(sql, "duckdb")  # $1, $2, ...: what both engines parse
                assert _engine_statements(warehouse, statement.sql) == \
                    (1, len(statement.params)), f"{folder}/{path.name}"
                seen += 1
    assert seen == sum(len(files.files(folder)) for folder in SQL_FOLDERS) >= 20
    # and the checks of the parser itself
    assert _engine_statements(warehouse, "SELECT 1; SELECT 2")[0] == 2
    assert _engine_statements(warehouse, "SELECT CAST($1 AS INTEGER) -- $2")[1] == 1


def test_a_custom_sql_dir_replaces_ddl_checks_and_queries_only(tmp_path):
    custom = tmp_path / "sql"
    for folder in ("ddl", "checks", "queries"):
        shutil.copytree(DEFAULT_SQL_DIR / folder, custom / folder)
    (custom / "checks" / "scores_non_increasing.sql").unlink()
    (custom / "queries" / "day_count.sql").write_text(
        "-- Rows of one day.\nSELECT COUNT(*) AS n_rows FROM recommendations "
        "WHERE ds = CAST(:ds AS DATE)")
    with Warehouse.connect(tmp_path / "w.duckdb", sql_dir=custom) as warehouse:
        assert warehouse.sql_dir == custom
        assert "scores_non_increasing" not in warehouse.list_checks()
        increasing = day_table({"s": [("a", 0.1), ("b", 0.9)]})  # passes without that check
        result = warehouse.replace_day(DAY, increasing, expected_k=2, run=RUN)
        assert result.rows_written == 2 and "scores_non_increasing" not in result.checks
        assert warehouse.run_query("day_count", ds=DAY).rows == [(2,)]
    with pytest.raises(FileNotFoundError, match="no ddl/ folder"):
        Warehouse.connect(tmp_path / "w.duckdb", sql_dir=tmp_path / "nowhere")


def test_replace_day_writes_rows_and_logs_the_run(warehouse):
    started = dt.datetime(2024, 3, 2, 3, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    run = {**RUN, "sessions_in": 4, "sessions_scored": 3, "fallbacks": 1, "quarantined": 2,
           "started_at": started}
    result = warehouse.replace_day(DAY.isoformat(), day_table(BASE), expected_k=3, run=run)

    assert (result.ds, result.rows_written, result.rows_replaced, result.sessions_scored) == \
        (DAY, 9, 0, 3)
    assert set(result.checks) == set(warehouse.list_checks()) and len(result.checks) == 5
    assert stored(warehouse, DAY)[:3] == [
        ("s1", 1, "i1", 0.9, "srgnn:3"), ("s1", 2, "i2", 0.8, "srgnn:3"),
        ("s1", 3, "i3", 0.7, "srgnn:3"),
    ]
    recommendations = warehouse.run_query("session_recommendations", ds=DAY, session_id="s2")
    assert recommendations.columns[:3] == ("rank", "item_id", "score")
    # started_at is stored as UTC and is the rows' generated_at
    assert recommendations.to_dicts()[0]["generated_at"] == dt.datetime(2024, 3, 2, 1, 0)

    [logged] = runs(warehouse, DAY)
    assert logged["run_id"] == result.run_id
    assert {k: logged[k] for k in ("status", "model_name", "model_version", "sessions_in",
                                   "sessions_scored", "fallbacks", "quarantined", "expected_k",
                                   "rows_written", "rows_replaced", "started_at", "message")} == {
        "status": "succeeded", "model_name": "srgnn", "model_version": "srgnn:3",
        "sessions_in": 4, "sessions_scored": 3, "fallbacks": 1, "quarantined": 2,
        "expected_k": 3, "rows_written": 9, "rows_replaced": 0,
        "started_at": dt.datetime(2024, 3, 2, 1, 0), "message": None,
    }
    assert logged["finished_at"] > logged["started_at"]
    assert logged["duration_seconds"] > 0
    assert warehouse.check_day(DAY, expected_k=3) == result.checks


def test_rerun_of_a_day_replaces_it_without_duplicates(warehouse):
    warehouse.replace_day(NEXT_DAY, day_table({"t1": [("i9", 1.0), ("i8", 0.5), ("i7", 0.1)]}),
                          expected_k=3, run=RUN)
    first = warehouse.replace_day(DAY, day_table(BASE), expected_k=3, run=RUN)
    rows_after_first = stored(warehouse, DAY)
    second = warehouse.replace_day(DAY, day_table(BASE), expected_k=3, run=RUN)

    assert stored(warehouse, DAY) == rows_after_first and len(rows_after_first) == 9
    assert (first.rows_replaced, second.rows_replaced, second.rows_written) == (0, 9, 9)

    # A smaller rerun leaves nothing of the previous version behind, and other days alone.
    third = warehouse.replace_day(DAY, day_table({"s9": [("i5", 0.2), ("i6", 0.1)]}),
                                  expected_k=2, run={**RUN, "model_version": "srgnn:4"})
    assert stored(warehouse, DAY) == [("s9", 1, "i5", 0.2, "srgnn:4"),
                                      ("s9", 2, "i6", 0.1, "srgnn:4")]
    assert (third.rows_replaced, third.rows_written) == (9, 2)
    assert len(stored(warehouse, NEXT_DAY)) == 3
    assert [r["status"] for r in runs(warehouse, DAY)] == ["succeeded"] * 3


def test_small_catalogue_and_empty_day(warehouse):
    # K = min(top_k, catalogue size): with two items in the catalogue every session has 2 rows
    small = day_table({"a": [("x", 0.6), ("y", 0.4)], "b": [("y", 0.9), ("x", 0.1)]})
    assert warehouse.replace_day(DAY, small, expected_k=2, run=RUN).rows_written == 4
    # A day with no active session clears the day
    empty = day_table({})
    result = warehouse.replace_day(DAY, empty, expected_k=20, run=RUN)
    assert (result.rows_written, result.rows_replaced, result.sessions_scored) == (0, 4, 0)
    assert stored(warehouse, DAY) == []


@pytest.mark.parametrize("failure", ["python_error", "database_error"])
def test_error_after_the_delete_leaves_the_previous_day_whole(warehouse, url, monkeypatch, failure):
    warehouse.replace_day(DAY, day_table(BASE), expected_k=3, run=RUN)
    before = stored(warehouse, DAY)
    seen_by_reader = []
    real_insert = Warehouse._insert_day

    def insert_then_fail(self, day):
        real_insert(self, day)  # the old rows are deleted and the new ones inserted ...
        with Warehouse.connect(url, read_only=self.dialect == "postgresql") as reader:
            seen_by_reader.extend(stored(reader, day))  # ... but no reader sees that yet
        if failure == "python_error":
            raise RuntimeError("simulated crash in the middle of the write")
        # A row the table's CHECK constraint rejects: the engine raises inside the transaction.
        self._execute("INSERT INTO recommendations SELECT ds, session_id, 0, item_id, score, "
                      "model_name, model_version, generated_at FROM recommendations "
                      "WHERE ds = CAST(:ds AS DATE)", {"ds": day})

    monkeypatch.setattr(Warehouse, "_insert_day", insert_then_fail)
    replacement = day_table({"new": [("n1", 0.9), ("n2", 0.8), ("n3", 0.7)]})
    expected_error = RuntimeError if failure == "python_error" else Exception
    with pytest.raises(expected_error) as caught:
        warehouse.replace_day(DAY, replacement, expected_k=3,
                              run={**RUN, "model_version": "srgnn:4"})
    if failure == "database_error":
        assert "constraint" in str(caught.value).lower()

    assert seen_by_reader == before
    assert stored(warehouse, DAY) == before
    statuses = [(r["status"], r["model_version"]) for r in runs(warehouse, DAY)]
    assert sorted(statuses) == [("failed", "srgnn:4"), ("succeeded", "srgnn:3")]
    failed = next(r for r in runs(warehouse, DAY) if r["status"] == "failed")
    # The database's own error is logged; what is raised is one line that says so.
    original = caught.value if failure == "python_error" else caught.value.__cause__
    assert failed["rows_written"] is None and type(original).__name__ in failed["message"]
    if failure == "database_error":
        assert isinstance(caught.value, WarehouseLoadError)
        assert "rolled back" in str(caught.value) and "\n" not in str(caught.value)
    # The connection is still usable after the rollback
    monkeypatch.undo()
    assert warehouse.replace_day(DAY, replacement, expected_k=3, run=RUN).rows_written == 3


def test_process_killed_mid_write_leaves_the_previous_day_whole(url):
    with Warehouse.connect(url) as warehouse:
        warehouse.replace_day(DAY, day_table(BASE), expected_k=3, run=RUN)
        before = stored(warehouse, DAY)
    # A child process deletes the day, inserts new rows, then dies before committing.
    child = textwrap.dedent("""
        import os, sys
        import pyarrow as pa
        from srgnn.warehouse import Warehouse

        real_insert = Warehouse._insert_day
        def insert_then_die(self, day):
            real_insert(self, day)
            os._exit(17)
        Warehouse._insert_day = insert_then_die

        table = pa.table({"session_id": ["new"] * 3, "rank": [1, 2, 3],
                          "item_id": ["n1", "n2", "n3"], "score": [0.9, 0.8, 0.7]})
        warehouse = Warehouse.connect(sys.argv[1])
        warehouse.replace_day(sys.argv[2], table, expected_k=3, run={"model_version": "srgnn:4"})
        sys.exit("the load finished although the process should have died")
    """)
    done = subprocess.run([sys.executable, "-c", child, url, DAY.isoformat()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 17, done.stderr
    with Warehouse.connect(url) as warehouse:
        assert stored(warehouse, DAY) == before
        assert [r["status"] for r in runs(warehouse, DAY)] == ["succeeded"]


def _break(table: pa.Table, column: str, index: int, value) -> pa.Table:
    values = table[column].to_pylist()
    values[index] = value
    position = table.schema.get_field_index(column)
    return table.set_column(position, column, pa.array(values, table.schema.field(column).type))


# Each case: (how to break the BASE day, the check that must catch it, text in the message)
BROKEN_DAYS = {
    "duplicate_rank": (lambda t: _break(t, "rank", 4, 1), "ranks_complete", "'s2'"),
    "rank_out_of_range": (lambda t: _break(t, "rank", 8, 4), "ranks_complete", "max_rank=4"),
    "missing_rank": (lambda t: t.slice(0, 8), "ranks_complete", "n_rows=2"),
    "increasing_scores": (lambda t: _break(t, "score", 5, 0.95), "scores_non_increasing",
                          "score=0.95"),
    "null_item": (lambda t: _break(t, "item_id", 4, None), "missing_values", "item_id=None"),
    "nan_score": (lambda t: _break(t, "score", 7, math.nan), "missing_values", "'s3'"),
    "duplicate_item": (lambda t: _break(t, "item_id", 5, "i2"), "distinct_items",
                       "item_id='i2'"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_DAYS))
def test_failed_check_raises_and_keeps_the_previous_day(warehouse, case):
    warehouse.replace_day(DAY, day_table(BASE), expected_k=3, run=RUN)
    before = stored(warehouse, DAY)
    make_broken, check, detail = BROKEN_DAYS[case]

    with pytest.raises(DataQualityError) as caught:
        warehouse.replace_day(DAY, make_broken(day_table(BASE)), expected_k=3,
                              run={**RUN, "model_version": "srgnn:bad"})
    error = caught.value
    assert error.check == check and error.ds == DAY and error.total >= 1
    assert f"check '{check}' failed for ds=2024-03-01" in str(error)
    assert detail in str(error)
    assert stored(warehouse, DAY) == before
    failed = [r for r in runs(warehouse, DAY) if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["model_version"] == "srgnn:bad"
    assert check in failed[0]["message"]


def test_row_count_check_compares_with_the_expected_rows(warehouse):
    # All sessions complete, but the scoring job says it scored four sessions.
    with pytest.raises(DataQualityError, match="row_count.*n_rows=9, expected_rows=12") as caught:
        warehouse.replace_day(DAY, day_table(BASE), expected_k=3,
                              run={**RUN, "sessions_scored": 4})
    assert caught.value.rows == [(9, 12)]
    with pytest.raises(DataQualityError, match="row_count"):
        warehouse.replace_day(DAY, day_table(BASE), expected_k=3, run=RUN, expected_rows=10)
    assert stored(warehouse, DAY) == []


def test_violations_are_counted_and_a_few_shown(warehouse):
    many = {f"s{i:02d}": [("a", 0.1), ("b", 0.9)] for i in range(12)}
    with pytest.raises(DataQualityError) as caught:
        warehouse.replace_day(DAY, day_table(many), expected_k=2, run=RUN)
    assert caught.value.check == "scores_non_increasing"
    assert caught.value.total == 12 and len(caught.value.rows) == 5
    assert "12 offending row(s) (first 5 shown)" in str(caught.value)
    copy = pickle.loads(pickle.dumps(caught.value))  # e.g. raised in a worker process
    assert (copy.check, copy.total, str(copy)) == (caught.value.check, 12, str(caught.value))


HOSTILE = [
    "x'); DROP TABLE recommendations;--",
    "'; DELETE FROM scoring_runs WHERE ''='",
    'double "quotes" and \\backslashes\\',
    "\\.",  # COPY's end-of-data marker
    "multi\nline\r\nid",
    "tab\there, comma, semicolon;",
    "%s %(ds)s :ds $1 ? {table}",
    "emoji 😀🚀 and ünïcödé, עברית",
    "  padded  ",
    "",
    "NULL",
    "x" * 5000,
]


def test_hostile_ids_are_stored_literally(warehouse):
    sessions = {
        session_id: [(HOSTILE[(i + j) % len(HOSTILE)], 1.0 - j / 10) for j in range(3)]
        for i, session_id in enumerate(HOSTILE)
    }
    table = day_table(sessions)
    warehouse.replace_day(DAY, table, expected_k=3,
                          run={"model_name": "srgnn'; --", "model_version": "v'1"})

    expected = sorted(zip(table["session_id"].to_pylist(), table["rank"].to_pylist(),
                          table["item_id"].to_pylist(), table["score"].to_pylist(),
                          ["v'1"] * table.num_rows))
    assert stored(warehouse, DAY) == expected
    for i, session_id in enumerate(HOSTILE):
        found = warehouse.run_query("session_recommendations", ds=DAY, session_id=session_id)
        assert [row[1] for row in found.rows] == [HOSTILE[(i + j) % len(HOSTILE)] for j in range(3)]
    # "" is an id, not a missing value; the tables are all still there
    assert warehouse.run_query("session_recommendations", ds=DAY, session_id="").rows
    assert len(runs(warehouse, DAY)) == 1


def test_scores_round_trip_exactly(warehouse):
    scores = [1e308, 123456789.123456789, 1 / 3, 0.1, 5e-324, 0.0, -0.0, -1 / 3, -1e308]
    table = day_table({"s": [(f"i{k}", score) for k, score in enumerate(scores)]})
    warehouse.replace_day(DAY, table, expected_k=len(scores), run=RUN)
    assert [row[3] for row in stored(warehouse, DAY)] == scores


def test_named_queries_on_hand_made_data(warehouse):
    generated = dt.datetime(2024, 3, 2, 4, 30)
    first = day_table(
        {"s1": [("i1", 0.9), ("i2", 0.8)], "s2": [("i1", 0.7), ("i3", 0.6)],
         "s3": [("i4", 0.5), ("i1", 0.4)]},
        model_version=["srgnn:3"] * 4 + ["fallback:pop"] * 2,
    )
    warehouse.replace_day(DAY, first, expected_k=2,
                          run={**RUN, "started_at": generated, "fallbacks": 1})
    second = day_table({"s9": [("i2", 0.3), ("i5", 0.2)]}, ds=[NEXT_DAY] * 2)
    warehouse.replace_day(NEXT_DAY, second, expected_k=2,
                          run={"model_version": "srgnn:4", "started_at": generated})

    assert warehouse.run_query("session_recommendations", ds=DAY, session_id="s2").rows == [
        (1, "i1", 0.7, "srgnn", "srgnn:3", generated),
        (2, "i3", 0.6, "srgnn", "srgnn:3", generated),
    ]
    assert warehouse.run_query("session_recommendations", ds=NEXT_DAY, session_id="s2").rows == []

    top = warehouse.run_query("top_items", ds=DAY, limit=10)
    assert top.columns == ("item_id", "times_recommended", "best_rank", "mean_rank")
    assert [row[:3] for row in top.rows] == [("i1", 3, 1), ("i4", 1, 1), ("i2", 1, 2), ("i3", 1, 2)]
    assert top.rows[0][3] == pytest.approx(4 / 3)
    top_two = warehouse.run_query("top_items", ds=DAY, limit=2)
    assert [row[0] for row in top_two.rows] == ["i1", "i4"]

    coverage = warehouse.run_query("coverage_by_day", start_ds=DAY, end_ds="2024-03-31")
    assert coverage.columns == ("ds", "sessions", "n_rows", "distinct_items")
    assert coverage.rows == [(DAY, 3, 6, 4), (NEXT_DAY, 1, 2, 2)]
    assert warehouse.run_query("coverage_by_day", start_ds=NEXT_DAY, end_ds=NEXT_DAY).rows == \
        [(NEXT_DAY, 1, 2, 2)]

    versions = warehouse.run_query("model_version_by_day", start_ds=DAY, end_ds=NEXT_DAY)
    assert versions.columns == ("ds", "model_name", "model_version", "sessions", "n_rows",
                                "generated_at")
    assert versions.rows == [
        (DAY, "srgnn", "srgnn:3", 2, 4, generated),
        (DAY, "srgnn", "fallback:pop", 1, 2, generated),
        (NEXT_DAY, "srgnn", "srgnn:4", 1, 2, generated),
    ]
    assert set(warehouse.list_queries()) >= {"session_recommendations", "top_items",
                                             "coverage_by_day", "model_version_by_day"}


def test_run_query_rejects_unknown_names_and_parameters(warehouse):
    for name in ("../ddl/01_recommendations", "no_such_query", "Top_Items", "top_items.sql"):
        with pytest.raises(ValueError, match="unknown query"):
            warehouse.run_query(name, ds=DAY, limit=1)
    with pytest.raises(ValueError, match=r"takes parameters \['ds', 'limit'\]"):
        warehouse.run_query("top_items", ds=DAY)
    with pytest.raises(ValueError, match="takes parameters"):
        warehouse.run_query("top_items", ds=DAY, limit=1, extra="x")


def test_read_only_connections_can_query_but_not_write(url):
    with Warehouse.connect(url) as warehouse:
        warehouse.replace_day(DAY, day_table(BASE), expected_k=3, run=RUN)
    with Warehouse.connect(url, read_only=True) as reader:
        assert len(stored(reader, DAY)) == 9
        with pytest.raises(Exception, match="(?i)read.only"):
            reader.replace_day(DAY, day_table({}), expected_k=3, run=RUN)
        assert len(stored(reader, DAY)) == 9


def test_log_run_records_runs_that_wrote_nothing(warehouse):
    run_id = warehouse.log_run(DAY, {"sessions_in": 0}, status="skipped", message="no clicks")
    [logged] = runs(warehouse, DAY)
    assert (logged["run_id"], logged["status"], logged["model_version"], logged["message"]) == \
        (run_id, "skipped", None, "no clicks")


@pytest.mark.parametrize("table, kwargs, error, match", [
    (day_table(BASE).drop_columns(["score"]), {}, ValueError, "missing \\['score'\\]"),
    (day_table(BASE).append_column("extra", pa.array([1] * 9)), {}, ValueError,
     "unknown \\['extra'\\]"),
    (day_table(BASE, ds=[NEXT_DAY] * 9), {}, ValueError, "9 row\\(s\\) have a ds other than"),
    (day_table({"s\x00": [("i", 1.0)]}), {"expected_k": 1}, ValueError, "NUL"),
    (day_table(BASE).set_column(1, "rank", pa.array([2**40] * 9)), {}, ValueError, "'rank'"),
    (day_table(BASE), {"ds": dt.datetime(2024, 3, 1)}, TypeError, "not a datetime"),
    (day_table(BASE), {"ds": "03/01/2024"}, ValueError, "YYYY-MM-DD"),
    (day_table(BASE), {"run": {"model_name": "srgnn"}}, ValueError, "model_version"),
    (day_table(BASE), {"run": {**RUN, "sesions_in": 3}}, ValueError, "unknown run key"),
    (day_table(BASE), {"expected_k": -1}, ValueError, "expected_k"),
])
def test_bad_input_is_rejected_before_anything_is_written(tmp_path, table, kwargs, error, match):
    with Warehouse.connect(f"duckdb:///{tmp_path / 'w.duckdb'}") as warehouse:
        arguments = {"ds": DAY, "table": table, "expected_k": 3, "run": RUN, **kwargs}
        with pytest.raises(error, match=match):
            warehouse.replace_day(**arguments)
        assert stored(warehouse, DAY) == [] and runs(warehouse, DAY) == []


def test_input_types_are_normalised(tmp_path):
    table = pa.table({
        "session_id": pa.array([7, 7], pa.int64()),  # numeric raw ids become strings
        "rank": pa.array([1, 2], pa.int8()),
        "item_id": pa.array(["a", "b"]).dictionary_encode(),
        "score": pa.array([0.5, 0.25], pa.float32()),
        "generated_at": pa.array([dt.datetime(2024, 3, 1, 12, tzinfo=dt.timezone.utc)] * 2,
                                 pa.timestamp("ns", tz="Europe/Paris")),
    })
    with Warehouse.connect(f"duckdb:///{tmp_path / 'w.duckdb'}") as warehouse:
        warehouse.replace_day(DAY, table, expected_k=2, run=RUN)
        found = warehouse.run_query("session_recommendations", ds=DAY, session_id="7")
        assert [(r[1], r[2], r[5]) for r in found.rows] == [
            ("a", 0.5, dt.datetime(2024, 3, 1, 12)), ("b", 0.25, dt.datetime(2024, 3, 1, 12))]


# ------------------------------------------------------------------------------------------
# Loading a day from Parquet files (what the scoring job writes), on both engines
# ------------------------------------------------------------------------------------------
def write_parquet(folder: Path, table: pa.Table, parts: int = 2) -> list[Path]:
    """``table`` split into ``parts`` Parquet files in ``folder`` (row groups of 2 rows), with
    a ``_SUCCESS`` marker and a hidden checksum file beside them, as Spark leaves them."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-00000.parquet.crc").write_text("not parquet")
    step = -(-table.num_rows // parts) if table.num_rows else 0
    files = []
    for index in range(parts):
        path = folder / f"part-{index:05d}.parquet"
        pq.write_table(table.slice(index * step, step), path, row_group_size=2)
        files.append(path)
    return files


def test_a_day_loads_from_parquet_files_as_from_the_table(warehouse, tmp_path, monkeypatch):
    monkeypatch.setattr("srgnn.warehouse.engines._COPY_BATCH_ROWS", 2)  # PostgreSQL: 5 batches
    started = dt.datetime(2024, 3, 2, 3, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    run = {**RUN, "started_at": started}
    warehouse.replace_day(NEXT_DAY, day_table(BASE), expected_k=3, run=run)
    expected = warehouse.run_query("day_recommendations", ds=NEXT_DAY).rows

    # the scoring job's per-session counts ride along and are not loaded
    table = day_table(BASE, raw_clicks=[4] * 9, unknown_clicks=[0] * 9)
    files = write_parquet(tmp_path / "rows", table, parts=3)
    first = warehouse.replace_day(DAY, tmp_path / "rows", expected_k=3, run=run,
                                  ignore_columns=("raw_clicks", "unknown_clicks", "absent"))
    assert (first.rows_written, first.rows_replaced, first.sessions_scored) == (9, 0, 3)
    found = warehouse.run_query("day_recommendations", ds=DAY).rows
    assert [row[1:] for row in found] == [row[1:] for row in expected]
    assert {row[-1] for row in found} == {dt.datetime(2024, 3, 2, 1, 0)}  # started_at in UTC

    # a list of files; the columns the files hold win over the run's values
    per_row = day_table(BASE, model_version=["fallback:pop"] * 3 + ["srgnn:3"] * 6,
                        ds=[DAY] * 9, model_name=["other"] * 9,
                        generated_at=pa.array([dt.datetime(2024, 3, 1, 12, tzinfo=dt.timezone.utc)] * 9,
                                              pa.timestamp("ns", tz="Europe/Paris")))
    files = write_parquet(tmp_path / "per_row", per_row.cast(per_row.schema), parts=2)
    second = warehouse.replace_day(DAY, files, expected_k=3, run=RUN)
    assert (second.rows_written, second.rows_replaced) == (9, 9)
    rows = warehouse.run_query("day_recommendations", ds=DAY).to_dicts()
    assert [r["model_version"] for r in sorted(rows, key=lambda r: (r["session_id"], r["rank"]))] \
        == ["fallback:pop"] * 3 + ["srgnn:3"] * 6
    assert {(r["model_name"], r["generated_at"]) for r in rows} == {
        ("other", dt.datetime(2024, 3, 1, 12))}
    assert [r["status"] for r in runs(warehouse, DAY)] == ["succeeded"] * 2


def test_a_failed_check_on_parquet_files_rolls_the_load_back(warehouse, tmp_path, monkeypatch):
    monkeypatch.setattr("srgnn.warehouse.engines._COPY_BATCH_ROWS", 2)
    warehouse.replace_day(DAY, day_table(BASE), expected_k=3, run=RUN)
    before = stored(warehouse, DAY)
    broken = _break(day_table(BASE), "score", 5, 0.95)  # s2's third score goes up
    write_parquet(tmp_path / "rows", broken, parts=3)
    with pytest.raises(DataQualityError, match="scores_non_increasing"):
        warehouse.replace_day(DAY, tmp_path / "rows", expected_k=3,
                              run={**RUN, "model_version": "srgnn:bad"})
    assert stored(warehouse, DAY) == before
    [failed] = [r for r in runs(warehouse, DAY) if r["status"] == "failed"]
    assert failed["model_version"] == "srgnn:bad" and failed["sessions_scored"] == 3
    # and a row count that the files do not have
    write_parquet(tmp_path / "short", day_table(BASE).slice(0, 6), parts=2)
    with pytest.raises(DataQualityError, match="row_count"):
        warehouse.replace_day(DAY, tmp_path / "short", expected_k=3,
                              run={**RUN, "sessions_scored": 3})
    assert stored(warehouse, DAY) == before


@pytest.mark.parametrize("table, match", [
    (day_table({"s1": [("i", 1.0)], "s\x00": [("i", 1.0)]}), "'session_id' holds a NUL"),
    (day_table({"a": [("i", 1.0)], "b": [("j", 1.0)]}, ds=[DAY, NEXT_DAY]),
     "1 row\\(s\\) have a ds other than 2024-03-01"),
])
def test_values_the_table_cannot_take_in_parquet_files_roll_the_load_back(warehouse, tmp_path,
                                                                          table, match):
    warehouse.replace_day(DAY, day_table({"kept": [("i", 1.0)]}), expected_k=1, run=RUN)
    write_parquet(tmp_path / "rows", table, parts=2)  # the bad row is in the last file
    with pytest.raises(ValueError, match=match):
        warehouse.replace_day(DAY, tmp_path / "rows", expected_k=1, run=RUN)
    assert stored(warehouse, DAY) == [("kept", 1, "i", 1.0, "srgnn:3")]
    assert sorted(r["status"] for r in runs(warehouse, DAY)) == ["failed", "succeeded"]


@pytest.mark.parametrize("files, match", [
    (lambda d: write_parquet(d, day_table(BASE).drop_columns(["score"])), "missing \\['score'\\]"),
    (lambda d: write_parquet(d, day_table(BASE).append_column("extra", pa.array([1] * 9))),
     "unknown \\['extra'\\]"),
    (lambda d: write_parquet(d, day_table(BASE, rank_list=[[1]] * 9).drop_columns(["rank"])
                             .rename_columns(["session_id", "item_id", "score", "rank"])),
     "column 'rank' of type list<element: int64> cannot be stored as int32"),
    (lambda d: write_parquet(d, day_table(BASE))[:1] + write_parquet(
        d / "more", day_table(BASE).drop_columns(["rank"]).append_column("other", pa.array([1] * 9)))[:1],
     "Parquet files with different columns"),
    (lambda d: d, "no Parquet file \\(\\*.parquet\\) in"),
    (lambda d: [], "an empty list of Parquet files"),
    (lambda d: [d / "missing.parquet"], "no Parquet file at"),
    (lambda d: d / "nowhere", "no folder of Parquet files at"),
    (lambda d: [write_text_file(d / "x.parquet", "not parquet")], "is not a readable Parquet file"),
])
def test_bad_parquet_files_are_rejected_before_anything_is_written(tmp_path, files, match):
    folder = tmp_path / "rows"
    folder.mkdir()
    with Warehouse.connect(f"duckdb:///{tmp_path / 'w.duckdb'}") as warehouse:
        with pytest.raises(ValueError, match=match):
            warehouse.replace_day(DAY, files(folder), expected_k=3, run=RUN)
        assert stored(warehouse, DAY) == [] and runs(warehouse, DAY) == []


def write_text_file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_concurrent_loads_of_a_day_are_serialised_on_postgres(request, monkeypatch):
    server = request.getfixturevalue("postgres_server")
    url = server.create_database(f"warehouse_test_{next(_database_names)}")
    other_table = day_table({"other": [("o1", 0.9), ("o2", 0.8), ("o3", 0.7)]})
    outcome = {}

    def second_writer():
        try:
            with Warehouse.connect(url) as other:
                outcome["result"] = other.replace_day(DAY, other_table, expected_k=3, run=RUN)
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = exc

    real_insert = Warehouse._insert_day
    writer = threading.Thread(target=second_writer)

    def insert_then_let_another_writer_start(self, day):
        real_insert(self, day)
        if not writer.is_alive() and "result" not in outcome:
            writer.start()
            writer.join(timeout=1.0)
            outcome["blocked"] = writer.is_alive()  # waits for our lock, does not collide

    with Warehouse.connect(url) as warehouse:
        monkeypatch.setattr(Warehouse, "_insert_day", insert_then_let_another_writer_start)
        warehouse.replace_day(DAY, day_table(BASE), expected_k=3, run=RUN)
        writer.join(timeout=30)
        assert outcome.get("blocked") is True and "error" not in outcome, outcome
        assert outcome["result"].rows_replaced == 9
        assert stored(warehouse, DAY) == [("other", r, f"o{r}", round(1 - r / 10, 1), "srgnn:3")
                                          for r in (1, 2, 3)]


# ------------------------------------------------------------------------------------------
# Upgrades, locks held by other connections, warehouses that cannot be opened
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("missing, old_columns", [
    ("0[4-7]_*.sql", 16),  # the run log before any count column
    ("07_*.sql", 19),  # the release before category_fallbacks
], ids=["before-counts", "before-category-fallbacks"])
def test_connect_upgrades_a_run_log_made_before_the_count_columns(url, tmp_path, missing,
                                                                   old_columns):
    # A warehouse made by an earlier release: its DDL without the files that add columns.
    old_sql = tmp_path / "old_sql"
    shutil.copytree(DEFAULT_SQL_DIR, old_sql)
    for path in (old_sql / "ddl").glob(missing):
        path.unlink()
    with Warehouse.connect(url, sql_dir=old_sql) as old:
        old._execute("INSERT INTO scoring_runs (run_id, ds, status, finished_at, sessions_in) "
                     "VALUES ('old-run', CAST(:ds AS DATE), 'succeeded', "
                     "CAST('2024-03-01 01:00:00' AS TIMESTAMP), 7)", {"ds": DAY})
        found = old._execute("SELECT column_name FROM information_schema.columns WHERE "
                             "table_name = 'scoring_runs' ORDER BY ordinal_position")
        assert [row[0] for row in found.rows] == TABLE_COLUMNS["scoring_runs"][:old_columns]
    for _ in range(2):  # upgraded once, then left alone
        with Warehouse.connect(url) as warehouse:
            found = warehouse._execute("SELECT column_name FROM information_schema.columns "
                                       "WHERE table_name = 'scoring_runs' "
                                       "ORDER BY ordinal_position")
            assert [row[0] for row in found.rows] == TABLE_COLUMNS["scoring_runs"]
    with Warehouse.connect(url) as warehouse:
        warehouse.replace_day(DAY, day_table(BASE), expected_k=3,
                              run={**RUN, "clicks_read": 40, "duplicates_dropped": 3,
                                   "unknown_clicks": 2, "quarantined": 1, "fallbacks": 2,
                                   "category_fallbacks": 1})
        logged = {r["run_id"]: r for r in runs(warehouse, DAY)}
    old_row = logged.pop("old-run")
    assert (old_row["sessions_in"], old_row["clicks_read"], old_row["duplicates_dropped"],
            old_row["unknown_clicks"], old_row["category_fallbacks"]) == (7, None, None, None, None)
    [new_row] = logged.values()
    assert {k: new_row[k] for k in ("clicks_read", "quarantined", "duplicates_dropped",
                                    "unknown_clicks", "fallbacks", "category_fallbacks")} == \
        {"clicks_read": 40, "quarantined": 1, "duplicates_dropped": 3, "unknown_clicks": 2,
         "fallbacks": 2, "category_fallbacks": 1}


def test_a_failed_run_the_run_log_cannot_take_goes_to_the_failed_runs_file(tmp_path,
                                                                           monkeypatch):
    from srgnn.warehouse.runlog import read_failed_runs

    failed_runs = tmp_path / "logs" / "failed.jsonl"
    with Warehouse.connect(tmp_path / "w.duckdb", failed_runs=failed_runs) as warehouse:
        warehouse.replace_day(DAY, day_table(BASE), expected_k=3, run=RUN)

        def lost(self, row, **kwargs):
            raise duckdb.IOException("IO Error: the disk went away")

        monkeypatch.setattr(Warehouse, "_append_run", lost)
        with pytest.raises(WarehouseLoadError, match="rolled back.*the disk went away"):
            warehouse.replace_day(DAY, day_table({"n": [("a", 1.0)]}), expected_k=1,
                                  run={**RUN, "model_version": "srgnn:9", "clicks_read": 5})
        monkeypatch.undo()
        assert len(stored(warehouse, DAY)) == 9  # the previous day, whole
    [record] = read_failed_runs(failed_runs)
    assert {k: record[k] for k in ("ds", "status", "model_version", "clicks_read")} == \
        {"ds": "2024-03-01", "status": "failed", "model_version": "srgnn:9", "clicks_read": 5}
    assert "the disk went away" in record["message"]
    assert "the disk went away" in record["not_logged_because"]
    assert record["warehouse"].endswith("w.duckdb") and record["finished_at"]


def test_an_unreachable_postgres_server_is_one_line_without_the_password():
    from srgnn.warehouse import WarehouseUnavailable

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+psycopg://srgnn:s3cret@127.0.0.1:{port}/warehouse"
    with pytest.raises(WarehouseUnavailable) as caught:
        Warehouse.connect(url, lock_wait_seconds=0)
    message = str(caught.value)
    assert message.startswith(f"cannot open the warehouse postgresql+psycopg://srgnn:***@"
                              f"127.0.0.1:{port}/warehouse: ")
    assert "s3cret" not in message and "\n" not in message


def test_a_file_that_is_no_duckdb_database_is_one_line(tmp_path):
    from srgnn.warehouse import WarehouseUnavailable

    not_a_database = tmp_path / "notes.duckdb"
    not_a_database.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(WarehouseUnavailable, match="cannot open the warehouse .*notes.duckdb"):
        Warehouse.connect(not_a_database)
    assert not_a_database.read_text().startswith("these are my notes")


def test_hide_secrets_hides_the_password_in_any_text():
    from srgnn.warehouse.urls import hide_secrets

    url = "postgresql://u:p%40ss@h/db?password=q1"
    assert hide_secrets("auth failed for u with p@ss and q1", url) == \
        "auth failed for u with *** and ***"
    assert hide_secrets("nothing to hide", "duckdb:///w.duckdb") == "nothing to hide"


@pytest.fixture
def postgres_url(request):
    server = request.getfixturevalue("postgres_server")
    return server.create_database(f"warehouse_test_{next(_database_names)}")


@contextmanager
def postgres_lock(url: str, statement: str):
    """Another session holding a lock (``statement``) in an open transaction; yields its pid."""
    import psycopg

    with psycopg.connect(WarehouseURL.parse(url).target, autocommit=True,
                         application_name="analyst") as other:
        other.execute("BEGIN")
        other.execute(statement)
        try:
            yield other.info.backend_pid
        finally:
            other.execute("ROLLBACK")


def test_a_postgres_load_gives_up_on_a_held_table_lock_and_logs_the_run(postgres_url, caplog):
    from srgnn.warehouse import WarehouseLocked

    with Warehouse.connect(postgres_url) as warehouse:
        warehouse.replace_day(DAY, day_table(BASE), expected_k=3, run=RUN)
        before = stored(warehouse, DAY)
    with postgres_lock(postgres_url,
                       "LOCK TABLE recommendations IN SHARE ROW EXCLUSIVE MODE") as holder, \
            Warehouse.connect(postgres_url, lock_wait_seconds=1.5) as warehouse:
        started = time.monotonic()
        with pytest.raises(WarehouseLocked) as caught:
            warehouse.replace_day(DAY, day_table({"n": [("a", 1.0)]}), expected_k=1,
                                  run={**RUN, "model_version": "srgnn:4"})
        assert 1.4 < time.monotonic() - started < 10
        message = str(caught.value)
        assert message.startswith("the table recommendations (another load holds it until it "
                                  f"commits) is held by PID {holder} (analyst, user ")
        assert "ShareRowExclusiveLock on recommendations" in message and "\n" not in message
        waits = [r.getMessage() for r in caplog.records if "waiting for the table" in r.getMessage()]
        assert waits and all(f"PID {holder}" in line for line in waits)
        assert stored(warehouse, DAY) == before
        failed = [r for r in runs(warehouse, DAY) if r["status"] == "failed"]
        assert [r["model_version"] for r in failed] == ["srgnn:4"]
        assert "WarehouseLocked" in failed[0]["message"]


def test_a_postgres_load_goes_on_when_the_table_lock_is_released(postgres_url, caplog):
    with Warehouse.connect(postgres_url) as warehouse:
        warehouse.replace_day(DAY, day_table(BASE), expected_k=3, run=RUN)
    release = threading.Event()

    def hold():
        with postgres_lock(postgres_url, "LOCK TABLE recommendations IN EXCLUSIVE MODE"):
            held.set()
            release.wait(30)

    held = threading.Event()
    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        threading.Timer(1.5, release.set).start()
        with Warehouse.connect(postgres_url, lock_wait_seconds=30) as warehouse:
            started = time.monotonic()
            result = warehouse.replace_day(DAY, day_table({"n": [("a", 1.0)]}), expected_k=1,
                                           run=RUN)
            assert time.monotonic() - started > 1.0
            assert (result.rows_written, result.rows_replaced) == (1, 9)
            assert [r["status"] for r in runs(warehouse, DAY)] == ["succeeded"] * 2
    finally:
        release.set()
        holder.join(30)
    assert any("waiting for the table recommendations" in r.getMessage() for r in caplog.records)


def test_postgres_ddl_waits_for_writers_but_not_for_readers(postgres_url):
    from srgnn.warehouse import WarehouseLocked

    Warehouse.connect(postgres_url).close()
    # An analyst's session idle in a transaction that read the run log: connecting (and so
    # applying the DDL) must not wait for it, as an ALTER TABLE would.
    with postgres_lock(postgres_url, "SELECT COUNT(*) FROM scoring_runs"):
        started = time.monotonic()
        Warehouse.connect(postgres_url, lock_wait_seconds=5).close()
        assert time.monotonic() - started < 3
    with postgres_lock(postgres_url, "LOCK TABLE scoring_runs IN ACCESS EXCLUSIVE MODE") as pid:
        with pytest.raises(WarehouseLocked, match=f"PID {pid} \\(analyst.*AccessExclusiveLock "
                                                  "on scoring_runs"):
            Warehouse.connect(postgres_url, lock_wait_seconds=0.5)
