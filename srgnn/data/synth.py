"""A synthetic but realistic clickstream, for the demo, the tests and the benchmarks.

Sessions are driven by latent shopping intents, so that there is something to learn:

* the catalogue is split into ``intents`` groups of items; intents and the items inside an
  intent have Zipf-like popularity (a few items get most clicks, a long tail gets few);
* a session picks an intent and browses it: the next click is usually a "successor" of the
  current item in the intent's browsing order (1-3 steps ahead), sometimes a popular item of
  the same intent, sometimes a re-click of an earlier item (including the same item twice in
  a row), and now and then the visitor switches to another intent;
* session lengths are geometric (mean about 4 clicks, many single clicks, a few long ones);
* sessions start over ``days`` days with a daily rhythm, clicks 5 s to a few minutes apart;
* a configurable share of lines is malformed the way real logs are (wrong field count, bad or
  out-of-range timestamp, empty ids), and a small share of events is logged twice;
* with ``users`` > 0, a ``user_share`` of the sessions is logged in: its user is drawn from
  ``users`` accounts with Zipf-like activity (a few users have many sessions and come back
  often), and 70% of a user's sessions browse the user's favourite intent, one of the first
  half of the intents for the most active fifth of the users and of the second half for the
  others; so whether a user comes back shows in what the session browses. The output then
  has a fourth column ``user_id`` (empty for anonymous sessions).

Everything is vectorised over sessions (one loop over click positions, not over sessions), so
ten million clicks take well under a minute. Output is the generic CSV format
(``session_id,timestamp,item_id[,user_id]``, epoch seconds), optionally one file per day under
``ds=YYYY-MM-DD/`` folders and gzip-compressed.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import os
from dataclasses import dataclass

import numpy as np

BAD_KINDS = ("field_count", "bad_timestamp", "timestamp_out_of_range", "empty_session_id", "empty_item_id")


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the generator (defaults: a small shop's few days)."""

    sessions: int = 20_000  # number of sessions
    items: int = 2_000  # catalogue size
    intents: int = 60  # latent browsing intents (item groups)
    days: int = 7  # days covered, ending the day before ``end_date``
    end_date: str = "2026-11-28"  # last day of clicks (inclusive), YYYY-MM-DD
    mean_length: float = 4.0  # mean session length (geometric)
    max_length: int = 40  # longest session
    bad_share: float = 0.01  # share of output lines that are malformed
    duplicate_share: float = 0.005  # share of events logged twice
    seed: int = 0
    # Share of next clicks that follow the current item in its intent's browsing order (1-3
    # steps ahead); the rest is split as by default (re-clicks 12/45, intent switches 8/45,
    # popular items 25/45). Near 1 the next item depends mostly on the last one (first order).
    successor_share: float = 0.55
    users: int = 0  # accounts that log in (0: every session anonymous, no user_id column)
    user_share: float = 0.5  # share of sessions logged in when users > 0


@dataclass
class SynthResult:
    files: list[str]
    clicks: int  # good events written (duplicates included)
    bad_lines: int
    duplicates: int
    sessions: int
    days: list[str]


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return rng.permutation(weights) / weights.sum()


def generate_events(config: SynthConfig):
    """Generate the good events: arrays ``session (int), ts (epoch s, int), item_id (int)``,
    ordered by session then time, and the days covered."""
    session, ts, item, _, days = generate_events_with_users(config)
    return session, ts, item, days


