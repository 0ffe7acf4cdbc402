#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv.
#
# Every direct dependency is pinned in pyproject.toml and the whole transitive set in
# requirements.lock, applied as constraints. uv is used when it can be installed (about
# 1 minute cold), plain pip otherwise (about 3 minutes). The install is skipped when .venv
# already matches pyproject.toml and requirements.lock.
#
#   scripts/install.sh            install if needed
#   scripts/install.sh --fresh    delete .venv first
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PYTHON_BIN=${PYTHON:-}
if [ -z "$PYTHON_BIN" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON_BIN=$candidate; break; fi
  done
fi
[ -n "$PYTHON_BIN" ] || { echo "install: no python3 found (need Python 3.11 or 3.12)" >&2; exit 1; }

if [ "${1:-}" = "--fresh" ]; then rm -rf "$VENV"; fi

stamp_value=$(cat pyproject.toml requirements.lock scripts/install.sh | sha256sum | cut -d' ' -f1)
# Spark's class archive for fast local starts (srgnn/data/spark.py); built once per JDK and Spark.
class_archive() {
  if command -v java >/dev/null 2>&1 || [ -n "${JAVA_HOME:-}" ]; then
    "$VENV/bin/python" -m srgnn.data.spark --build-class-archive --if-missing \
      || echo "install: warning: no Spark class archive; local Spark starts take a few seconds longer" >&2
  fi
}

if [ -x "$VENV/bin/srgnn" ] && [ "$(cat "$VENV/.install-stamp" 2>/dev/null)" = "$stamp_value" ]; then
  class_archive
  exit 0
fi

if ! command -v java >/dev/null 2>&1; then
  echo "install: warning: no 'java' on PATH; Spark needs a Java 17 runtime" >&2
fi

echo "install: creating $VENV with $PYTHON_BIN" >&2
"$PYTHON_BIN" -m venv "$VENV"

# Packages are installed with their bytecode compiled: where PYTHONDONTWRITEBYTECODE is set,
# Python would otherwise compile torch, mlflow, pyspark, ... from source in every process
# (about 3 s at each start of a command, a Spark worker or a test process).

# Local wheel folders from pip's own configuration (e.g. a CPU build of torch on disk):
# pip reads them itself, uv has to be told.
find_links=()
for dir in $("$VENV/bin/pip" config get global.find-links 2>/dev/null || true); do
  find_links+=(--find-links "$dir")
done

if "$VENV/bin/pip" install -q uv==0.13.9 >/dev/null 2>&1; then
  "$VENV/bin/uv" pip install --quiet --compile-bytecode --python "$VENV/bin/python" \
    "${find_links[@]}" -c requirements.lock -e ".[dev]"
else
  echo "install: uv unavailable, using pip" >&2
  "$VENV/bin/pip" install -q -c requirements.lock -e ".[dev]"
fi
echo "$stamp_value" > "$VENV/.install-stamp"
class_archive
echo "install: done ($VENV)" >&2
