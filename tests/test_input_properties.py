"""Property-based tests (Hypothesis) of the input checks, the readers and sessionisation.

Whatever rows and bytes come in (CSV lines with commas, quotes, unicode, empty fields, junk
bytes, timestamps of every kind including NaN, huge and negative numbers), nothing is lost and
nothing but :class:`InputError` is raised:

* the checks without Spark (``check_input``, ``detect_format``, ``check_gzip``) accept a file
  or raise an ``InputError`` whose message is one short printable line;
* a reader accounts for every row: rows in = clicks + quarantined, and every click is clean;
* sessionisation keeps every click (duplicates aside), in time then input order, and the
  prefix window keeps the last clicks before every target;
* prepare's summary balances: read = kept + quarantined + removed.

Spark starts once for the whole test session (the ``spark`` fixture); the Spark properties run
few examples each, the pure-Python ones many. No example database is written.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from srgnn.config import FORMATS, PrepareConfig
from srgnn.data.inputs import (MAX_TIMESTAMP, MIN_TIMESTAMP, InputError, check_gzip, check_input,
                               detect_format, excerpt)

PURE = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
SPARK = settings(max_examples=25, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                        HealthCheck.data_too_large])
PREPARE = settings(SPARK, max_examples=4)

REASONS = {"bad_encoding", "malformed_row", "no_events", "empty_row", "missing_session_id",
           "missing_item_id", "missing_timestamp", "bad_timestamp", "timestamp_out_of_range"}
LOW = dt.datetime.fromisoformat(MIN_TIMESTAMP)
HIGH = dt.datetime.fromisoformat(MAX_TIMESTAMP)
BASE = 1_700_006_400  # 2023-11-15 00:00:00 UTC

# --- strategies ------------------------------------------------------------------------------
NO_NEWLINE = st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",))
FIELD = st.one_of(
    st.text(NO_NEWLINE, max_size=8),
    st.sampled_from(["", " ", '"', '""', '"a,b"', "'", "café", "cafè", "\ufffd", "\x00x", "日本",
                     "NA", "null", "\\", "a\tb", "a;b", "é" * 3]),
)
TIMESTAMP = st.one_of(
    st.integers(631_152_000, 4_102_444_799).map(str),  # epoch seconds in range
    st.integers(631_152_000_000, 4_102_444_799_999).map(str),  # epoch milliseconds in range
    st.integers(-10**20, 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)).map(
        lambda d: d.isoformat()),
    st.sampled_from(["NaN", "nan", "-nan", "inf", "-inf", "Infinity", "1e400", "-0", "0x10",
                     "1_000", " 1451606400 ", "2016-01-01T00:00:00Z", "2016-02-30", "yesterday",
                     "", "9500000000000000", "9223372036854775807", "1e15"]),
)
JUNK = st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b""))


@st.composite
def csv_lines(draw, width: int) -> bytes:
    """One CSV data line (no line break) as bytes: a row, a short or long one, or junk."""
    kind = draw(st.sampled_from(["row", "row", "row", "short", "long", "junk", "bytes"]))
    fields = [draw(st.one_of(st.sampled_from(["s1", "s2", "s3"]), FIELD)), draw(TIMESTAMP),
              draw(st.one_of(st.sampled_from(["a", "b", "c", "café", "cafè"]), FIELD))]
    fields += [draw(FIELD) for _ in range(width - 3)]
    if kind == "short":
        fields = fields[:draw(st.integers(1, len(fields) - 1))]
    elif kind == "long":
        fields += draw(st.lists(FIELD, min_size=1, max_size=3))
    elif kind == "junk":
        fields = [draw(FIELD)]
    line = ",".join(fields).encode("utf-8")
    if kind == "bytes":
        line = draw(JUNK) + line + draw(JUNK)  # undecodable bytes inside a row
    return line


JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(NO_NEWLINE, max_size=8),
                        TIMESTAMP)
JSON_VALUE = st.recursive(JSON_SCALAR, lambda inner: st.lists(inner, max_size=2)
                          | st.dictionaries(st.text(max_size=3), inner, max_size=2), max_leaves=4)
JSON_KEYS = st.sampled_from(["session_id", "timestamp", "item_id", "user_id", "event_type", "other"])


@st.composite
def json_lines(draw) -> bytes:
    """One JSON Lines line (no line break): an object, a broken one, a scalar, or junk."""
    record = draw(st.dictionaries(JSON_KEYS, JSON_VALUE, max_size=6))
    text = json.dumps(record, ensure_ascii=draw(st.booleans()))
    kind = draw(st.sampled_from(["object", "object", "object", "cut", "scalar", "junk", "bytes"]))
    if kind == "cut":
        text = text[:draw(st.integers(1, max(1, len(text) - 1)))]
    elif kind == "scalar":
        text = json.dumps(draw(JSON_SCALAR))
    elif kind == "junk":
        text = "x" + draw(st.text(NO_NEWLINE, max_size=10))  # (a line holding a JSON array is
        # several records, or none, by Spark's rules; arrays are not JSON Lines clicks)
    line = text.encode("utf-8")
    if kind == "bytes":
        line = line[:1] + draw(JUNK) + line[1:]
    return line


def is_blank_csv(line: bytes) -> bool:
    """Spark's CSV reader skips lines of nothing but characters up to U+0020 (Java's trim)."""
    return all(ch <= " " for ch in line.decode("utf-8", "replace"))


def is_blank_json(line: bytes) -> bool:
    """Spark's JSON reader skips lines of nothing but JSON whitespace."""
    return line.strip(b" \t") == b""


