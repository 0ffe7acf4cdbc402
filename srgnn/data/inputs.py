"""Checks of raw click files that need no Spark: they exist, are readable and not empty, gzip
files decompress to their end, the declared text encoding is one the readers know, the format
is known (or can be told from the file name and first line), and the headers name the required
columns.

A user's mistake raises :class:`InputError` with a one-line message naming the file; the
command line prints it and exits with code 1, an Airflow task fails without retries. Text
taken from the user's files (a header, a first line, a decoder's complaint) appears in a
message only as a short printable excerpt (:func:`excerpt`). The formats themselves are
described in :mod:`srgnn.data.readers`.
"""

from __future__ import annotations

import codecs
import glob
import gzip
import json
import os
import zlib

from srgnn.config import FORMATS

REQUIRED_COLUMNS = ("session_id", "timestamp", "item_id")
OPTIONAL_COLUMNS = ("user_id", "event_type", "category")
DIGINETICA_HEADER = ("session_id", "user_id", "item_id", "timeframe", "eventdate")
YOOCHOOSE_COLUMNS = ("session_id", "timestamp", "item_id", "category")

# Timestamps outside this window are treated as corrupt (epoch 0, year 2300, ...).
MIN_TIMESTAMP = "1990-01-01 00:00:00"
MAX_TIMESTAMP = "2100-01-01 00:00:00"
# Numeric timestamps at or above this are epoch milliseconds (1e11 s would be year 5138).
MILLIS_THRESHOLD = 1e11

# Text encodings the readers accept: Python's name of the codec -> the name Spark's CSV and
# JSON readers know. Spark reads only a few charsets; these are the ones in which a line ends
# with the single byte "\n", so that files can be split into lines before decoding.
ENCODINGS = {"utf-8": "utf-8", "iso8859-1": "iso-8859-1", "ascii": "us-ascii"}
EXCERPT_CHARS = 80  # the most characters of a user's data any message echoes
_LINE_LIMIT = 1 << 20  # bytes of a first line read to check it
_CHUNK = 1 << 20  # bytes decompressed at a time when checking a gzip file

_DATA_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".txt", ".txt.gz", ".dat", ".dat.gz", ".json",
                  ".jsonl", ".json.gz", ".jsonl.gz", ".ndjson", ".parquet", ".pq")


class InputError(Exception):
    """A problem with the user's input, reported as one line without a stack trace."""


def excerpt(value, limit: int = EXCERPT_CHARS) -> str:
    """A short, printable, one-line excerpt of ``value`` (text, bytes or an exception).

    Characters that are not printable (control bytes, newlines, ...) are escaped as Python
    writes them (``\\x00``, ``\\n``); beyond ``limit`` characters the rest is replaced by
    ``...``. Bytes are shown as latin-1 (one character a byte).
    """
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("latin-1")
    text = str(value)
    out: list[str] = []
    used = 0
    for ch in text:
        shown = ch if ch.isprintable() else ascii(ch)[1:-1]
        if used + len(shown) > limit:
            out.append("...")
            break
        out.append(shown)
        used += len(shown)
    return "".join(out)


def _shown(path: str) -> str:
    """A file name as messages show it: whole, with unprintable characters escaped."""
    return excerpt(path, limit=max(EXCERPT_CHARS, 4 * len(path)))


