"""SparkSession creation from the project's settings.

Local mode (``local[*]``) is the embedded default; any other master URL (``spark://...``,
``yarn``, ``k8s://...``) is passed through unchanged. Nothing starts at import time.

In local mode the driver JVM loads several thousand Spark classes before the first job
finishes, each read from a jar and verified; on a small day that is most of a command's Spark
time. A class archive (the JVM's application class-data sharing, ``-XX:SharedArchiveFile``)
holds those classes already parsed and verified: ``python -m srgnn.data.spark
--build-class-archive`` (run by ``scripts/install.sh``) records one from a small prepare job,
and local sessions use it when it exists (the README gives the start times with and without
it). The archive is named after the Java runtime and the Spark
version it was built with, so another JDK or Spark simply goes without it; a JVM that still
rejects it starts normally. ``SRGNN_SPARK_CLASS_ARCHIVE=off`` turns it off, a path puts it
elsewhere.

The driver JVM's own output (the launcher's notes, Spark's banner, log4j lines) is forwarded
to Python logging line by line, so that a task log shows errors as errors and nothing else on
stderr (:func:`_launch_jvm`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from srgnn.config import Settings

# C1-only JIT: a much shorter JVM warm-up in local mode (and faster small jobs); long cluster
# jobs keep the full JIT.
_LOCAL_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1"
_LOG_CONFIG = os.path.join(os.path.dirname(__file__), "conf", "log4j2.properties")
ARCHIVE_ENV = "SRGNN_SPARK_CLASS_ARCHIVE"
# The JVM reports a rejected or partly dumped archive on stdout; neither is the user's concern.
_QUIET_ARCHIVE = "-Xlog:cds=off -Xlog:cds+dynamic=off"


def _java() -> str | None:
    """The java executable Spark's launcher will run (``$JAVA_HOME/bin/java``, else PATH)."""
    home = os.environ.get("JAVA_HOME")
    candidate = os.path.join(home, "bin", "java") if home else shutil.which("java")
    return os.path.realpath(candidate) if candidate and os.path.exists(candidate) else None


def class_archive_path() -> Path | None:
    """Where this environment's Spark class archive lives; None when turned off or no Java."""
    from srgnn.config import Runtime

    setting = Runtime.from_env().spark_class_archive or ""
    if setting.lower() == "off":
        return None
    if setting:
        return Path(setting)
    java = _java()
    if java is None:
        return None
    import pyspark

    stat = os.stat(java)
    key = f"{java}|{stat.st_size}|{stat.st_mtime_ns}|{pyspark.__version__}|{os.path.realpath(pyspark.__file__)}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(sys.prefix) / "share" / "srgnn" / f"spark-classes-{digest}.jsa"


def executor_environment(settings: Settings, environ=None) -> dict[str, str]:
    """``spark.executorEnv.*`` options that give the executors this process's srgnn settings.

    Python workers on a cluster do not inherit the driver's environment; code that runs there
    (the Spark scoring engine's model, its top-K index settings, torch threads) reads its
    settings with ``Settings.from_env()``. Every ``SRGNN_*`` variable set here goes along,
    except those that may hold credentials (names with URL or PASSWORD: the executors never
    open the warehouse), and ``SRGNN_HOME`` as an absolute path.
    """
    environ = os.environ if environ is None else environ
    forwarded = {name: value for name, value in environ.items()
                 if name.startswith("SRGNN_") and "URL" not in name and "PASSWORD" not in name}
    forwarded["SRGNN_HOME"] = str(Path(settings.home).resolve())
    return {f"spark.executorEnv.{name}": value for name, value in sorted(forwarded.items())}


