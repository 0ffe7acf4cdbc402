"""Warehouse URLs: which engine a URL names, what its driver connects to, and how to show it.

SQLAlchemy parses the URLs (:func:`sqlalchemy.engine.make_url`, without loading any dialect);
this module decides which ones the warehouse serves and what each driver receives:

- DuckDB: ``duckdb:///relative/path.duckdb``, ``duckdb:////absolute/path.duckdb``
  (SQLAlchemy's convention: the path is whatever follows the third slash, percent-decoded),
  ``duckdb:///:memory:`` (also ``duckdb://``), or a plain file path (any text without
  ``://``, taken as it is). The target is the file path or ``:memory:``.
- PostgreSQL: ``postgresql+psycopg://user:password@host:5432/db`` (also ``postgresql://``,
  ``postgres://`` and ``+psycopg2``), served by psycopg 3. The target is the same URL as libpq
  reads it (``postgresql://...``); libpq parameters ride in the query string, e.g.
  ``?sslmode=require`` or ``?options=-csearch_path%3Danalytics`` to use another schema.

:func:`redact_url` hides the password (and a ``password`` query parameter) for logs and error
messages; :func:`hide_secrets` hides it in other text (a driver's error message).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

_DUCKDB_FORMS = ("use duckdb:///relative/path.duckdb, duckdb:////absolute/path.duckdb or "
                 "duckdb:///:memory:")
_POSTGRES_DRIVERS = ("", "psycopg", "psycopg2")
_HIDDEN = "***"


@dataclass(frozen=True)
class WarehouseURL:
    """The engine a warehouse URL names and what its driver connects to."""

    dialect: str  # "duckdb" | "postgresql"
    target: str  # DuckDB: file path or ":memory:"; Postgres: a libpq URL (postgresql://...)

    @classmethod
    def parse(cls, url: str | os.PathLike) -> "WarehouseURL":
        """Parse ``url``; ValueError says what is wrong with one the warehouse cannot serve."""
        if isinstance(url, os.PathLike):
            return cls("duckdb", os.fspath(url))
        if not isinstance(url, str) or not url:
            raise ValueError(f"warehouse URL must be a non-empty string, got {url!r}")
        if "://" not in url:
            return cls("duckdb", url)  # a plain path
        parsed = _parse(url)
        backend, _, driver = parsed.drivername.lower().partition("+")
        if backend == "duckdb":
            if (driver or parsed.host or parsed.port is not None or parsed.username
                    or parsed.password is not None or parsed.query):
                raise ValueError(f"bad DuckDB URL {redact_url(url)!r}: it takes no driver, host, "
                                 f"user, password or query string; {_DUCKDB_FORMS}")
            return cls("duckdb", parsed.database or ":memory:")
        if backend in ("postgresql", "postgres"):
            if driver not in _POSTGRES_DRIVERS:
                raise ValueError(f"unsupported PostgreSQL driver {driver!r} in URL; use "
                                 "postgresql+psycopg://")
            libpq = parsed.set(drivername="postgresql")
            return cls("postgresql", libpq.render_as_string(hide_password=False))
        raise ValueError(f"unsupported warehouse URL scheme {parsed.drivername!r}; expected "
                         "duckdb:/// or postgresql+psycopg://")


def redact_url(url: str | os.PathLike) -> str:
    """The URL with its password replaced by ``***`` (for logs and error messages).

    A URL without a password, and a plain path, come back unchanged; one that cannot be parsed
    comes back as its scheme only, since where its password is cannot be known.
    """
    text = os.fspath(url)
    try:
        parsed = _parsed(text)
    except ValueError:
        return text.partition("://")[0] + "://<unparseable URL>"
    secret_keys = [] if parsed is None else _password_keys(parsed)
    if parsed is None or (parsed.password is None and not secret_keys):
        return text
    if secret_keys:
        parsed = parsed.update_query_dict({key: _HIDDEN for key in secret_keys})
    return parsed.render_as_string(hide_password=True)


def hide_secrets(text: str, url: str | os.PathLike) -> str:
    """``text`` (e.g. a driver's error message) with the password of ``url`` replaced by
    ``***`` wherever it appears, as given or percent-decoded."""
    try:
        parsed = _parsed(os.fspath(url))
    except ValueError:
        return text
    secrets = [] if parsed is None or not parsed.password else [parsed.password]
    for key in [] if parsed is None else _password_keys(parsed):
        value = parsed.query[key]
        secrets.extend([value] if isinstance(value, str) else list(value))
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, _HIDDEN)
    return text


def _parsed(text: str) -> URL | None:
    """The parsed URL, ``None`` for a plain path; ValueError when it cannot be parsed."""
    return _parse(text) if "://" in text else None


def _password_keys(parsed: URL) -> list[str]:
    return [key for key in parsed.query if key.lower() == "password"]


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except (ArgumentError, ValueError) as exc:  # ValueError: e.g. a port that is no number
        scheme = url.partition("://")[0]
        raise ValueError(f"cannot parse the warehouse URL ({scheme}://...): {exc}") from None