def spark_encoding(encoding: str) -> str:
    """The name Spark's readers know for ``encoding`` (any of Python's names for it).

    Raises:
        InputError: for an unknown encoding or one the readers cannot split into lines.
    """
    try:
        name = codecs.lookup(encoding).name
    except (LookupError, TypeError, ValueError):
        name = None
    if name not in ENCODINGS:
        known = "unknown" if name is None else "not supported"
        raise InputError(f"encoding {excerpt(encoding)!r} is {known}; use one of utf-8, "
                         f"latin-1 (iso-8859-1), us-ascii")
    return ENCODINGS[name]


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def resolve_inputs(path: str) -> list[str]:
    """Expand a file, a folder (recursively) or a glob into the list of input files.

    Remote URIs (``s3a://``, ``hdfs://``, ...) are passed to Spark unchanged.
    """
    if _is_remote(path):
        return [path]
    shown = _shown(path)
    local = path[len("file://"):] if path.startswith("file://") else path
    if any(ch in local for ch in "*?["):
        matches = sorted(p for p in glob.glob(local, recursive=True) if os.path.isfile(p))
        if not matches:
            raise InputError(f"{shown}: no file matches this pattern")
        files = matches
    elif os.path.isdir(local):
        files = []
        for root, dirs, names in os.walk(local):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
            for name in sorted(names):
                if name.startswith((".", "_")) or name.endswith(".crc"):
                    continue
                if name.lower().endswith(_DATA_SUFFIXES):
                    files.append(os.path.join(root, name))
        if not files:
            raise InputError(f"{shown}: folder holds no click files ({', '.join(_DATA_SUFFIXES[:6])}, ...)")
    elif os.path.isfile(local):
        files = [local]
    else:
        raise InputError(f"{shown}: no such file or folder")
    for f in files:
        if not os.access(f, os.R_OK):
            raise InputError(f"{_shown(f)}: file is not readable")
    nonempty = [f for f in files if os.path.getsize(f) > 0]
    if not nonempty:
        raise InputError(f"{shown}: input is empty")
    return nonempty


_GZIP_CHECKED: set = set()  # (path, size, mtime) of local gzip files read to their end


def check_gzip(path: str) -> None:
    """Decompress a local ``.gz`` file to its end (nothing is kept), so that a truncated or
    corrupt file is reported before Spark reads it. Remote files and other names pass.

    Raises:
        InputError: "FILE: the gzip stream is truncated or corrupt (...)".
    """
    if _is_remote(path) or not path.lower().endswith(".gz"):
        return
    local = path[len("file://"):] if path.startswith("file://") else path
    stat = os.stat(local)
    key = (os.path.abspath(local), stat.st_size, stat.st_mtime_ns)
    if key in _GZIP_CHECKED:
        return
    try:
        with gzip.open(local, "rb") as handle:
            while handle.read(_CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{_shown(path)}: the gzip stream is truncated or corrupt "
                         f"({excerpt(exc)})") from None
    _GZIP_CHECKED.add(key)


def _first_line(path: str, encoding: str = "utf-8", strict: bool = False) -> str:
    """The first non-empty line of a local text file (gzip-aware); '' for remote paths.

    Bytes that do not decode in ``encoding`` become U+FFFD, or with ``strict`` (a header,
    which must be text) raise :class:`InputError`.

    Raises:
        InputError: when the file cannot be read, or (``strict``) its first line does not
            decode (a binary file, or text in another encoding).
    """
    if _is_remote(path):
        return ""
    local = path[len("file://"):] if path.startswith("file://") else path
    opener = gzip.open if local.endswith(".gz") else open
    try:
        with opener(local, "rb") as handle:
            number = 0
            while True:
                raw = handle.readline(_LINE_LIMIT)
                if not raw:
                    return ""
                number += 1
                try:
                    decoder = codecs.getincrementaldecoder(encoding)("strict" if strict else "replace")
                    text = decoder.decode(raw, final=raw.endswith(b"\n"))
                except UnicodeDecodeError as exc:
                    raise InputError(
                        f"{_shown(path)}: line {number} is not {encoding} text (byte "
                        f"0x{raw[exc.start]:02x} at byte {exc.start + 1}); if it is text in "
                        f"another encoding, pass --encoding") from None
                text = text.strip().lstrip("\ufeff").strip()
                if text:
                    return text
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{_shown(path)}: cannot be read ({exc.__class__.__name__}: "
                         f"{excerpt(exc)})") from None


def _container(path: str) -> str:
    name = path.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz", ".ndjson")):
        return "json"
    return "csv"


