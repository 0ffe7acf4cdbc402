"""The package's layers hold: no module imports a higher layer, the model knows no MLflow, Spark
or warehouse, config imports nothing of the package, and no module is long without a reason.

Every ``import`` in every module counts, those inside functions too (read with ``ast``, nothing
is imported). The layers, lowest first::

    0  config                     the settings table
    0.5 cpu, logs                 CPU facts and thread settings, logging
    1  data | warehouse           readers, Spark transforms, prepare, run folders | the warehouse
    2  model                      SR-GNN, its kernels, batches, baselines
    3  serving                    recommender, prediction, pyfunc, registry, scoring
    4  evaluation                 metrics, held-out examples, the evaluation path, the gate
    5  training                   loop, checkpoints, tracking, the training run
    6  pipeline                   the steps every task and command calls
    7  demo                       the whole product on generated data
    8  cli                        the srgnn command

A module may import its own sub-package and any lower layer; ``data`` and ``warehouse`` share a
rank and do not import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "srgnn"
LAYERS = {
    "srgnn.config": 0, "srgnn.cpu": 0.5, "srgnn.logs": 0.5,
    "srgnn.data": 1, "srgnn.warehouse": 1,
    "srgnn.model": 2,
    "srgnn.serving": 3,
    "srgnn.evaluation": 4,
    "srgnn.training": 5,
    "srgnn.pipeline": 6, "srgnn.demo": 7, "srgnn.cli": 8,
}
# Third-party packages a layer must not know (its users bring them in).
FORBIDDEN = {
    "srgnn.config": {"torch", "numpy", "pyspark", "mlflow", "duckdb", "psycopg", "sqlalchemy",
                     "airflow"},
    "srgnn.data": {"torch", "mlflow", "duckdb", "psycopg", "sqlalchemy", "airflow"},
    "srgnn.warehouse": {"torch", "mlflow", "pyspark", "airflow"},
    "srgnn.model": {"mlflow", "pyspark", "duckdb", "psycopg", "sqlalchemy", "airflow"},
    "srgnn.serving": {"airflow"},
    "srgnn.evaluation": {"airflow"},
    "srgnn.training": {"airflow"},
}
LONG = 400
LONG_REASON = "Why this module is long:"


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def unit(name: str) -> str:
    """The layer unit of a module: its sub-package (``srgnn.data``) or top module."""
    parts = name.split(".")
    return ".".join(parts[:2])


def imported(path: Path, name: str) -> set[str]:
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            if module == "srgnn":  # from srgnn import data
                found.update(f"srgnn.{alias.name}" for alias in node.names)
    return found


def test_every_module_has_a_layer():
    missing = [name for name, _ in modules() if name != "srgnn" and unit(name) not in LAYERS]
    assert missing == []


@pytest.mark.parametrize("name, path", [m for m in modules() if m[0] != "srgnn"], ids=lambda v: str(v))
def test_no_module_imports_a_higher_layer(name, path):
    own = unit(name)
    bad = []
    for module in imported(path, name):
        if not module.startswith("srgnn.") or unit(module) == own:
            continue
        if LAYERS[unit(module)] >= LAYERS[own]:
            bad.append(module)
    assert bad == [], f"{name} (layer {LAYERS[own]}) imports {bad}"


@pytest.mark.parametrize("name, path", [m for m in modules() if m[0] != "srgnn"], ids=lambda v: str(v))
def test_layers_do_not_know_what_is_above_them(name, path):
    forbidden = FORBIDDEN.get(unit(name), set())
    found = {module.split(".")[0] for module in imported(path, name)}
    assert found & forbidden == set(), f"{name} imports {sorted(found & forbidden)}"


def test_config_imports_nothing_of_the_package():
    found = imported(PACKAGE / "config.py", "srgnn.config")
    assert {m for m in found if m.startswith("srgnn")} == set()


def test_long_modules_say_why():
    unexplained = []
    for name, path in modules():
        lines = len(path.read_text().splitlines())
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > LONG and LONG_REASON not in docstring:
            unexplained.append(f"{name} ({lines} lines)")
    assert unexplained == []


def test_the_layer_check_catches_an_upward_import(tmp_path):
    """The checker itself can fail: a model module importing the registry is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from srgnn.serving import registry\n    from ..training import loop\n")
    found = imported(bad, "srgnn.model.bad")
    assert {"srgnn.serving", "srgnn.serving.registry", "srgnn.training.loop"} & found
    assert any(LAYERS[unit(m)] >= LAYERS["srgnn.model"] for m in found if m.startswith("srgnn."))
