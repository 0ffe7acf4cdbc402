r"""The warehouse's SQL files: finding them, reading them, and compiling them for a driver.

The files live in ``sql/`` next to this module, so they ship inside the package (package data
``sql/*/*.sql``), one folder per use:

- ``ddl/``: ``CREATE ... IF NOT EXISTS``, applied in name order on every connect;
- ``checks/``: the data-quality checks run on every load, each returning the violating rows;
- ``queries/``: for downstream users, run by name with ``Warehouse.run_query``;
- ``load/``: the statements of a load and of the run log (count, delete and insert a day,
  append a run, stage and lock on PostgreSQL and name who holds a lock, the wrappers that
  count a check's violations);
- ``session/``: settings of a connection, run when it opens (PostgreSQL's ``lock_timeout``
  also for each try at a lock).

Each file holds exactly one statement, explained by the comments at its top. A file
``NAME.duckdb.sql`` or ``NAME.postgresql.sql`` overrides ``NAME.sql`` for that engine; a
name with only an engine-specific file exists for that engine alone.

The SQL is portable with ``:name`` parameters. SQLAlchemy's ``text()`` construct compiles it
for each driver: DuckDB gets ``$1, $2, ...`` (its values are passed in :attr:`Statement.params`
order), psycopg gets ``%(name)s`` with every literal ``%`` doubled. Values are always bound,
never formatted into SQL. The rules are SQLAlchemy's: a ``::`` cast is not a parameter, but a
parameter cannot be cast that way (write ``CAST(:ds AS DATE)``), and a colon before a name
that is not a parameter, even in a string literal or a comment, is written ``\:``.

The only text substituted into SQL is a ``{name}`` placeholder from a fixed set, anywhere in
the file (comments too): ``{table}`` in a check, a name from a fixed set quoted by
:func:`quote_identifier`; ``{check}`` in ``load/check_*.sql``, the text of a check file.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine.default import DefaultDialect

DEFAULT_SQL_DIR = Path(__file__).resolve().parent / "sql"
DIALECTS = ("duckdb", "postgresql")
NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")  # names of files, tables and run statuses

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# `:name::type` reads as no parameter at all to text(), and the SQL would reach the engine so.
_CAST_PARAMETER = re.compile(r"(?<![:\w\\]):\w+::")


def _sqlalchemy_dialect(dialect: str) -> DefaultDialect:
    if dialect == "postgresql":
        return PGDialect_psycopg()
    return DefaultDialect(paramstyle="numeric_dollar")  # DuckDB: $1, $2, ... (no SA dialect)


@dataclass(frozen=True)
class Statement:
    """One SQL statement in the driver's placeholder style, and its parameter names."""

    sql: str
    params: tuple[str, ...]  # each name once, in order of first appearance ($1, $2, ...)
    positional: bool  # DuckDB: values as a list in `params` order; psycopg: a mapping

    def bind(self, values: Mapping[str, Any]) -> list[Any] | dict[str, Any]:
        """The statement's values, taken from ``values`` (which may hold more), for the driver."""
        missing = [name for name in self.params if name not in values]
        if missing:
            raise ValueError(f"missing SQL parameter(s): {', '.join(missing)}")
        if self.positional:
            return [values[name] for name in self.params]
        return {name: values[name] for name in self.params}


def compile_sql(text: str, dialect: str,
                placeholders: Mapping[str, str] | None = None) -> Statement:
    """Turn portable SQL (``:name`` parameters) into ``dialect``'s driver style.

    ``{name}`` placeholders are filled from ``placeholders`` (validated, quoted values); any
    other placeholder is an error.
    """
    if dialect not in DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}; expected one of {DIALECTS}")
    return _compile(fill_placeholders(text, placeholders or {}), dialect)


@functools.lru_cache(maxsize=512)
def _compile(text: str, dialect: str) -> Statement:
    cast = _CAST_PARAMETER.search(text)
    if cast:
        name = cast.group(0)[1:-2]
        raise ValueError(f"SQL parameter :{name} is cast with '::', which SQLAlchemy does not "
                         f"read as a parameter; write CAST(:{name} AS type)")
    compiled = sqlalchemy.text(text).compile(dialect=_sqlalchemy_dialect(dialect))
    if compiled.positiontup is not None:
        return Statement(compiled.string, tuple(compiled.positiontup), positional=True)
    return Statement(compiled.string, tuple(compiled.binds), positional=False)


def fill_placeholders(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each ``{name}`` replaced by ``values[name]`` (one pass: the inserted text
    is not searched again); a placeholder without a value raises ValueError."""
    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in values:
            raise ValueError(f"SQL placeholder {{{name}}} has no value")
        return values[name]

    return _PLACEHOLDER.sub(replace, text)


def quote_identifier(name: str, allowed: frozenset[str]) -> str:
    """Quote a table name that belongs to ``allowed`` (and looks like a plain name)."""
    if name not in allowed or not NAME.match(name):
        raise ValueError(f"table name {name!r} is not one of {sorted(allowed)}")
    return f'"{name}"'


def sql_files(sql_dir: Path, folder: str, dialect: str) -> dict[str, Path]:
    """Name -> file of ``sql_dir/folder``, engine-specific files winning over portable ones."""
    found: dict[str, Path] = {}
    for path in sorted((Path(sql_dir) / folder).glob("*.sql")):
        stem = path.name[: -len(".sql")]
        base, _, suffix = stem.rpartition(".")
        if base and suffix in DIALECTS:
            if suffix == dialect:
                found[base] = path
        elif stem not in found:
            found[stem] = path
    return dict(sorted(found.items()))


class SqlFiles:
    """The SQL files under one ``sql/`` folder as one engine sees them."""

    def __init__(self, root: str | Path, dialect: str):
        if dialect not in DIALECTS:
            raise ValueError(f"unknown SQL dialect {dialect!r}; expected one of {DIALECTS}")
        self.root = Path(root)
        self.dialect = dialect

    def __repr__(self) -> str:
        return f"SqlFiles({str(self.root)!r}, {self.dialect!r})"

    def files(self, folder: str) -> dict[str, Path]:
        """Name -> file of one folder (see :func:`sql_files`)."""
        return sql_files(self.root, folder, self.dialect)

    def names(self, folder: str) -> list[str]:
        return list(self.files(folder))

    def read(self, folder: str, name: str) -> str:
        """The text of ``folder/name``; ValueError names the files there if it is not one."""
        files = self.files(folder)
        if not NAME.match(name) or name not in files:
            raise ValueError(f"no SQL file {folder}/{name!r} for {self.dialect} under "
                             f"{self.root}; available: {', '.join(files)}")
        return files[name].read_text()

    def statement(self, folder: str, name: str,
                  placeholders: Mapping[str, str] | None = None) -> Statement:
        """The compiled statement of ``folder/name``."""
        return compile_sql(self.read(folder, name), self.dialect, placeholders)