def assert_one_short_line(message: str, path) -> None:
    assert message.isprintable(), message  # no newline, no control characters
    assert len(message) <= 2 * len(str(path)) + 300, message


def write(tmp_path, suffix: str, data: bytes):
    path = tmp_path / f"{uuid.uuid4().hex}{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    return path


# --- checks without Spark --------------------------------------------------------------------
SUFFIXES = st.sampled_from([".csv", ".csv.gz", ".jsonl", ".json.gz", ".dat", ".txt", ".parquet"])
ENCODINGS = st.sampled_from(["utf-8", "latin-1", "us-ascii", "cp1252", "no-such-encoding"])


@PURE
@given(data=st.one_of(st.binary(max_size=300), st.lists(csv_lines(3), max_size=5).map(b"\n".join),
                      st.lists(json_lines(), max_size=5).map(b"\n".join)),
       suffix=SUFFIXES, fmt=st.sampled_from(FORMATS), encoding=ENCODINGS, header=st.booleans())
def test_check_input_accepts_or_says_why_in_one_line(tmp_path, data, suffix, fmt, encoding, header):
    if header:
        data = b"session_id,timestamp,item_id\n" + data
    path = write(tmp_path, suffix, data)
    try:
        files, detected = check_input(str(path), fmt, encoding)
    except InputError as exc:
        assert_one_short_line(str(exc), path)
    else:
        assert files == [str(path)] and detected in FORMATS[1:]
        assert fmt in ("auto", detected)


@PURE
@given(data=st.binary(min_size=1, max_size=300), suffix=SUFFIXES)
def test_detect_format_names_a_format_or_raises_input_error(tmp_path, data, suffix):
    path = write(tmp_path, suffix, data)
    try:
        assert detect_format([str(path)]) in FORMATS[1:]
    except InputError as exc:
        assert_one_short_line(str(exc), path)


@PURE
@given(body=st.binary(min_size=1, max_size=2_000), cut=st.floats(0, 1, exclude_max=True),
       flip=st.integers(0, 10**6))
