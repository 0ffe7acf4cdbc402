"""Readers for raw clickstream logs (the "extract" step).

Every reader turns its input into the same two DataFrames:

* ``clicks``: ``session_id string, ts timestamp, item_id string, user_id string,
  event_type string, category string, _seq long`` (``_seq`` is the row's position in the input, used as a
  stable tie-break when two clicks of a session share a timestamp);
* ``quarantine``: ``source_file string, raw string, reason string``: rows that could not be
  parsed, with their raw values, so that nothing is lost silently.

Formats (``--format``):

``csv`` / ``json`` / ``parquet``
    the generic schema: ``session_id``, ``timestamp``, ``item_id`` and optional ``user_id``,
    ``event_type``, ``category`` (the item's category: scoring answers a click on an item
    the model does not know with the popular items of its category). CSV files have a header line and may be gzip-compressed; JSON files hold
    one object per line. ``timestamp`` is epoch seconds, epoch milliseconds (told apart by
    magnitude: values of 1e11 and above are milliseconds) or ISO-8601 text.
``yoochoose``
    RecSys Challenge 2015 clicks: no header, ``session_id,timestamp(ISO),item_id,category``
    (category ``0``, no information, reads as none).
``diginetica``
    CIKM Cup 2016 item views: ``;``-separated, header
    ``session_id;user_id;item_id;timeframe;eventdate``; the click time is ``eventdate`` plus
    ``timeframe`` milliseconds (``timeframe`` orders the clicks inside a session).
``otto``
    OTTO RecSys dataset: one JSON object a line, ``{"session": int, "events": [{"aid": int,
    "ts": epoch_ms, "type": "clicks"|"carts"|"orders"}, ...]}``.
``auto`` (default)
    decided from the file name and first line, and only when that is unambiguous.

Text encoding (``--encoding``, default ``utf-8``; also ``latin-1`` and ``us-ascii``): CSV and
JSON Lines files are decoded in the declared encoding. Spark's readers replace bytes that do
not decode with U+FFFD (the replacement character), or, for JSON in UTF-8, keep the line
undecoded as a broken record. So the rule is: **a row any of whose raw fields (or whose
whole line, for a row that did not parse) contains U+FFFD or is not valid UTF-8 is
quarantined as** ``bad_encoding``, never read with altered values. Two items that differ only
in characters the encoding does not decode (``café``, ``cafè`` in a latin-1 file read as
UTF-8) are therefore never merged. A genuine U+FFFD in the data counts as undecodable too.
The quarantined ``raw`` text of such a row is the text as decoded, with U+FFFD where bytes did
not decode; ``source_file`` names the file.

Rows that cannot be used are quarantined with one of these reasons (the first that applies):
``bad_encoding``, ``malformed_row`` (the line does not split into the fields), ``no_events``
(OTTO), ``empty_row``, ``missing_session_id``, ``missing_item_id``, ``missing_timestamp``,
``bad_timestamp`` (not a number nor a date; also NaN and infinite numbers),
``timestamp_out_of_range`` (before 1990 or from 2100 on, and absurdly large numbers).

A user's mistake (missing file, empty input, missing column, unknown format or encoding, a
truncated gzip file) raises :class:`~srgnn.data.inputs.InputError` (:mod:`srgnn.data.inputs`
checks local files before Spark starts); the command line prints it and exits with code 1.
Input the local checks cannot see (remote files) fails inside Spark's jobs: wrap the jobs in
:func:`spark_input_errors` to report that as an ``InputError`` too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from srgnn.data.inputs import (DIGINETICA_HEADER, MAX_TIMESTAMP, MILLIS_THRESHOLD, MIN_TIMESTAMP,
                               OPTIONAL_COLUMNS, REQUIRED_COLUMNS, YOOCHOOSE_COLUMNS, InputError,
                               check_header, check_input, check_json_keys, excerpt,
                               spark_encoding)
from srgnn.data.sparkerrors import spark_input_errors

__all__ = ["RawClicks", "read_clicks", "InputError", "check_input", "parse_timestamp",
           "check_rows", "split_checked", "spark_input_errors"]

# Numeric timestamps whose seconds reach this are out of range (and would overflow microseconds).
_MAX_SECONDS = 1e12
# Diginetica's timeframe (milliseconds into the day) beyond this is no time of that day.
_MAX_TIMEFRAME_MS = 10**13


@dataclass
class RawClicks:
    """The result of reading raw clicks: parsed clicks, quarantined rows and what was read."""

    clicks: object  # pyspark DataFrame
    quarantine: object  # pyspark DataFrame
    files: list[str]
    format: str
    notes: dict = field(default_factory=dict)
    persisted: object = None  # the checked rows both frames come from, with cache=True

    def release(self) -> None:
        """Free the rows persisted by ``read_clicks(..., cache=True)`` (no-op otherwise)."""
        if self.persisted is not None:
            self.persisted.unpersist()
            self.persisted = None


def read_clicks(spark, path: str, fmt: str = "auto", encoding: str = "utf-8", *,
                cache: bool = False) -> RawClicks:
    """Read raw clicks in any supported format; see the module docstring.

    ``encoding`` is the text encoding of CSV and JSON input (any of Python's names for
    utf-8, latin-1 or us-ascii). With ``cache`` the parsed and checked rows are persisted
    (memory, then disk) when first computed, so that writing the quarantine and using the
    clicks parse the input once, not twice; ``RawClicks.release()`` frees them.

    Raises:
        InputError: for a user's mistake found before any job runs (see the module docstring).
    """
    files, fmt = check_input(path, fmt, encoding)
    text = _Text(encoding, spark_encoding(encoding))
    reader = {
        "csv": _read_generic_csv,
        "json": _read_generic_json,
        "parquet": _read_generic_parquet,
        "yoochoose": _read_yoochoose,
        "diginetica": _read_diginetica,
        "otto": _read_otto,
    }[fmt]
    with spark_input_errors(path):
        checked = check_rows(reader(spark, files, text))
    if cache:
        from pyspark import StorageLevel

        checked = checked.persist(StorageLevel.MEMORY_AND_DISK)
    clicks, quarantine = split_checked(checked)
    return RawClicks(clicks=clicks, quarantine=quarantine, files=files, format=fmt,
                     persisted=checked if cache else None)


# --- readers: each returns the "raw" frame -------------------------------------------------
# Raw frame columns (all strings): session_id, ts_raw, item_id, user_id, event_type, category,
# _corrupt (the whole line when it could not be split into fields, else null),
# _raw (a struct of the raw values, written as JSON text for quarantined rows only), _file,
# _hint (a reader's own reason), _bad_encoding (boolean), _seq.


@dataclass(frozen=True)
class _Text:
    """The declared encoding of text input: Python's name and Spark's."""

    encoding: str = "utf-8"
    charset: str = "utf-8"

    def json_options(self) -> dict:
        # Spark's JSON reader splits lines itself for any charset but UTF-8 only when told how.
        return {} if self.charset == "utf-8" else {"encoding": self.charset, "lineSep": "\n"}


def _undecoded(columns):
    """Column: some of ``columns`` holds bytes that did not decode (U+FFFD, invalid UTF-8)."""
    from pyspark.sql import functions as F

    flags = [F.coalesce(~F.is_valid_utf8(c) | c.contains("\ufffd"), F.lit(False)) for c in columns]
    out = F.lit(False)
    for flag in flags:
        out = out | flag
    return out


def _string_schema(names, corrupt: bool = True):
    from pyspark.sql import types as T

    fields = [T.StructField(n, T.StringType()) for n in names]
    if corrupt:
        fields.append(T.StructField("_corrupt", T.StringType()))
    return T.StructType(fields)


def _finish_raw(df, session, ts, item, user=None, event=None, raw_cols=(), hint=None, category=None):
    from pyspark.sql import functions as F

    def clean(col):
        if col is None:
            return F.lit(None).cast("string")
        trimmed = F.trim(col.cast("string"))
        return F.when(trimmed == "", None).otherwise(trimmed)

    raw_values = F.struct(*[F.col(c).cast("string").alias(c) for c in raw_cols])
    corrupt = F.col("_corrupt") if "_corrupt" in df.columns else F.lit(None).cast("string")
    undecoded = _undecoded([F.col(c).cast("string") for c in raw_cols] + [corrupt])
    return df.select(
        clean(session).alias("session_id"),
        clean(ts).alias("ts_raw"),
        clean(item).alias("item_id"),
        clean(user).alias("user_id"),
        clean(event).alias("event_type"),
        clean(category).alias("category"),
        corrupt.alias("_corrupt"),
        raw_values.alias("_raw"),
        F.input_file_name().alias("_file"),
        (hint if hint is not None else F.lit(None).cast("string")).alias("_hint"),
        undecoded.alias("_bad_encoding"),
    ).withColumn("_seq", F.monotonically_increasing_id())


def _csv(spark, files, schema, text: _Text, sep=",", header=True):
    return spark.read.csv(
        files, schema=schema, sep=sep, header=header, mode="PERMISSIVE",
        columnNameOfCorruptRecord="_corrupt", multiLine=False, enforceSchema=False,
        encoding=text.charset,
    )


def _read_generic_csv(spark, files, text: _Text):
    from pyspark.sql import functions as F

    header = check_header(files, ",", REQUIRED_COLUMNS, text.encoding)
    if not header:  # remote input: let Spark read the header
        header = spark.read.csv(files, header=True, encoding=text.charset).columns
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise InputError(f"{files[0]}: missing required column(s) {', '.join(missing)} "
                             f"(header has: {excerpt(', '.join(header))})")
    df = _csv(spark, files, _string_schema(header), text)
    opt = {c: (F.col(c) if c in header else None) for c in OPTIONAL_COLUMNS}
    return _finish_raw(df, F.col("session_id"), F.col("timestamp"), F.col("item_id"),
                       opt["user_id"], opt["event_type"], raw_cols=header, category=opt["category"])


def _read_generic_json(spark, files, text: _Text):
    from pyspark.sql import functions as F

    check_json_keys(files, REQUIRED_COLUMNS, text.encoding)
    names = list(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
    df = spark.read.json(files, schema=_string_schema(names), mode="PERMISSIVE",
                         columnNameOfCorruptRecord="_corrupt", **text.json_options())
    return _finish_raw(df, F.col("session_id"), F.col("timestamp"), F.col("item_id"),
                       F.col("user_id"), F.col("event_type"), raw_cols=names,
                       category=F.col("category"))


def _read_generic_parquet(spark, files, text: _Text):
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    try:
        df = spark.read.parquet(*files)
    except Exception as exc:  # noqa: BLE001 - Spark raises many kinds for a bad file
        first = (str(exc).strip().splitlines() or [""])[0]
        raise InputError(f"{files[0]}: cannot be read as Parquet ({excerpt(first)})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{files[0]}: missing required column(s) {', '.join(missing)} "
                         f"(columns: {', '.join(df.columns)})")
    ts_type = df.schema["timestamp"].dataType
    if isinstance(ts_type, (T.TimestampType, T.TimestampNTZType)):
        # Native timestamps go through the ISO branch of the parser unchanged.
        ts = F.date_format(F.col("timestamp"), "yyyy-MM-dd'T'HH:mm:ss.SSSSSS")
    else:
        ts = F.col("timestamp").cast("string")
    opt = {c: (F.col(c) if c in df.columns else None) for c in OPTIONAL_COLUMNS}
    present = [c for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if c in df.columns]
    return _finish_raw(df, F.col("session_id"), ts, F.col("item_id"),
                       opt["user_id"], opt["event_type"], raw_cols=present, category=opt["category"])


def _read_yoochoose(spark, files, text: _Text):
    from pyspark.sql import functions as F

    df = _csv(spark, files, _string_schema(YOOCHOOSE_COLUMNS), text, header=False)
    # "0" is Yoochoose's "no category information"
    category = F.when(F.trim(F.col("category")) == "0", None).otherwise(F.col("category"))
    return _finish_raw(df, F.col("session_id"), F.col("timestamp"), F.col("item_id"),
                       raw_cols=YOOCHOOSE_COLUMNS, category=category)


def _read_diginetica(spark, files, text: _Text):
    from pyspark.sql import functions as F

    check_header(files, ";", DIGINETICA_HEADER, text.encoding)
    df = _csv(spark, files, _string_schema(DIGINETICA_HEADER), text, sep=";")
    day = F.expr("try_to_date(trim(eventdate), 'yyyy-MM-dd')")
    offset_ms = F.expr("try_cast(trim(timeframe) as bigint)")
    epoch_ms = F.when((offset_ms >= 0) & (offset_ms < _MAX_TIMEFRAME_MS),
                      F.unix_date(day).cast("bigint") * 86_400_000 + offset_ms)
    user = F.when(F.upper(F.trim(F.col("user_id"))) == "NA", None).otherwise(F.col("user_id"))
    return _finish_raw(df, F.col("session_id"), epoch_ms, F.col("item_id"), user,
                       raw_cols=DIGINETICA_HEADER)


def _read_otto(spark, files, text: _Text):
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    event = T.StructType([T.StructField(n, T.StringType()) for n in ("aid", "ts", "type")])
    schema = T.StructType([
        T.StructField("session", T.StringType()),
        T.StructField("events", T.ArrayType(event)),
        T.StructField("_corrupt", T.StringType()),
    ])
    df = spark.read.json(files, schema=schema, mode="PERMISSIVE", columnNameOfCorruptRecord="_corrupt",
                         **text.json_options())
    # One row per event; a line without events becomes one row (with null event) so that it
    # is quarantined rather than lost.
    df = df.select("session", "_corrupt", F.explode_outer("events").alias("e"))
    df = df.select("session", "_corrupt", F.col("e.aid").alias("aid"), F.col("e.ts").alias("ts"),
                   F.col("e.type").alias("type"), F.col("e").isNull().alias("_no_event"))
    hint = F.when(F.col("_no_event") & F.col("_corrupt").isNull(), F.lit("no_events"))
    return _finish_raw(df, F.col("session"), F.col("ts"), F.col("aid"), None, F.col("type"),
                       raw_cols=("session", "aid", "ts", "type"), hint=hint)


# --- validation ------------------------------------------------------------------------------

def parse_timestamp(col: str):
    """Spark column expressions for a raw timestamp text column.

    Returns ``(ts, numeric)``: ``ts`` is the parsed timestamp (epoch seconds, epoch
    milliseconds or ISO-8601 text; null when it is none of these or absurdly large) and
    ``numeric`` tells whether the text was a finite number (NaN and infinities are not: they
    are no time at all, so they count as bad text rather than as out of range).
    """
    from pyspark.sql import functions as F

    number = F.expr(f"try_cast({col} as double)")
    finite = number.isNotNull() & ~F.isnan(number) & (F.abs(number) != F.lit(float("inf")))
    seconds = F.when(F.abs(number) >= MILLIS_THRESHOLD, number / 1000.0).otherwise(number)
    from_number = F.when(finite & (F.abs(seconds) < _MAX_SECONDS),
                         F.timestamp_micros(F.round(seconds * 1_000_000).cast("bigint")))
    from_text = F.when(number.isNull(), F.expr(f"try_cast({col} as timestamp)"))
    return F.when(finite, from_number).otherwise(from_text), finite


def check_rows(raw):
    """The raw frame with the parsed ``ts`` and ``_reason`` (null for a clean click)."""
    from pyspark.sql import functions as F

    ts, numeric = parse_timestamp("ts_raw")
    out_of_range = (F.col("ts") < F.lit(MIN_TIMESTAMP).cast("timestamp")) | (
        F.col("ts") >= F.lit(MAX_TIMESTAMP).cast("timestamp"))
    reason = (
        F.when(F.col("_bad_encoding"), F.lit("bad_encoding"))
        .when(F.col("_corrupt").isNotNull(), F.lit("malformed_row"))
        .when(F.col("_hint").isNotNull(), F.col("_hint"))
        .when(F.col("session_id").isNull() & F.col("item_id").isNull() & F.col("ts_raw").isNull(),
              F.lit("empty_row"))
        .when(F.col("session_id").isNull(), F.lit("missing_session_id"))
        .when(F.col("item_id").isNull(), F.lit("missing_item_id"))
        .when(F.col("ts_raw").isNull(), F.lit("missing_timestamp"))
        .when(F.col("ts").isNull() & ~F.col("_numeric"), F.lit("bad_timestamp"))
        .when(F.col("ts").isNull() | out_of_range, F.lit("timestamp_out_of_range"))
    )
    return raw.withColumn("ts", ts).withColumn("_numeric", numeric).withColumn("_reason", reason)


def split_checked(checked):
    """``(clicks, quarantine)`` of a frame from :func:`check_rows`."""
    from pyspark.sql import functions as F

    clicks = checked.where(F.col("_reason").isNull()).select(
        "session_id", "ts", "item_id", "user_id", "event_type", "category", "_seq")
    quarantine = checked.where(F.col("_reason").isNotNull()).select(
        F.col("_file").alias("source_file"),
        F.make_valid_utf8(F.coalesce(F.col("_corrupt"), F.to_json(F.col("_raw")))).alias("raw"),
        F.col("_reason").alias("reason"),
    )
    return clicks, quarantine