def detect_format(files: list[str], encoding: str = "utf-8") -> str:
    """Decide the input format from the first file; raise :class:`InputError` if ambiguous."""
    first = files[0]
    container = _container(first)
    if container == "parquet":
        return "parquet"
    line = _first_line(first, encoding)
    if not line:
        raise InputError(f"{_shown(first)}: file is empty")

    def undetected(message: str) -> InputError:
        if "\ufffd" in line:  # not text in this encoding: say that rather than "not JSON"
            _first_line(first, encoding, strict=True)
        return InputError(f"{_shown(first)}: {message}")

    if container == "json":
        try:
            record = json.loads(line)
        except ValueError:
            raise undetected(f"first line is not JSON ({excerpt(line)}); pass --format") from None
        if isinstance(record, dict) and "events" in record and "session" in record:
            return "otto"
        if isinstance(record, dict) and "session_id" in record:
            return "json"
        raise undetected(f"cannot tell the JSON format from the first record ({excerpt(line)}); "
                         f"pass --format")
    header = [c.strip().strip('"').lower() for c in line.split(";")]
    if tuple(header) == DIGINETICA_HEADER:
        return "diginetica"
    columns = [c.strip().strip('"').lower() for c in line.split(",")]
    if "session_id" in columns:
        return "csv"
    if len(columns) == 4 and columns[0].isdigit() and "t" in columns[1] and columns[1][:4].isdigit():
        return "yoochoose"
    raise undetected(f"cannot tell the format from the first line ({excerpt(line)}); pass "
                     f"--format ({', '.join(FORMATS[1:])})")


def check_header(files: list[str], sep: str, required: tuple[str, ...],
                 encoding: str = "utf-8") -> list[str]:
    """Check that every local CSV file's header names the required columns; return the header."""
    header: list[str] = []
    for f in files:
        if _is_remote(f):
            continue
        line = _first_line(f, encoding, strict=True)  # a header must be text
        if not line:
            raise InputError(f"{_shown(f)}: file is empty")
        columns = [c.strip().strip('"') for c in line.split(sep)]
        missing = [c for c in required if c not in columns]
        if missing:
            raise InputError(f"{_shown(f)}: missing required column(s) {', '.join(missing)} "
                             f"(header has: {excerpt(', '.join(columns))})")
        if header and columns != header:
            raise InputError(f"{_shown(f)}: header differs from {_shown(files[0])} "
                             f"({excerpt(', '.join(columns))})")
        header = columns
    return header


def check_json_keys(files: list[str], required: tuple[str, ...], encoding: str = "utf-8") -> None:
    for f in files:
        if _is_remote(f):
            continue
        line = _first_line(f, encoding)
        try:
            record = json.loads(line)
        except ValueError:
            # A broken first line is a row problem (quarantined), not a schema problem.
            continue
        if isinstance(record, dict):
            missing = [c for c in required if c not in record]
            if missing:
                raise InputError(f"{_shown(f)}: missing required field(s) {', '.join(missing)} "
                                 f"in the records")


def check_input(path: str, fmt: str = "auto", encoding: str = "utf-8") -> tuple[list[str], str]:
    """Checks that need no Spark: the files exist, gzip files decompress to their end, the
    encoding is known, the format is known, headers have the required columns. Returns the
    input files and the (detected) format."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {excerpt(fmt)!r}; choose one of {', '.join(FORMATS)}")
    spark_encoding(encoding)
    files = resolve_inputs(path)
    for f in files:
        check_gzip(f)
    if fmt == "auto":
        fmt = detect_format(files, encoding)
    if fmt == "csv":
        check_header(files, ",", REQUIRED_COLUMNS, encoding)
    elif fmt == "diginetica":
        check_header(files, ";", DIGINETICA_HEADER, encoding)
    elif fmt == "json":
        check_json_keys(files, REQUIRED_COLUMNS, encoding)
    return files, fmt