def test_a_truncated_or_altered_gzip_file_is_refused(tmp_path, body, cut, flip):
    data = gzip.compress(body)
    truncated = tmp_path / f"{uuid.uuid4().hex}.csv.gz"
    truncated.write_bytes(data[: max(1, int(len(data) * cut))])
    with pytest.raises(InputError) as info:
        check_gzip(str(truncated))
    assert str(info.value).startswith(f"{truncated}: the gzip stream is truncated or corrupt (")
    assert_one_short_line(str(info.value), truncated)
    altered = bytearray(data)
    altered[flip % len(data)] ^= 0xFF
    path = tmp_path / f"{uuid.uuid4().hex}.csv.gz"
    path.write_bytes(bytes(altered))
    try:
        check_gzip(str(path))  # a changed header field (its time, its OS) goes unnoticed
    except InputError as exc:
        assert_one_short_line(str(exc), path)


@PURE
@given(value=st.one_of(st.text(), st.binary()), limit=st.integers(1, 120))
def test_excerpts_are_short_printable_lines(value, limit):
    shown = excerpt(value, limit)
    assert shown.isprintable() and len(shown) <= limit + 3


# --- readers ---------------------------------------------------------------------------------

def check_clicks(clicks) -> None:
    for row in clicks:
        assert row["session_id"] and row["item_id"], row
        assert "\ufffd" not in row["session_id"] + row["item_id"], row
        assert LOW <= row["ts"] < HIGH, row


@pytest.mark.spark
@SPARK
@given(data=st.data(), extra_columns=st.booleans(), compressed=st.booleans())
def test_csv_reader_accounts_for_every_row(spark, tmp_path, data, extra_columns, compressed):
    from srgnn.data.readers import read_clicks, spark_input_errors

    width = 5 if extra_columns else 3
    lines = data.draw(st.lists(csv_lines(width), max_size=12))
    header = b"session_id,timestamp,item_id" + (b",user_id,event_type" if extra_columns else b"")
    path = write(tmp_path, ".csv.gz" if compressed else ".csv",
                 header + b"\n" + b"".join(line + b"\n" for line in lines))
    with spark_input_errors(str(path)):
        raw = read_clicks(spark, str(path), "csv", cache=True)
        try:
            clicks, quarantine = raw.clicks.collect(), raw.quarantine.collect()
        finally:
            raw.release()
    assert len(clicks) + len(quarantine) == sum(not is_blank_csv(line) for line in lines)
    assert {row["reason"] for row in quarantine} <= REASONS
    check_clicks(clicks)


@pytest.mark.spark
@SPARK
@given(lines=st.lists(json_lines(), max_size=12), encoding=st.sampled_from(["utf-8", "latin-1"]))
def test_json_reader_accounts_for_every_row(spark, tmp_path, lines, encoding):
    from srgnn.data.readers import read_clicks, spark_input_errors

    first = json.dumps({"session_id": "s0", "timestamp": BASE, "item_id": "a"}).encode()
    path = write(tmp_path, ".jsonl", b"".join(line + b"\n" for line in [first, *lines]))
    with spark_input_errors(str(path)):
        raw = read_clicks(spark, str(path), "json", encoding, cache=True)
        try:
            clicks, quarantine = raw.clicks.collect(), raw.quarantine.collect()
        finally:
            raw.release()
    assert len(clicks) + len(quarantine) == 1 + sum(not is_blank_json(line) for line in lines)
    assert {row["reason"] for row in quarantine} <= REASONS
    check_clicks(clicks)


# --- sessionisation --------------------------------------------------------------------------
CLICK = st.tuples(st.sampled_from(["s1", "s2", "s3"]), st.integers(0, 4),  # few times: ties
                  st.sampled_from(["a", "b", "c", "d"]), st.sampled_from([None, "view", "cart"]))


