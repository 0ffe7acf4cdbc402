#!/usr/bin/env bash
# Build the Python environment that Spark executors run, packed into one archive for
# spark-submit --archives (Spark's documented way to ship Python dependencies).
#
#   scripts/spark_env.sh [OUT]      default OUT: var/srgnn-spark-env.tar.gz
#
# The environment holds the srgnn package (installed, not editable) and what executors import:
# the project's pinned dependencies without Airflow and PySpark (executors take PySpark from
# their Spark installation). It is a virtual environment packed with venv-pack, so every node
# needs the same base Python at the same path as this machine (the archive's bin/python links
# to it); nodes built from this project's Docker image have it. The archive is rebuilt only
# when pyproject.toml, requirements.lock, the package or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-var/srgnn-spark-env.tar.gz}
BUILD=var/spark-env
case "$OUT" in
  *.tar.gz|*.tgz) ;;
  # Spark unpacks a plain .tar or a .zip in Java, which refuses the environment's links to its
  # base Python ("would create entry outside of ..."); a gzipped tar it unpacks with tar.
  *) echo "spark-env: $OUT: the archive must be a .tar.gz or .tgz" >&2; exit 2 ;;
esac
[ -x .venv/bin/python ] || scripts/install.sh

stamp_value=$( (cat pyproject.toml requirements.lock scripts/spark_env.sh; \
                find srgnn -name '*.py' -o -name '*.sql' -o -name '*.xml' | LC_ALL=C sort | xargs cat) \
               | sha256sum | cut -d' ' -f1)
if [ -f "$OUT" ] && [ "$(cat "$OUT.stamp" 2>/dev/null)" = "$stamp_value" ]; then
  echo "spark-env: $OUT is up to date" >&2
  exit 0
fi

# The executors' requirements: pyproject.toml's dependencies minus Airflow and PySpark.
mapfile -t requirements < <(.venv/bin/python - <<'PY'
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
skip = ("apache-airflow", "pyspark")
print("\n".join(d for d in deps if not d.lower().startswith(skip)))
PY
)

base_python=$(.venv/bin/python -c 'import sys; print(sys._base_executable)')
rm -rf "$BUILD"
"$base_python" -m venv "$BUILD"
find_links=()
for dir in $(.venv/bin/pip config get global.find-links 2>/dev/null || true); do
  find_links+=(--find-links "$dir")
done
if [ -x .venv/bin/uv ]; then
  install=(.venv/bin/uv pip install --quiet --compile-bytecode --python "$BUILD/bin/python" "${find_links[@]}")
else
  install=("$BUILD/bin/pip" install -q)
fi
"${install[@]}" -c requirements.lock "${requirements[@]}"
"${install[@]}" -c requirements.lock --no-deps .
mkdir -p "$(dirname "$OUT")"
rm -f "$OUT"
.venv/bin/venv-pack --prefix "$BUILD" --output "$OUT" --quiet
rm -rf "$BUILD"
echo "$stamp_value" > "$OUT.stamp"
echo "spark-env: wrote $OUT ($(du -h "$OUT" | cut -f1))" >&2
