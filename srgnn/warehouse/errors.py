"""The warehouse's errors: each one a single line that says what went wrong and where.

- :class:`WarehouseError`: the base class (the command line prints it as one ``error:`` line);
- :class:`WarehouseUnavailable`: the warehouse cannot be opened or its schema applied (a
  PostgreSQL server that does not answer, a file that is no DuckDB database, no permission);
- :class:`WarehouseLocked`: a lock the warehouse needs stayed held by another process for
  the whole lock wait (a DuckDB file open elsewhere, a PostgreSQL table locked by another
  writer);
- :class:`WarehouseLoadError`: the database refused or lost a load; it was rolled back;
- :class:`DataQualityError`: a data-quality check found violations; the load was rolled back.

Messages name the warehouse by its URL with the password hidden.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any


class WarehouseError(RuntimeError):
    """Base class of the warehouse's errors."""


class WarehouseUnavailable(WarehouseError):
    """The warehouse cannot be opened (or its schema applied)."""


class WarehouseLocked(WarehouseError):
    """A lock stayed held by another process for the whole lock wait.

    ``holder`` says who holds it when the engine tells (e.g. ``python3.11 (PID 4242)``),
    ``waited`` how many seconds were spent waiting.
    """

    def __init__(self, message: str, holder: str | None = None, waited: float = 0.0):
        super().__init__(message)
        self.holder = holder
        self.waited = waited

    def __reduce__(self):  # keeps the fields when the error crosses a process boundary
        return (type(self), (self.args[0], self.holder, self.waited))


class WarehouseLoadError(WarehouseError):
    """The database refused a load or lost its connection during one; it was rolled back."""


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


def first_line(error: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message`` of a driver's error, for a one-line message."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
