"""Waiting for a lock the warehouse needs: a bounded wait with growing pauses, each one logged.

Another process can hold what a writer needs. A DuckDB file is open for writing in one process
at a time, and any process holding it open (a writer, or a reader with a read-only connection)
keeps every other process from opening it for writing. On PostgreSQL a load takes a lock on
``recommendations`` that another load holds until it commits, and the DDL applied on connect
waits for the transactions using the tables it alters.

:func:`wait_for_lock` runs an attempt and, while the attempt fails because of a lock, tries
again after a pause (0.25 s, doubling up to 5 s, plus up to 0.25 s of jitter; tenacity), until
the wait (``SRGNN_WAREHOUSE_LOCK_WAIT_SECONDS``) is spent. Before each pause it logs a warning
naming what it waits for and, when the engine says so, who holds it. When the wait runs out
it raises :class:`~srgnn.warehouse.errors.WarehouseLocked`, one line. An attempt is told how
long it may itself wait in a lock queue (PostgreSQL's ``lock_timeout``): at most
:data:`ATTEMPT_SECONDS`, never past the end of the wait.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import tenacity

from srgnn.warehouse.errors import WarehouseLocked

log = logging.getLogger(__name__)

T = TypeVar("T")

ATTEMPT_SECONDS = 1.0  # the longest one attempt waits in a lock queue (PostgreSQL)
MIN_ATTEMPT_SECONDS = 0.01  # PostgreSQL reads a lock_timeout of 0 as "wait for ever"
FIRST_PAUSE = 0.25
MAX_PAUSE = 5.0


def wait_for_lock(attempt: Callable[[float], T], *, seconds: float, what: str,
                  is_locked: Callable[[BaseException], bool],
                  holder: Callable[[BaseException], str | None] | None = None,
                  advice: str = "", sleep: Callable[[float], None] = time.sleep) -> T:
    """``attempt(timeout)``'s result, trying again while it fails on a lock, for ``seconds``.

    ``what`` names the lock in messages ("the DuckDB file /var/w.duckdb"); ``is_locked`` tells
    a lock error from any other (which is raised at once); ``holder`` describes who holds the
    lock from such an error, or returns None; ``advice`` ends the message of the
    :class:`WarehouseLocked` raised when the wait is spent. ``seconds=0`` makes one attempt.
    """
    seconds = max(float(seconds), 0.0)
    started = time.monotonic()
    deadline = started + seconds
    seen: dict[str, str | None] = {"holder": None}

    def describe(error: BaseException | None) -> str | None:
        if holder is None or error is None:
            return None
        try:
            return holder(error)
        except Exception:  # noqa: BLE001 - who holds the lock is a courtesy, never a new error
            log.debug("could not tell who holds %s", what, exc_info=True)
            return None

    def pause(state: tenacity.RetryCallState) -> float:
        grown = min(FIRST_PAUSE * 2 ** (state.attempt_number - 1), MAX_PAUSE)
        return max(0.0, min(grown + random.uniform(0, FIRST_PAUSE), deadline - time.monotonic()))

    def before_pause(state: tenacity.RetryCallState) -> None:
        who = describe(state.outcome.exception()) or seen["holder"]
        seen["holder"] = who
        log.warning("waiting for %s%s: %.1f of %g s spent, trying again in %.1f s", what,
                    f", held by {who}" if who else "", time.monotonic() - started, seconds,
                    state.upcoming_sleep)

    def timeout() -> float:
        return max(min(ATTEMPT_SECONDS, deadline - time.monotonic()), MIN_ATTEMPT_SECONDS)

    retrying = tenacity.Retrying(retry=tenacity.retry_if_exception(is_locked),
                                 stop=tenacity.stop_after_delay(seconds), wait=pause,
                                 before_sleep=before_pause, reraise=True, sleep=sleep)
    try:
        return retrying(lambda: attempt(timeout()))
    except Exception as error:
        if not is_locked(error):
            raise
        who = describe(error) or seen["holder"]
        waited = time.monotonic() - started
        by = f"held by {who}" if who else "held by another process"
        raise WarehouseLocked(
            f"{what} is {by} and was still locked after waiting {waited:.1f} s (lock wait "
            f"{seconds:g} s, SRGNN_WAREHOUSE_LOCK_WAIT_SECONDS){advice}",
            holder=who, waited=waited) from error
