"""Readers of every input format, with bad rows; user mistakes are one-line InputErrors."""

import datetime as dt
import gzip
import json

import pytest

from srgnn.data.inputs import (InputError, check_input, detect_format, excerpt, resolve_inputs,
                               spark_encoding)
from srgnn.data.readers import read_clicks, spark_input_errors

from conftest import write_text

pytestmark = pytest.mark.spark

UTC = dt.timezone.utc


def ts(*args):
    return dt.datetime(*args, tzinfo=UTC).replace(tzinfo=None)


def collect(raw):
    clicks = sorted((r["session_id"], r["ts"], r["item_id"], r["user_id"], r["event_type"])
                    for r in raw.clicks.collect())
    quarantine = sorted((r["raw"], r["reason"]) for r in raw.quarantine.collect())
    return clicks, quarantine


GENERIC_CSV = """session_id,timestamp,item_id,event_type
s1,1451606400,i1,view
s1,1451606460000,i2,view
s2,2016-01-01T10:00:00Z,i3,
s2,1451606400
s3,yesterday,i4,view
,1451606400,i5,view
s4,1451606400,,view
s5,12,i6,view
s6,99999999999999999,i7,view
"""


def test_generic_csv_parses_units_and_quarantines_bad_rows(spark, tmp_path):
    path = write_text(tmp_path / "clicks.csv", GENERIC_CSV)
    raw = read_clicks(spark, path)
    assert raw.format == "csv"
    clicks, quarantine = collect(raw)
    assert clicks == [
        ("s1", ts(2016, 1, 1, 0, 0, 0), "i1", None, "view"),
        ("s1", ts(2016, 1, 1, 0, 1, 0), "i2", None, "view"),  # epoch milliseconds
        ("s2", ts(2016, 1, 1, 10, 0, 0), "i3", None, None),  # ISO-8601
    ]
    reasons = sorted(r for _, r in quarantine)
    assert reasons == ["bad_timestamp", "malformed_row", "missing_item_id", "missing_session_id",
                       "timestamp_out_of_range", "timestamp_out_of_range"]
    assert ("s2,1451606400", "malformed_row") in quarantine
    # raw values are kept for quarantined rows that did split into fields
    bad_ts = [json.loads(raw) for raw, reason in quarantine if reason == "bad_timestamp"]
    assert bad_ts == [{"session_id": "s3", "timestamp": "yesterday", "item_id": "i4", "event_type": "view"}]


def test_generic_csv_user_id_is_anonymous_only_when_empty(spark, tmp_path):
    # docs/contracts.md: blank means anonymous; "NA" or "null" in a generic file are real ids
    path = write_text(tmp_path / "clicks.csv", "session_id,timestamp,item_id,user_id\n"
                      "s1,1451606400,i1,\ns2,1451606400,i2,  \ns3,1451606400,i3,NA\n"
                      "s4,1451606400,i4, u7 \ns5,1451606400,i5,null\n")
    clicks, quarantine = collect(read_clicks(spark, path))
    assert [(c[0], c[3]) for c in clicks] == [("s1", None), ("s2", None), ("s3", "NA"),
                                              ("s4", "u7"), ("s5", "null")]
    assert quarantine == []


