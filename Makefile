# Entry points. `make demo` and `make test` install .venv first when needed.
.PHONY: install demo test test-fast lock bench clean spark-env

install:
	scripts/install.sh

demo: install
	.venv/bin/srgnn demo

test: install
	.venv/bin/python -m pytest -q --durations=15

test-fast: install
	.venv/bin/python -m pytest -q -m "not slow"

# Re-resolve the pinned set after changing pyproject.toml.
lock: install
	.venv/bin/uv pip freeze --python .venv/bin/python | grep -v -e '^-e ' -e '^srgnn' \
	  | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' > requirements.lock.new
	( echo '# Full pinned dependency set (constraints for scripts/install.sh). Regenerate with: make lock'; \
	  cat requirements.lock.new ) > requirements.lock && rm requirements.lock.new

clean:
	rm -rf var/ .pytest_cache

# The executors' Python environment for cluster mode, shipped with spark-submit --archives
# (set SRGNN_SPARK_ARCHIVE to it); see the README's cluster section.
spark-env: install
	scripts/spark_env.sh
