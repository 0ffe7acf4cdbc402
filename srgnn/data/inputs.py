"""Checks of raw click files that need no Spark: they exist, are readable and not empty, their
format is known (or can be told from the file name and first line), and their headers name the
required columns.

A user's mistake raises :class:`InputError` with a one-line message naming the file; the
command line prints it and exits with code 1, an Airflow task fails without retries. The
formats themselves are described in :mod:`srgnn.data.readers`.
"""

from __future__ import annotations

import glob
import gzip
import json
import os

from srgnn.config import FORMATS

REQUIRED_COLUMNS = ("session_id", "timestamp", "item_id")
OPTIONAL_COLUMNS = ("user_id", "event_type")
DIGINETICA_HEADER = ("session_id", "user_id", "item_id", "timeframe", "eventdate")
YOOCHOOSE_COLUMNS = ("session_id", "timestamp", "item_id", "category")

# Timestamps outside this window are treated as corrupt (epoch 0, year 2300, ...).
MIN_TIMESTAMP = "1990-01-01 00:00:00"
MAX_TIMESTAMP = "2100-01-01 00:00:00"
# Numeric timestamps at or above this are epoch milliseconds (1e11 s would be year 5138).
MILLIS_THRESHOLD = 1e11

_DATA_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".txt", ".txt.gz", ".dat", ".dat.gz", ".json",
                  ".jsonl", ".json.gz", ".jsonl.gz", ".ndjson", ".parquet", ".pq")


class InputError(Exception):
    """A problem with the user's input, reported as one line without a stack trace."""


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def resolve_inputs(path: str) -> list[str]:
    """Expand a file, a folder (recursively) or a glob into the list of input files.

    Remote URIs (``s3a://``, ``hdfs://``, ...) are passed to Spark unchanged.
    """
    if _is_remote(path):
        return [path]
    local = path[len("file://"):] if path.startswith("file://") else path
    if any(ch in local for ch in "*?["):
        matches = sorted(p for p in glob.glob(local, recursive=True) if os.path.isfile(p))
        if not matches:
            raise InputError(f"{path}: no file matches this pattern")
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
            raise InputError(f"{path}: folder holds no click files ({', '.join(_DATA_SUFFIXES[:6])}, ...)")
    elif os.path.isfile(local):
        files = [local]
    else:
        raise InputError(f"{path}: no such file or folder")
    for f in files:
        if not os.access(f, os.R_OK):
            raise InputError(f"{f}: file is not readable")
    nonempty = [f for f in files if os.path.getsize(f) > 0]
    if not nonempty:
        raise InputError(f"{path}: input is empty")
    return nonempty


def _first_line(path: str) -> str:
    """The first non-empty line of a local text file (gzip-aware); '' for remote paths."""
    if _is_remote(path):
        return ""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.strip():
                    return line.strip().lstrip("\ufeff")
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot be read ({exc.__class__.__name__}: {exc})") from None
    return ""


def _container(path: str) -> str:
    name = path.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz", ".ndjson")):
        return "json"
    return "csv"


def detect_format(files: list[str]) -> str:
    """Decide the input format from the first file; raise :class:`InputError` if ambiguous."""
    first = files[0]
    container = _container(first)
    if container == "parquet":
        return "parquet"
    line = _first_line(first)
    if not line:
        raise InputError(f"{first}: file is empty")
    if container == "json":
        try:
            record = json.loads(line)
        except ValueError:
            raise InputError(f"{first}: first line is not JSON; pass --format") from None
        if isinstance(record, dict) and "events" in record and "session" in record:
            return "otto"
        if isinstance(record, dict) and "session_id" in record:
            return "json"
        raise InputError(f"{first}: cannot tell the JSON format from the first record; pass --format")
    header = [c.strip().strip('"').lower() for c in line.split(";")]
    if tuple(header) == DIGINETICA_HEADER:
        return "diginetica"
    columns = [c.strip().strip('"').lower() for c in line.split(",")]
    if "session_id" in columns:
        return "csv"
    if len(columns) == 4 and columns[0].isdigit() and "t" in columns[1] and columns[1][:4].isdigit():
        return "yoochoose"
    raise InputError(f"{first}: cannot tell the format from the first line; pass --format "
                     f"({', '.join(FORMATS[1:])})")


def check_header(files: list[str], sep: str, required: tuple[str, ...]) -> list[str]:
    """Check that every local CSV file's header names the required columns; return the header."""
    header: list[str] = []
    for f in files:
        line = _first_line(f)
        if not line and not _is_remote(f):
            raise InputError(f"{f}: file is empty")
        if _is_remote(f):
            continue
        columns = [c.strip().strip('"') for c in line.split(sep)]
        missing = [c for c in required if c not in columns]
        if missing:
            raise InputError(f"{f}: missing required column(s) {', '.join(missing)} "
                             f"(header has: {', '.join(columns)})")
        if header and columns != header:
            raise InputError(f"{f}: header differs from {files[0]} ({', '.join(columns)})")
        header = columns
    return header


def check_json_keys(files: list[str], required: tuple[str, ...]) -> None:
    for f in files:
        if _is_remote(f):
            continue
        line = _first_line(f)
        try:
            record = json.loads(line)
        except ValueError:
            # A broken first line is a row problem (quarantined), not a schema problem.
            continue
        if isinstance(record, dict):
            missing = [c for c in required if c not in record]
            if missing:
                raise InputError(f"{f}: missing required field(s) {', '.join(missing)} in the records")


def check_input(path: str, fmt: str = "auto") -> tuple[list[str], str]:
    """Checks that need no Spark: the files exist, the format is known, headers have the
    required columns. Returns the input files and the (detected) format."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    files = resolve_inputs(path)
    if fmt == "auto":
        fmt = detect_format(files)
    if fmt == "csv":
        check_header(files, ",", REQUIRED_COLUMNS)
    elif fmt == "diginetica":
        check_header(files, ";", DIGINETICA_HEADER)
    elif fmt == "json":
        check_json_keys(files, REQUIRED_COLUMNS)
    return files, fmt