def test_gzip_csv_and_folder_and_glob_inputs(spark, tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    with gzip.open(folder / "day1.csv.gz", "wt") as handle:
        handle.write("session_id,timestamp,item_id\na,1451606400,x\na,1451606401,y\n")
    write_text(folder / "day2.csv", "session_id,timestamp,item_id\nb,1451692800,z\n")
    write_text(folder / "_SUCCESS", "")
    for path in (str(folder), str(folder / "*.csv*")):
        clicks, quarantine = collect(read_clicks(spark, path, "csv"))
        assert [c[0] + c[2] for c in clicks] == ["ax", "ay", "bz"]
        assert quarantine == []


def test_json_lines_with_a_broken_line(spark, tmp_path):
    path = write_text(tmp_path / "clicks.jsonl", "\n".join([
        '{"session_id": 7, "timestamp": 1451606400, "item_id": 100, "user_id": "u1"}',
        '{"session_id": 7, "timestamp": "2016-01-01T00:00:05", "item_id": "101"}',
        '{"session_id": 8, "timestamp": 1451606400, "item_id": 1',
        '{"session_id": 9, "timestamp": 1451606400}',
    ]) + "\n")
    clicks, quarantine = collect(read_clicks(spark, path))
    assert clicks == [("7", ts(2016, 1, 1), "100", "u1", None), ("7", ts(2016, 1, 1, 0, 0, 5), "101", None, None)]
    assert sorted(r for _, r in quarantine) == ["malformed_row", "missing_item_id"]


def test_parquet_with_native_timestamps(spark, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "session_id": ["a", "a", None],
        "timestamp": pa.array([dt.datetime(2020, 5, 1, 12), dt.datetime(2020, 5, 1, 12, 1), dt.datetime(2020, 5, 1)],
                              type=pa.timestamp("us")),
        "item_id": [1, 2, 3],
    })
    pq.write_table(table, tmp_path / "clicks.parquet")
    clicks, quarantine = collect(read_clicks(spark, str(tmp_path / "clicks.parquet")))
    assert clicks == [("a", ts(2020, 5, 1, 12), "1", None, None), ("a", ts(2020, 5, 1, 12, 1), "2", None, None)]
    assert [r for _, r in quarantine] == ["missing_session_id"]


def test_yoochoose(spark, tmp_path):
    path = write_text(tmp_path / "yoochoose-clicks.dat", "\n".join([
        "1,2014-04-07T10:51:09.277Z,214536502,0",
        "1,2014-04-07T10:54:09.868Z,214536500,0",
        "2,2014-04-07T13:56:37.614Z,214662742",
        "3,not a date,214662742,S",
    ]) + "\n")
    raw = read_clicks(spark, path)
    assert raw.format == "yoochoose"
    clicks, quarantine = collect(raw)
    assert clicks == [("1", ts(2014, 4, 7, 10, 51, 9, 277000), "214536502", None, None),
                      ("1", ts(2014, 4, 7, 10, 54, 9, 868000), "214536500", None, None)]
    assert sorted(r for _, r in quarantine) == ["bad_timestamp", "malformed_row"]


def test_diginetica_time_is_eventdate_plus_timeframe(spark, tmp_path):
    path = write_text(tmp_path / "train-item-views.csv", "\n".join([
        "session_id;user_id;item_id;timeframe;eventdate",
        "1;NA;81766;526309;2016-05-09",
        "1;NA;31331;1031018;2016-05-09",
        "2;5;32118;0;2016-05-10",
        "3;NA;1;x;2016-05-10",
        "4;NA;2;5;not-a-day",
    ]) + "\n")
    raw = read_clicks(spark, path)
    assert raw.format == "diginetica"
    clicks, quarantine = collect(raw)
    assert clicks == [
        ("1", ts(2016, 5, 9, 0, 8, 46, 309000), "81766", None, None),
        ("1", ts(2016, 5, 9, 0, 17, 11, 18000), "31331", None, None),
        ("2", ts(2016, 5, 10), "32118", "5", None),
    ]
    assert sorted(r for _, r in quarantine) == ["missing_timestamp", "missing_timestamp"]


def test_otto_nested_events(spark, tmp_path):
    path = write_text(tmp_path / "otto.jsonl", "\n".join([
        json.dumps({"session": 0, "events": [{"aid": 5, "ts": 1659304800025, "type": "clicks"},
                                             {"aid": 6, "ts": 1659304904511, "type": "carts"}]}),
        json.dumps({"session": 1, "events": [{"ts": 1659304800000, "type": "clicks"}]}),
        json.dumps({"session": 2, "events": []}),
        '{"session": 3, "events": [',
    ]) + "\n")
    raw = read_clicks(spark, path)
    assert raw.format == "otto"
    clicks, quarantine = collect(raw)
    assert clicks == [("0", ts(2022, 7, 31, 22, 0, 0, 25000), "5", None, "clicks"),
                      ("0", ts(2022, 7, 31, 22, 1, 44, 511000), "6", None, "carts")]
    assert sorted(r for _, r in quarantine) == ["malformed_row", "missing_item_id", "no_events"]


