"""The local driver's class archive (srgnn.data.spark): where it lives, that it is built, that the
JVM uses it, and that a bad one never stops Spark from starting."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from srgnn.data import spark as srgnn_spark


def test_archive_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(srgnn_spark.ARCHIVE_ENV, "off")
    assert srgnn_spark.class_archive_path() is None
    assert srgnn_spark._archive_options() == ""

    monkeypatch.setenv(srgnn_spark.ARCHIVE_ENV, str(tmp_path / "mine.jsa"))
    assert srgnn_spark.class_archive_path() == tmp_path / "mine.jsa"
    assert srgnn_spark._archive_options() == ""  # not built yet: the JVM is not told about it
    (tmp_path / "mine.jsa").write_bytes(b"x")
    assert f"-XX:SharedArchiveFile={tmp_path / 'mine.jsa'}" in srgnn_spark._archive_options()

    monkeypatch.delenv(srgnn_spark.ARCHIVE_ENV)
    default = srgnn_spark.class_archive_path()
    if default is None:
        pytest.skip("no Java runtime on this machine")
    assert default.parent == Path(sys.prefix) / "share" / "srgnn"
    # Another Java runtime gets another archive name.
    other_java = tmp_path / "jdk" / "bin" / "java"
    other_java.parent.mkdir(parents=True)
    other_java.write_text("#!/bin/sh\n")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    assert srgnn_spark.class_archive_path() not in (None, default)


def test_the_jvm_starts_quietly_with_a_rejected_archive(tmp_path):
    java = srgnn_spark._java()
    if java is None:
        pytest.skip("no Java runtime on this machine")
    garbage = tmp_path / "garbage.jsa"
    garbage.write_bytes(b"not an archive" * 100)
    done = subprocess.run([java, f"-XX:SharedArchiveFile={garbage}", *srgnn_spark._QUIET_ARCHIVE.split(),
                           "-version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "archive" not in (done.stdout + done.stderr).lower()


@pytest.mark.slow
def test_built_archive_is_used_by_a_local_session(tmp_path):
    if srgnn_spark._java() is None:
        pytest.skip("no Java runtime on this machine")
    archive = srgnn_spark.build_class_archive(tmp_path / "spark-classes-test.jsa")
    assert archive.stat().st_size > 10 * 2**20
    assert not list(tmp_path.glob("*.partial"))
    # -Xshare:on makes the JVM refuse to start unless it maps the archive.
    child = textwrap.dedent(f"""
        import os
        os.environ["{srgnn_spark.ARCHIVE_ENV}"] = {str(archive)!r}
        from srgnn.config import Settings
        from srgnn.data.spark import get_spark
        spark = get_spark(Settings(home={str(tmp_path / "home")!r}, spark_master="local[1]"),
                          java_options="-Xshare:on")
        options = spark.sparkContext.getConf().get("spark.driver.extraJavaOptions")
        assert "-XX:SharedArchiveFile={archive}" in options, options
        print("rows", spark.range(7).count())
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rows 7" in done.stdout