def get_spark(settings: Settings | None = None, app_name: str = "srgnn", shuffle_partitions: int | None = None,
              *, java_options: str = ""):
    """Return the active SparkSession or build one configured for this project.

    ``java_options`` are added to the driver JVM's options in local mode.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    settings = settings or Settings.from_env()
    # Under spark-submit the master (and driver options) come from its command line.
    submitted = bool(os.environ.get("PYSPARK_GATEWAY_PORT"))
    master = settings.spark_master
    local = master.startswith("local") and not submitted
    if shuffle_partitions is None:
        shuffle_partitions = max(4, 4 * (os.cpu_count() or 2)) if local else 200
    options = {
        "spark.app.name": app_name,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.ui.showConsoleProgress": "false",
        # Without this, a CSV line with a missing trailing field is only flagged as corrupt
        # when every column happens to be selected.
        "spark.sql.csv.parser.columnPruning.enabled": "false",
    }
    if not submitted:
        options["spark.master"] = master
        # The driver JVM is started here (below), so its memory can still be set, on every
        # master; under spark-submit its own --driver-memory has decided already.
        options["spark.driver.memory"] = settings.spark_driver_memory
        # Python workers run this environment's interpreter (its srgnn, pyarrow, numpy, torch)
        # on every master, unless the user names another one; without it, executors on a
        # cluster start plain `python3` and fail on `import srgnn`.
        python = settings.spark_python or os.environ.get("PYSPARK_PYTHON") or sys.executable
        os.environ["PYSPARK_PYTHON"] = python
        options["spark.pyspark.python"] = python
    if settings.spark_executor_memory:
        options["spark.executor.memory"] = settings.spark_executor_memory
    options.update(executor_environment(settings))
    if local:
        options.update({
            "spark.driver.extraJavaOptions": (
                f"{_LOCAL_JAVA_OPTIONS} {_archive_options()} {java_options} "
                f"-Dlog4j2.configurationFile=file:{_LOG_CONFIG}"),
            "spark.ui.enabled": "false",
            "spark.sql.warehouse.dir": str((settings.home / "spark-warehouse").resolve()),
        })
    # py4j logs its connection shutdown at INFO while the interpreter exits, when the log
    # stream may already be closed ("--- Logging error ---"); nothing it says there matters.
    import logging

    logging.getLogger("py4j").setLevel(logging.WARNING)
    if not submitted:
        _launch_jvm(options)
    builder = SparkSession.builder
    for key, value in options.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _launch_jvm(options: dict[str, str]) -> None:
    """Start the driver JVM with its output forwarded to the logger ``srgnn.data.spark.jvm``.

    The JVM would otherwise write to this process's stderr: the launcher's notes and Spark's
    banner would read as errors in a task log. Forwarded, each line gets its own level (a log4j
    ERROR stays an error, the notes are INFO; :func:`srgnn.logs.jvm_level`). Does nothing when a
    JVM is already running in this process.
    """
    import subprocess
    import threading

    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    from srgnn.logs import forward_lines

    with SparkContext._lock:
        if SparkContext._gateway is not None:
            return
        conf = SparkConf(loadDefaults=False).setAll(list(options.items()))
        gateway = launch_gateway(conf, popen_kwargs={"stdout": subprocess.PIPE,
                                                     "stderr": subprocess.STDOUT})
        threading.Thread(target=forward_lines, args=(gateway.proc.stdout, f"{__name__}.jvm"),
                         name="spark-jvm-output", daemon=True).start()
        SparkContext._gateway = gateway
        SparkContext._jvm = gateway.jvm


def _archive_options() -> str:
    archive = class_archive_path()
    if archive is None or not archive.is_file():
        return ""
    return f"-XX:SharedArchiveFile={archive} {_QUIET_ARCHIVE}"


def _warm_up(archive: str) -> None:
    """Run a small prepare job in a JVM that records its classes into ``archive`` at exit."""
    from pyspark import SparkContext

    from srgnn.config import PrepareConfig
    from srgnn.data.prepare import run_prepare
    from srgnn.data.synth import SynthConfig, write_clickstream

    with tempfile.TemporaryDirectory(prefix="srgnn-warm-up-") as folder:
        settings = Settings(home=Path(folder) / "home", spark_master="local[2]")
        clicks = os.path.join(folder, "clicks.csv.gz")
        write_clickstream(clicks, SynthConfig(sessions=2_000, items=300, days=3), compress=True)
        spark = get_spark(settings, app_name="srgnn-warm-up",
                          java_options=f"-XX:ArchiveClassesAtExit={archive} {_QUIET_ARCHIVE}")
        run_prepare(spark, clicks, os.path.join(folder, "prepared"),
                    PrepareConfig(min_item_support=1, test_days=1, valid_days=1))
        spark.stop()
        # The JVM writes the archive while it exits: wait for it.
        gateway = SparkContext._gateway
        process = getattr(gateway, "proc", None)
        gateway.shutdown()
        if process is not None:
            process.stdin.close()
            process.wait(timeout=300)


def build_class_archive(path: Path | None = None, timeout: float = 900) -> Path:
    """Record the Spark class archive (module docstring) and return its path.

    The recording runs in a child process; the file appears, complete, only when it succeeded.
    """
    path = path or class_archive_path()
    if path is None:
        raise RuntimeError(f"no Java runtime found (or {ARCHIVE_ENV}=off): nothing to build.")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    env = {**os.environ, ARCHIVE_ENV: "off"}
    try:
        done = subprocess.run([sys.executable, "-m", "srgnn.data.spark", "--warm-up", str(partial)], env=env,
                              timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"the warm-up job failed (exit {done.returncode}): {tail}")
        if not partial.is_file() or partial.stat().st_size == 0:
            raise RuntimeError("the JVM wrote no class archive.")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    for stale in path.parent.glob("spark-classes-*.jsa"):  # archives of a former JDK or Spark
        if stale != path:
            stale.unlink(missing_ok=True)
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m srgnn.data.spark", description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--build-class-archive", action="store_true",
                        help="record the local driver's class archive (see the module docstring)")
    action.add_argument("--warm-up", metavar="ARCHIVE", help=argparse.SUPPRESS)
    parser.add_argument("--if-missing", action="store_true", help="do nothing when the archive exists")
    args = parser.parse_args(argv)
    if args.warm_up:
        _warm_up(args.warm_up)
        return 0
    path = class_archive_path()
    if path is None:
        print(f"srgnn.data.spark: no Java runtime found (or {ARCHIVE_ENV}=off); no class archive built.",
              file=sys.stderr)
        return 1
    if args.if_missing and path.is_file():
        return 0
    started = time.time()
    try:
        build_class_archive(path)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        print(f"srgnn.data.spark: no class archive built: {exc}", file=sys.stderr)
        return 1
    print(f"srgnn.data.spark: class archive {path} ({path.stat().st_size / 2**20:.0f} MiB, "
          f"{time.time() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