def generate_events_with_users(config: SynthConfig):
    """:func:`generate_events` plus ``user`` (int per event, -1 for an anonymous session)
    before the days."""
    if not 0.0 <= config.successor_share <= 1.0:
        raise ValueError(f"successor_share must lie in [0, 1], got {config.successor_share}.")
    if config.users < 0 or not 0.0 <= config.user_share <= 1.0:
        raise ValueError(f"users must be >= 0 and user_share in [0, 1], got {config.users} and "
                         f"{config.user_share}.")
    rng = np.random.default_rng(config.seed)
    n_items, n_intents, n_sessions = config.items, config.intents, config.sessions
    item_ids = rng.choice(np.arange(100_000, 100_000 + 50 * n_items), size=n_items, replace=False)

    # Items of each intent in a browsing order; popularity inside the intent is Zipf.
    intent_of_item = np.sort(rng.integers(0, n_intents, size=n_items))
    intent_start = np.searchsorted(intent_of_item, np.arange(n_intents + 1))
    intent_size = np.diff(intent_start)
    item_pop = np.empty(n_items)
    for k in range(n_intents):  # one pass over intents (tens), not over sessions
        lo, hi = intent_start[k], intent_start[k + 1]
        if hi > lo:
            item_pop[lo:hi] = _zipf_weights(hi - lo, 1.1, rng)
    # Inverse-cdf sampling inside an intent with one global searchsorted: the key of item j is
    # intent(j) + cdf of j inside its intent, which increases along the whole array.
    cdf_key = np.zeros(n_items)
    for k in range(n_intents):
        lo, hi = intent_start[k], intent_start[k + 1]
        if hi > lo:
            cdf_key[lo:hi] = k + np.cumsum(item_pop[lo:hi])
    intent_weights = _zipf_weights(n_intents, 0.9, rng) * (intent_size > 0)
    intent_weights /= intent_weights.sum()

    def popular_item(intents: np.ndarray) -> np.ndarray:
        u = rng.random(len(intents)) * 0.999999
        pos = np.searchsorted(cdf_key, intents + u)
        return np.clip(pos, intent_start[intents], intent_start[intents + 1] - 1)

    p = 1.0 / config.mean_length
    lengths = np.minimum(rng.geometric(p, size=n_sessions), config.max_length)
    intent = rng.choice(n_intents, size=n_sessions, p=intent_weights)
    user = np.full(n_sessions, -1, dtype=np.int64)
    if config.users > 0:  # no draws at all without users: the anonymous stream stays the same
        activity = _zipf_weights(config.users, 1.0, rng)
        logged_in = rng.random(n_sessions) < config.user_share
        user[logged_in] = rng.choice(config.users, size=int(logged_in.sum()), p=activity)
        active = np.argsort(np.argsort(-activity)) < max(1, config.users // 5)
        half = max(1, n_intents // 2)
        first, second = intent_weights.copy(), intent_weights.copy()
        first[half:], second[:half] = 0.0, 0.0
        if second.sum() == 0:
            second = first
        favourite = np.where(active, rng.choice(n_intents, size=config.users, p=first / first.sum()),
                             rng.choice(n_intents, size=config.users, p=second / second.sum()))
        browse = logged_in & (rng.random(n_sessions) < 0.7)
        intent[browse] = favourite[user[browse]]
    clicks = np.full((n_sessions, config.max_length), -1, dtype=np.int64)
    clicks[:, 0] = popular_item(intent)
    for t in range(1, config.max_length):
        active = np.flatnonzero(lengths > t)
        if len(active) == 0:
            break
        prev = clicks[active, t - 1]
        cur_intent = intent[active]
        u = rng.random(len(active))
        nxt = np.empty(len(active), dtype=np.int64)
        # successor in the intent's browsing order (wraps around)
        share, rest = config.successor_share, (1.0 - config.successor_share) / 45.0
        succ = u < share
        lo, size = intent_start[cur_intent], intent_size[cur_intent]
        step = rng.integers(1, 4, size=len(active))
        nxt[succ] = (lo + (prev - lo + step) % size)[succ]
        # re-click an earlier item of the session (often the same one again)
        rep = (u >= share) & (u < share + 12 * rest)
        back = np.minimum(rng.geometric(0.6, size=len(active)), t)
        nxt[rep] = clicks[active[rep], t - back[rep]]
        # switch intent
        sw = (u >= share + 12 * rest) & (u < share + 20 * rest)
        if sw.any():
            new_intent = rng.choice(n_intents, size=int(sw.sum()), p=intent_weights)
            intent[active[sw]] = new_intent
            nxt[sw] = popular_item(new_intent)
        # a popular item of the current intent
        other = u >= share + 20 * rest
        if other.any():
            nxt[other] = popular_item(cur_intent[other])
        clicks[active, t] = nxt

    # Timestamps: start day uniform, start time of day with an evening peak.
    end = dt.date.fromisoformat(config.end_date)
    first_day = end - dt.timedelta(days=config.days - 1)
    day0 = int(dt.datetime(first_day.year, first_day.month, first_day.day, tzinfo=dt.timezone.utc).timestamp())
    day = rng.integers(0, config.days, size=n_sessions)
    hour = np.clip(rng.normal(18.5, 3.5, size=n_sessions), 0.0, 22.0)  # ends before midnight
    start = day0 + day * 86_400 + (hour * 3600).astype(np.int64)
    gaps = (5 + rng.exponential(45.0, size=(n_sessions, config.max_length))).astype(np.int64)
    gaps[:, 0] = 0
    times = start[:, None] + np.cumsum(gaps, axis=1)

    # Order sessions by start time so that ids grow with time, as in real logs.
    order = np.argsort(start, kind="stable")
    mask = np.arange(config.max_length)[None, :] < lengths[order][:, None]
    session = np.broadcast_to(np.arange(n_sessions)[:, None], mask.shape)[mask] + 1
    ts = times[order][mask]
    item = item_ids[clicks[order][mask]]
    users = np.broadcast_to(user[order][:, None], mask.shape)[mask]
    return session, ts, item, users, [str(first_day + dt.timedelta(days=d)) for d in range(config.days)]


def _bad_lines(n: int, rng: np.random.Generator, ts_hint: int) -> list[str]:
    kinds = rng.integers(0, len(BAD_KINDS), size=n)
    lines = []
    for i, kind in enumerate(kinds):  # only the malformed lines (about 1%) are built one by one
        sid = 900_000_000 + i
        if BAD_KINDS[kind] == "field_count":
            lines.append(f"{sid},{ts_hint}")
        elif BAD_KINDS[kind] == "bad_timestamp":
            lines.append(f"{sid},yesterday evening,{100_000 + i}")
        elif BAD_KINDS[kind] == "timestamp_out_of_range":
            lines.append(f"{sid},99999999999999999,{100_000 + i}")
        elif BAD_KINDS[kind] == "empty_session_id":
            lines.append(f",{ts_hint},{100_000 + i}")
        else:
            lines.append(f"{sid},{ts_hint},")
    return lines


def write_clickstream(out: str, config: SynthConfig = SynthConfig(), by_day: bool = False,
                      compress: bool = False, chunk_rows: int = 500_000) -> SynthResult:
    """Generate and write the clickstream; return what was written.

    ``out`` is a file (``by_day=False``) or a folder that receives ``ds=YYYY-MM-DD/clicks.csv``
    (``by_day=True``, one file per day of the session's first click).
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    session, ts, item, user, days = generate_events_with_users(config)
    rng = np.random.default_rng(config.seed + 1)
    n_dup = int(len(session) * config.duplicate_share)
    if n_dup:
        dup = np.sort(rng.choice(len(session), size=n_dup, replace=False))
        idx = np.sort(np.concatenate([np.arange(len(session)), dup]), kind="stable")
        session, ts, item, user = session[idx], ts[idx], item[idx], user[idx]
    with_users = config.users > 0

    if by_day:
        first_ts = np.zeros(session.max() + 1, dtype=np.int64)
        starts = np.r_[0, np.flatnonzero(np.diff(session)) + 1]
        first_ts[session[starts]] = ts[starts]
        session_day = first_ts[session] // 86_400
        groups = [(str(dt.date(1970, 1, 1) + dt.timedelta(days=int(d))), session_day == d)
                  for d in np.unique(session_day)]
    else:
        groups = [(None, np.ones(len(session), dtype=bool))]

    files, bad_total = [], 0
    suffix = ".csv.gz" if compress else ".csv"
    for ds, sel in groups:
        if ds is None:
            path = out
        else:
            path = os.path.join(out, f"ds={ds}", "clicks" + suffix)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        s, t, it, us = session[sel], ts[sel], item[sel], user[sel]
        n_bad = int(round(len(s) * config.bad_share / max(1e-9, 1 - config.bad_share)))
        bad = _bad_lines(n_bad, rng, int(t[0]) if len(t) else 0)
        if with_users:  # the same faults, with the empty user_id field a good line would have
            bad = [line if line.count(",") < 2 else line + "," for line in bad]
        bad_at = np.sort(rng.integers(0, max(1, len(s)), size=n_bad))
        bad_total += n_bad
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "wb") as handle:
            handle.write(b"session_id,timestamp,item_id,user_id\n" if with_users
                         else b"session_id,timestamp,item_id\n")
            b = 0
            for lo in range(0, max(len(s), 1), chunk_rows):
                hi = min(lo + chunk_rows, len(s))
                columns = {"session_id": s[lo:hi], "timestamp": t[lo:hi], "item_id": it[lo:hi]}
                if with_users:  # anonymous: an empty field
                    columns["user_id"] = pa.array(us[lo:hi], mask=us[lo:hi] < 0)
                table = pa.table(columns)
                buf = io.BytesIO()
                pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False))
                handle.write(buf.getvalue())
                extra = []
                while b < n_bad and (bad_at[b] < hi or hi == len(s)):
                    extra.append(bad[b])
                    b += 1
                if extra:
                    handle.write(("\n".join(extra) + "\n").encode())
        files.append(path)
    return SynthResult(files=files, clicks=int(len(session)), bad_lines=bad_total, duplicates=n_dup,
                       sessions=int(config.sessions), days=days)
