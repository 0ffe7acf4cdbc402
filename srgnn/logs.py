"""Logging, configured once per command: progress to stdout, problems to stderr.

Every command (``srgnn ...``, a ``jobs/*.py`` entry point) calls :func:`configure` first, so
that the package's progress lines (per-epoch loss, validation HR@K / MRR@K, examples/s and
learning rate; stage timings of prepare and scoring) reach a redirected output. Lines below
WARNING go to stdout and the rest to stderr: schedulers such as Airflow file what a task
writes to stderr as errors, and stderr is kept for what is wrong. Inside a process whose
logging is already set up (an Airflow task) :func:`configure` adds no handler of its own and
the package's records go to the existing ones.

Libraries that install their own stderr handler (MLflow) are brought under the same rule with
:func:`adopt`; notes a library prints to stderr (MLflow's "Created version ...") go through a
logger with :func:`stderr_to_log`, and the Spark JVM's output is forwarded line by line by
:func:`forward_lines` (its errors stay errors).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys

__all__ = ["configure", "adopt", "stderr_to_log", "forward_lines", "jvm_level", "FORMAT"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_QUIET = {"py4j": logging.WARNING, "urllib3": logging.WARNING, "alembic": logging.WARNING,
          "matplotlib": logging.WARNING,
          # the JVM's launcher notes and Spark's banner: only its warnings and errors matter
          "srgnn.data.spark.jvm": logging.WARNING}


class _Below(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def _console_handlers() -> list[logging.Handler]:
    formatter = logging.Formatter(FORMAT, datefmt="%H:%M:%S")
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(_Below(logging.WARNING))
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(formatter)
    return [out, err]


def configure(level: int = logging.INFO, *, own_handlers: bool = False) -> None:
    """Send the package's records of ``level`` and above somewhere a user sees them.

    Without handlers on the root logger (a command line), INFO goes to stdout and WARNING and
    above to stderr; otherwise the existing handlers are used. ``own_handlers`` gives the
    package's logger those two handlers of its own, for a process whose root logger is set
    up by someone else at another level (``srgnn demo`` runs Airflow's DAGs in-process with
    Airflow's logging at WARNING). Safe to call more than once.
    """
    root = logging.getLogger()
    package = logging.getLogger("srgnn")
    if own_handlers:
        if not getattr(package, "_srgnn_console", False):
            for handler in _console_handlers():
                package.addHandler(handler)
            package._srgnn_console = True
        package.propagate = False
    elif not root.handlers:
        for handler in _console_handlers():
            root.addHandler(handler)
        root.setLevel(logging.WARNING)
    package.setLevel(level)
    for name, quiet in _QUIET.items():
        logging.getLogger(name).setLevel(quiet)


def adopt(name: str) -> None:
    """Let the logger ``name`` write through the root handlers instead of its own console ones.

    Does nothing while the root logger has no handler (the library's own output is then all
    there is).
    """
    if not logging.getLogger().handlers:
        return
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        if type(handler) is logging.StreamHandler:  # a console handler, not a file
            logger.removeHandler(handler)
    logger.propagate = True


class _LogLines(io.TextIOBase):
    """A text stream that logs each complete line it is given."""

    def __init__(self, logger: logging.Logger, level: int) -> None:
        self.logger, self.level, self.pending = logger, level, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if line.strip():
                self.logger.log(self.level, "%s", line.rstrip())
        return len(text)

    def flush(self) -> None:
        if self.pending.strip():
            self.logger.log(self.level, "%s", self.pending.rstrip())
        self.pending = ""


@contextlib.contextmanager
def stderr_to_log(name: str, level: int = logging.INFO):
    """Within the block, lines written to ``sys.stderr`` become records of logger ``name``."""
    stream = _LogLines(logging.getLogger(name), level)
    try:
        with contextlib.redirect_stderr(stream):
            yield
    finally:
        stream.flush()


# A log4j line as srgnn's log4j2.properties writes it: "yy/MM/dd HH:mm:ss LEVEL logger: message".
_LOG4J = re.compile(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d (TRACE|DEBUG|INFO|WARN|ERROR|FATAL) ")
_LEVELS = {"TRACE": logging.DEBUG, "DEBUG": logging.DEBUG, "INFO": logging.INFO,
           "WARN": logging.WARNING, "ERROR": logging.ERROR, "FATAL": logging.CRITICAL}


def jvm_level(line: str, previous: int | None) -> int:
    """The level of one line of JVM output: a log4j line's own level; a continuation (an
    exception's stack trace) that of the line it continues; anything else (the launcher's
    notes, Spark's banner) INFO."""
    match = _LOG4J.match(line)
    if match:
        return _LEVELS[match.group(1)]
    if previous is not None and (line[:1].isspace() or line.startswith(("Caused by", "at "))):
        return previous
    return logging.INFO


def forward_lines(stream, name: str) -> None:
    """Read ``stream`` (bytes) to its end, logging each line to logger ``name`` at the level
    :func:`jvm_level` gives it. Meant for a daemon thread reading a child's output."""
    logger = logging.getLogger(name)
    previous = None
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip()
        if not line:
            continue
        level = jvm_level(line, previous)
        previous = level if level >= logging.WARNING else None
        logger.log(level, "%s", line)