def test_otto_sample_file(spark, shared_data):
    raw = read_clicks(spark, str(shared_data / "otto-sample-sessions.jsonl"))
    assert raw.format == "otto"
    assert raw.clicks.count() == 862
    assert raw.clicks.select("session_id").distinct().count() == 20
    assert raw.quarantine.count() == 0


@pytest.mark.parametrize("content, message", [
    ("session_id,time,item_id\n1,2,3\n", "missing required column(s) timestamp"),
    ("", "input is empty"),
])
def test_user_mistakes_are_one_line_errors_naming_the_file(spark, tmp_path, content, message):
    path = write_text(tmp_path / "clicks.csv", content)
    with pytest.raises(InputError) as info:
        read_clicks(spark, path, "csv")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_input_and_unknown_format(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        resolve_inputs(str(tmp_path / "nope.csv"))
    with pytest.raises(InputError, match="no file matches"):
        resolve_inputs(str(tmp_path / "*.csv"))
    write_text(tmp_path / "x.csv", "a,b\n1,2\n")
    with pytest.raises(InputError, match="pass --format"):
        detect_format([str(tmp_path / "x.csv")])


# --- bad input: encodings, binary files, gzip, timestamps ---------------------------------------

LATIN1_ROWS = [("s1", 1451606400, "café"), ("s1", 1451606401, "cafè"), ("s1", 1451606402, "tea")]


def test_text_in_another_encoding_is_read_with_it_and_quarantined_without(spark, tmp_path):
    csv_path = tmp_path / "latin1.csv"
    csv_path.write_bytes(("session_id,timestamp,item_id\n" + "".join(
        f"{s},{t},{i}\n" for s, t, i in LATIN1_ROWS)).encode("latin-1"))
    json_path = tmp_path / "latin1.jsonl"
    json_path.write_bytes("".join(json.dumps({"session_id": s, "timestamp": t, "item_id": i},
                                             ensure_ascii=False) + "\n"
                                  for s, t, i in LATIN1_ROWS).encode("latin-1"))
    for path in (csv_path, json_path):
        clicks, quarantine = collect(read_clicks(spark, str(path), encoding="latin-1"))
        assert [c[2] for c in clicks] == ["café", "cafè", "tea"] and quarantine == [], path
        # read as UTF-8 the two items would both become "caf\ufffd": quarantined, never merged
        clicks, quarantine = collect(read_clicks(spark, str(path)))
        assert [c[2] for c in clicks] == ["tea"], path
        assert [reason for _, reason in quarantine] == ["bad_encoding", "bad_encoding"], path
        assert all("caf\ufffd" in raw for raw, _ in quarantine)


def test_unknown_or_unsupported_encodings_are_one_line_errors(tmp_path):
    path = write_text(tmp_path / "clicks.csv", "session_id,timestamp,item_id\n1,2,3\n")
    with pytest.raises(InputError, match="encoding 'klingon' is unknown"):
        check_input(path, "csv", "klingon")
    with pytest.raises(InputError, match="encoding 'cp1252' is not supported; use one of utf-8"):
        check_input(path, "csv", "cp1252")
    assert check_input(path, "csv", "latin-1") == ([path], "csv")
    assert spark_encoding("LATIN1") == "iso-8859-1" and spark_encoding("utf8") == "utf-8"


def test_a_binary_file_is_reported_with_a_short_printable_excerpt(tmp_path):
    import random

    rng = random.Random(0)
    junk = bytes(rng.choice([b for b in range(256) if b not in (10, 13)]) for _ in range(6_000))
    for name in ("junk.csv", "junk.jsonl", "junk.dat"):
        (tmp_path / name).write_bytes(junk)
    messages = []
    for name, fmt, encoding in [("junk.csv", "auto", "utf-8"), ("junk.csv", "csv", "latin-1"),
                                ("junk.csv", "diginetica", "latin-1"), ("junk.csv", "auto", "latin-1"),
                                ("junk.jsonl", "auto", "latin-1"), ("junk.dat", "auto", "utf-8")]:
        with pytest.raises(InputError) as info:
            check_input(str(tmp_path / name), fmt, encoding)
        messages.append(str(info.value))
    assert "line 1 is not utf-8 text (byte 0x" in messages[0]
    assert "missing required column(s) session_id, timestamp, item_id (header has: " in messages[1]
    for message in messages:
        assert len(message) < len(str(tmp_path)) + 220, message
        assert message.isprintable(), message  # no control bytes, no newline


def test_excerpt_is_short_printable_and_one_line():
    assert excerpt("plain") == "plain"
    assert excerpt("a\x00b\nc\x1b") == "a\\x00b\\nc\\x1b"
    long = excerpt("x" * 10_000)
    assert long == "x" * 80 + "..."
    assert excerpt(b"\xff\xfe" * 100, 10) == "ÿþÿþÿþÿþÿþ..."


def test_truncated_or_corrupt_gzip_is_found_before_spark(tmp_path):
    rows = b"".join(b"s%d,1451606400,i%d\n" % (k, k) for k in range(5_000))
    body = b"session_id,timestamp,item_id\n" + rows
    data = gzip.compress(body)
    (tmp_path / "ok.csv.gz").write_bytes(data + gzip.compress(b"s9,1451606400,i9\n"))  # two members
    (tmp_path / "cut.csv.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "bad.csv.gz").write_bytes(data[:40] + bytes(200) + data[240:])
    (tmp_path / "plain.csv.gz").write_bytes(body)  # not gzip at all
    assert check_input(str(tmp_path / "ok.csv.gz")) == ([str(tmp_path / "ok.csv.gz")], "csv")
    for name in ("cut.csv.gz", "bad.csv.gz", "plain.csv.gz"):
        with pytest.raises(InputError) as info:
            check_input(str(tmp_path / name))
        message = str(info.value)
        assert message.startswith(f"{tmp_path / name}: the gzip stream is truncated or corrupt ("), message
        assert message.isprintable() and len(message) < len(str(tmp_path)) + 160, message
    with pytest.raises(InputError, match="truncated or corrupt"):
        check_input(str(tmp_path))  # a folder holding the files


def test_spark_input_errors_name_the_file_spark_cannot_read(spark, tmp_path):
    data = gzip.compress(b"session_id,timestamp,item_id\n" + b"s1,1451606400,i1\n" * 20_000)
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as info:
        with spark_input_errors("the input"):
            spark.read.csv(str(cut), header=True).count()
    assert str(info.value) == (f"{cut}: cannot be read: the compressed stream is truncated or corrupt "
                               "(java.io.EOFException: Unexpected end of input stream)")
    with pytest.raises(InputError, match=r"gone\.csv: cannot be read: no such file or folder"):
        with spark_input_errors():
            spark.read.csv(str(tmp_path / "gone.csv")).count()
    # failures that are not about the input keep their type and stack trace
    from pyspark.errors import AnalysisException

    with pytest.raises(AnalysisException):
        with spark_input_errors("the input"):
            spark.sql("select no_such_column").collect()
    with pytest.raises(ZeroDivisionError):
        with spark_input_errors("the input"):
            1 / 0


def test_nan_infinite_and_huge_timestamps_are_quarantined_not_fatal(spark, tmp_path):
    values = {"NaN": "bad_timestamp", "nan": "bad_timestamp", "inf": "bad_timestamp",
              "-Infinity": "bad_timestamp", "1e400": "bad_timestamp",
              "9500000000000000": "timestamp_out_of_range", "-9500000000000000": "timestamp_out_of_range",
              "1e300": "timestamp_out_of_range", "9223372036854775807": "timestamp_out_of_range"}
    rows = "".join(f"s{k},{value},i{k}\n" for k, value in enumerate(values))
    path = write_text(tmp_path / "clicks.csv", "session_id,timestamp,item_id\ngood,1451606400,i\n" + rows)
    clicks, quarantine = collect(read_clicks(spark, path))
    assert [c[0] for c in clicks] == ["good"]
    got = {json.loads(raw)["timestamp"]: reason for raw, reason in quarantine}
    assert got == values
    digi = write_text(tmp_path / "train-item-views.csv", "session_id;user_id;item_id;timeframe;eventdate\n"
                      "1;NA;5;9223372036854775807;2016-05-09\n1;NA;6;10;2016-05-09\n")
    clicks, quarantine = collect(read_clicks(spark, digi))
    assert [c[2] for c in clicks] == ["6"] and [r for _, r in quarantine] == ["missing_timestamp"]
