"""Training DAG: raw clicks -> session graphs (Spark) -> SR-GNN (torch, MLflow) -> champion.

    prepare -> train -> evaluate -> publish_champion

* **prepare** turns the clicks named by the ``clicks``/``format`` params into train/valid/test
  session graphs under ``$SRGNN_HOME/runs/srgnn_training/<run id>/``. In ``local`` mode it runs
  in the task process on Spark local; in ``cluster`` mode ``SparkSubmitOperator`` submits
  ``jobs/prepare.py`` to the master of the Airflow connection ``$SRGNN_SPARK_CONN_ID``.
* **train** trains and registers a new version of the MLflow model ``srgnn`` and moves the
  ``champion`` alias to it if it beats the current champion on the same held-out data.
* **evaluate** compares the new version with the baselines on the test split.
* **publish_champion** emits an event on the ``srgnn://models/srgnn/champion`` asset when the
  alias moved, and is skipped otherwise.

Configuration (environment, read when the file is parsed): ``SRGNN_TRAINING_SCHEDULE``
(default ``@weekly``; ``none`` for triggered runs only), ``SRGNN_TRAINING_CLICKS`` and
``SRGNN_TRAINING_FORMAT`` (param defaults), ``SRGNN_MIN_ITEM_SUPPORT``, ``SRGNN_TEST_DAYS``,
``SRGNN_VALID_DAYS``, ``SRGNN_EXECUTION_MODE``, ``SRGNN_SPARK_CONN_ID``, ``SRGNN_TASK_RETRIES``.

Try it without a scheduler (``airflow db migrate`` first, with ``AIRFLOW__CORE__DAGS_FOLDER``
set to this folder): ``python dags/srgnn_training.py``.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

import _common
from srgnn.config import PRECISIONS, PrepareConfig
from srgnn.io import FORMATS

DAG_ID = "srgnn_training"
RUN_DIR = _common.run_dir_template(DAG_ID)
_prepare_defaults = PrepareConfig()


@task
def prepare(out_dir: str, params: dict | None = None) -> dict:
    from srgnn.pipeline import prepare_step

    return prepare_step(params["clicks"], fmt=params["format"], out_dir=out_dir,
                        min_item_support=params["min_item_support"], test_days=params["test_days"],
                        valid_days=params["valid_days"])


@task
def train(run_dir: str, params: dict | None = None) -> dict:
    from srgnn.pipeline import train_step

    return train_step(run_dir, epochs=params["epochs"], refit=params.get("refit", False),
                      short_fallback=params.get("short_fallback", True),
                      precision=params.get("precision", "auto"))


@task
def evaluate(run_dir: str, trained: dict) -> dict:
    from srgnn.pipeline import evaluate_step

    return evaluate_step(run_dir, model_uri=trained["model_uri"])


@task(outlets=[_common.CHAMPION])
def publish_champion(trained: dict, outlet_events=None) -> dict:
    return _common.publish_champion(trained, outlet_events)


@dag(
    dag_id=DAG_ID,
    schedule=_common.schedule("SRGNN_TRAINING_SCHEDULE", "@weekly"),
    start_date=_common.START_DATE,
    catchup=False,
    max_active_runs=1,  # two trainings racing for the champion alias would compare stale numbers
    default_args=_common.default_args(),
    tags=["srgnn", "training"],
    doc_md=__doc__,
    user_defined_macros=_common.TEMPLATE_MACROS,
    user_defined_filters=_common.TEMPLATE_FILTERS,
    params={
        "clicks": Param(
            _common.env("SRGNN_TRAINING_CLICKS", str(_common.home() / "clicks")),
            type="string", minLength=1,
            description="Raw clicks: a file, a folder or a glob (CSV, CSV.gz, JSON Lines, Parquet).",
        ),
        "format": Param(
            _common.env("SRGNN_TRAINING_FORMAT", "auto"), enum=list(FORMATS),
            description="Input format; 'auto' decides from the file name and first line.",
        ),
        "min_item_support": Param(
            _common.env_int("SRGNN_MIN_ITEM_SUPPORT", _prepare_defaults.min_item_support),
            type="integer", minimum=1, description="Drop items with fewer clicks than this.",
        ),
        "test_days": Param(
            _common.env_int("SRGNN_TEST_DAYS", _prepare_defaults.test_days),
            type="integer", minimum=0, description="Sessions ending in the last N days form the test split.",
        ),
        "valid_days": Param(
            _common.env_int("SRGNN_VALID_DAYS", _prepare_defaults.valid_days),
            type="integer", minimum=0, description="The N days before the test window form the validation split.",
        ),
        "epochs": Param(
            None, type=["null", "integer"], minimum=1,
            description="Training epochs; empty for the package default.",
        ),
        "refit": Param(
            False, type="boolean",
            description="After choosing the epoch count on validation, train again on train + "
                        "valid for that many epochs and register that model (needs test_days > 0).",
        ),
        "short_fallback": Param(
            True, type="boolean",
            description="Answer 1-3 click sessions with item-KNN where validation by session "
                        "length shows it better than SR-GNN.",
        ),
        "precision": Param(
            _common.env("SRGNN_PRECISION", "auto"), enum=list(PRECISIONS),
            description="Operands of the training loss's catalogue products; auto = bfloat16 "
                        "where the CPU multiplies it natively (float32 accumulation and weights).",
        ),
    },
)
def srgnn_training():
    if _common.execution_mode() == "cluster":
        from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

        prepared = SparkSubmitOperator(
            task_id="prepare",
            conn_id=_common.spark_conn_id(),
            application=f"{_common.jobs_dir()}/prepare.py",
            py_files=_common.spark_py_files(),
            name="srgnn-prepare-{{ run_id | path_safe }}",
            application_args=[
                "--clicks", "{{ params.clicks }}",
                "--out", RUN_DIR,
                "--format", "{{ params.format }}",
                "--min-item-support", "{{ params.min_item_support }}",
                "--test-days", "{{ params.test_days }}",
                "--valid-days", "{{ params.valid_days }}",
            ],
        )
        run_dir = RUN_DIR
    else:
        prepared = prepare(out_dir=RUN_DIR)
        run_dir = prepared["run_dir"]

    trained = train(run_dir)
    prepared >> trained
    evaluation = evaluate(run_dir, trained)
    evaluation >> publish_champion(trained)


training_dag = srgnn_training()

if __name__ == "__main__":
    training_dag.test()