@pytest.mark.spark
@SPARK
@given(clicks=st.lists(CLICK, min_size=1, max_size=25), window=st.integers(1, 4))
def test_sessionize_keeps_every_click_in_order_and_windows_its_prefixes(spark, clicks, window):
    from srgnn.data import etl

    t0 = dt.datetime(2024, 3, 1)
    frame = spark.createDataFrame(
        [(s, t0 + dt.timedelta(seconds=t), item, None, event, seq)
         for seq, (s, t, item, event) in enumerate(clicks)],
        "session_id string, ts timestamp, item_id string, user_id string, event_type string, _seq long")
    sessions = {r["session_id"]: r for r in etl.sessionize(frame).collect()}
    expected = {}
    for seq, (s, t, item, event) in sorted(enumerate(clicks), key=lambda c: (c[1][1], c[0])):
        events = expected.setdefault(s, [])
        if (t, item, event) not in [(e[0], e[1], e[2]) for e in events]:  # exact duplicates go
            events.append((t, item, event))
    assert set(sessions) == set(expected)
    assert sum(r["raw_clicks"] for r in sessions.values()) == len(clicks)
    for s, row in sessions.items():
        assert [e["item_id"] for e in row["events"]] == [e[1] for e in expected[s]], s
    items = spark.createDataFrame([(s, "train", [e[1] for e in events]) for s, events in expected.items()],
                                  "session_id string, split string, items array<string>")
    got = sorted((r["session_id"], list(r["prefix"]), r["target"], r["prefix_length"])
                 for r in etl.prefix_examples(items, window).collect())
    want = sorted((s, [e[1] for e in events][max(0, k - window):k], events[k][1], min(k, window))
                  for s, events in expected.items() for k in range(1, len(events)))
    assert got == want


# --- prepare ---------------------------------------------------------------------------------

@st.composite
def click_logs(draw) -> tuple[bytes, int]:
    """A CSV log: plausible clicks over a few days mixed with bad lines; and its row count."""
    rows = []
    for s in range(draw(st.integers(1, 8))):
        day = draw(st.integers(0, 3))
        for k, item in enumerate(draw(st.lists(st.sampled_from("abcdef"), min_size=1, max_size=6))):
            rows.append(f"s{s},{BASE + day * 86_400 + 60 * k},{item}".encode())
    rows += draw(st.lists(csv_lines(3), max_size=4))
    order = draw(st.permutations(range(len(rows))))
    lines = [rows[i] for i in order]
    return b"session_id,timestamp,item_id\n" + b"".join(line + b"\n" for line in lines), sum(
        not is_blank_csv(line) for line in lines)


@pytest.mark.spark
@PREPARE
@given(log=click_logs(), support=st.integers(1, 2), test_days=st.integers(0, 1),
       valid_days=st.integers(0, 1), window=st.integers(1, 3))
def test_prepare_balances_every_click_or_says_why(spark, tmp_path, log, support, test_days,
                                                  valid_days, window):
    import pyarrow.parquet as pq

    from srgnn.data.prepare import run_prepare

    data, rows_in = log
    path = write(tmp_path, ".csv", data)
    out = tmp_path / uuid.uuid4().hex
    config = PrepareConfig(min_item_support=support, test_days=test_days, valid_days=valid_days,
                           max_prefix_length=window)
    try:
        s = run_prepare(spark, str(path), str(out), config, "csv").summary
    except InputError as exc:  # nothing left to train on: said in one line
        assert_one_short_line(str(exc), path)
        return
    assert s["clicks_read"] == rows_in
    assert s["clicks_read"] == s["clicks_kept"] + s["clicks_quarantined"] + sum(s["clicks_removed"].values())
    assert s["balanced"] and set(s["quarantine_reasons"]) <= REASONS
    assert s["examples"] == sum(split["examples"] for split in s["splits"].values())
    assert s["clicks_kept"] == sum(split["clicks"] for split in s["splits"].values())
    lengths = [n for split in ("train", "valid", "test") if (out / "graphs" / split).exists()
               for n in pq.read_table(out / "graphs" / split, columns=["prefix_length"])
               .column("prefix_length").to_pylist()]
    assert len(lengths) == s["examples"] and all(1 <= n <= window for n in lengths)
