"""Spark's failures to read the user's input, as one-line :class:`InputError` exceptions.

The local checks of :mod:`srgnn.data.inputs` find a truncated gzip file or a missing file
before Spark starts; a remote file (``s3a://``, ``hdfs://``) they cannot read, and a local
file may change after they ran. Spark then fails inside a job with a Java stack trace
wrapped in a Python one. :func:`spark_input_errors` turns the failures that are about an
unreadable input file into an :class:`InputError` naming the file (when Spark says which)::

    with spark_input_errors(clicks_path):
        raw = read_clicks(spark, clicks_path)
        raw.quarantine.write.parquet(...)

Every other exception passes through unchanged: a failure that is not about the input keeps
its stack trace. Used around prepare's and scoring's Spark work; re-exported by
:mod:`srgnn.data.readers`.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from urllib.parse import unquote, urlparse

from srgnn.data.inputs import InputError, excerpt

__all__ = ["spark_input_errors", "input_error_of"]

# (text in Spark's message, what the user is told); the first that matches wins.
_PROBLEMS = (
    ("Unexpected end of input stream", "the compressed stream is truncated or corrupt"),
    ("Unexpected end of ZLIB input stream", "the compressed stream is truncated or corrupt"),
    ("Not in GZIP format", "the gzip stream is corrupt"),
    ("Corrupt GZIP trailer", "the gzip stream is corrupt"),
    ("incorrect header check", "the compressed stream is corrupt"),
    ("invalid block type", "the compressed stream is corrupt"),
    ("invalid stored block lengths", "the compressed stream is corrupt"),
    ("invalid distance", "the compressed stream is corrupt"),
    ("invalid code lengths set", "the compressed stream is corrupt"),
    ("too many length or distance symbols", "the compressed stream is corrupt"),
    ("ZipException", "the compressed stream is corrupt"),
    ("CANNOT_READ_FILE_FOOTER", "not a readable Parquet file"),
    ("is not a Parquet file", "not a Parquet file"),
    ("Can not read value at", "a corrupt Parquet file"),
    ("PATH_NOT_FOUND", "no such file or folder"),
    ("FILE_NOT_EXIST", "no such file (it was removed while being read)"),
    ("FileNotFoundException", "no such file (it was removed while being read)"),
    ("INVALID_PARAMETER_VALUE.CHARSET", "the encoding is not one Spark reads"),
    ("AccessDeniedException", "permission denied"),
    ("MALFORMED_CSV_RECORD", "a line cannot be split into CSV fields (too many in one line?)"),
    ("FAILED_READ_FILE", "it failed to be read"),
)
# A file Spark names: a URI or an absolute path after the words Spark puts before it.
_FILE = re.compile(r"(?:while reading file|Path does not exist:|footer for file:?|File)\s+"
                   r"((?:[a-zA-Z][\w+.-]*:)?/\S+?)[.,;]?(?=\s|$)")
_CAUSE = re.compile(r"Caused by: ([\w.$]+(?:Exception|Error)\b[^\n]*)")


def _display(uri: str) -> str:
    """A local ``file:`` URI as a path; other URIs as they are."""
    if uri.startswith("file:"):
        return unquote(urlparse(uri).path) or uri
    return uri


def _from_spark(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.startswith(("py4j", "pyspark"))


def input_error_of(exc: BaseException, source: str | None = None) -> InputError | None:
    """The :class:`InputError` an exception from Spark means, or ``None`` when it is not
    about an unreadable input. ``source`` names the input when Spark does not."""
    if not _from_spark(exc):
        return None
    # A captured Spark exception keeps the JVM's stack trace (with its "Caused by:") apart.
    text = "\n".join(part for part in (str(exc), getattr(exc, "_stackTrace", None)) if part)
    problem = next((what for needle, what in _PROBLEMS if needle in text), None)
    if problem is None:
        return None
    found = _FILE.search(text)
    name = _display(found.group(1)) if found else (source or "input")
    causes = _CAUSE.findall(text)
    detail = causes[-1].strip() if causes else ""
    message = f"{excerpt(name, 4 * len(name) + 80)}: cannot be read: {problem}"
    if detail:
        message += f" ({excerpt(detail)})"
    return InputError(message)


@contextmanager
def spark_input_errors(source: str | None = None):
    """Turn Spark's exceptions about unreadable input into one-line input errors.

    ``source`` (the input path the user gave) is named when Spark's message names no file.
    Exceptions that are not about the input, and :class:`InputError` itself, pass through.
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - only Spark's input failures are converted
        error = input_error_of(exc, source)
        if error is None:
            raise
        raise error from None
