"""Training DAG: raw clicks -> session graphs (Spark) -> SR-GNN (torch, MLflow) -> champion.

    prepare -> train -> evaluate -> gate -> final_refit -> publish_champion

* **prepare** turns the clicks named by the ``clicks``/``format`` params into train/valid/test
  session graphs under ``$SRGNN_HOME/runs/srgnn_training/<run id>/``. In ``local`` mode it runs
  in the task process on Spark local; in ``cluster`` mode ``SparkSubmitOperator`` submits
  ``jobs/prepare.py`` to the master of the Airflow connection ``$SRGNN_SPARK_CONN_ID``.
* **train** trains, logs and registers a new version of the MLflow model ``srgnn``, and
  nothing else: with the param ``refit`` (on by default) the model registered is retrained on
  train + valid for the epoch count validation chose, when there are test days to hold out.
  It always resumes the run folder's training: a retry of the task continues from the last
  finished epoch, and a retry after the version was registered returns that version (never a
  second one).
* **evaluate** scores the new version, the current champion and the baselines once, on the
  same held-out examples, and logs the figures to the training's MLflow run.
* **gate** moves the ``champion`` alias to the new version only if those figures show it
  better; its decision and reason are tags of the version.
* **final_refit**, when the gate promoted the new version (and ``refit`` and ``final_refit``
  are on), trains it once more on every day, held-out days included, for the same epochs,
  registers that model and moves the alias to it: the gate decided on a model that did not
  see the held-out days, the champion learns from them too. The tags ``trained_on`` and
  ``trained_days`` of each version say which days it saw.
* **publish_champion** emits an event on the ``srgnn://models/srgnn/champion`` asset when the
  alias moved, and is skipped otherwise.

A user's mistake (a missing clicks folder, a bad param) fails its task at once, without
retries; retries are for faults of the environment.

Configuration (environment, read when the file is parsed; see ``srgnn.config``):
``SRGNN_TRAINING_SCHEDULE`` (default ``@weekly``; ``none`` for triggered runs only),
``SRGNN_TRAINING_CLICKS`` and ``SRGNN_TRAINING_FORMAT`` (param defaults), the prepare and
training settings (``SRGNN_MIN_ITEM_SUPPORT``, ``SRGNN_EPOCHS``, ...), ``SRGNN_EXECUTION_MODE``,
``SRGNN_SPARK_CONN_ID``, ``SRGNN_TASK_RETRIES``.

Try it without a scheduler (``airflow db migrate`` first, with ``AIRFLOW__CORE__DAGS_FOLDER``
set to this folder): ``python dags/srgnn_training.py``.
"""

from __future__ import annotations

from airflow.sdk import dag, task

import _common
from srgnn.config import PrepareConfig, Source, TrainConfig

DAG_ID = "srgnn_training"
RUN_DIR = _common.run_dir_template(DAG_ID)


@task
@_common.fail_fast_on_user_errors
def prepare(out_dir: str, params: dict | None = None) -> dict:
    from srgnn.pipeline import prepare_step

    result = prepare_step(_common.build(Source, params), _common.build(PrepareConfig, params),
                          out_dir)
    return {"run_dir": result["run_dir"]}


@task
@_common.fail_fast_on_user_errors
def train(run_dir: str, params: dict | None = None) -> dict:
    from srgnn.pipeline import train_step

    config = _common.build(TrainConfig, {**params, "progress": False})
    return train_step(run_dir, config, resume=True)


@task
@_common.fail_fast_on_user_errors
def evaluate(run_dir: str, trained: dict) -> dict:
    from srgnn.pipeline import evaluate_step

    return evaluate_step(run_dir, trained)


@task
def gate(trained: dict, evaluated: dict) -> dict:
    from srgnn.pipeline import gate_step

    return gate_step(trained, evaluated)


@task
@_common.fail_fast_on_user_errors
def final_refit(trained: dict, decision: dict, params: dict | None = None) -> dict:
    from srgnn.pipeline import final_refit_step

    config = _common.build(TrainConfig, {**params, "progress": False})
    return final_refit_step(trained, decision, config)


@task(outlets=[_common.CHAMPION])
def publish_champion(decision: dict, outlet_events=None) -> dict:
    return _common.publish_champion(decision, outlet_events)


@dag(
    dag_id=DAG_ID,
    schedule=_common.schedule(_common.deployment().training_schedule),
    start_date=_common.START_DATE,
    catchup=False,
    max_active_runs=1,  # two trainings racing for the champion alias would compare stale numbers
    default_args=_common.default_args(),
    tags=["srgnn", "training"],
    doc_md=__doc__,
    user_defined_macros=_common.TEMPLATE_MACROS,
    user_defined_filters=_common.TEMPLATE_FILTERS,
    params={
        **_common.params(Source, clicks=_common.deployment().training_clicks
                         or str(_common.home() / "clicks"),
                         format=_common.deployment().training_format),
        **_common.params(PrepareConfig),
        **_common.params(TrainConfig),
    },
)
def srgnn_training():
    if _common.deployment().execution_mode == "cluster":
        from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

        prepared = SparkSubmitOperator(
            task_id="prepare",
            application=f"{_common.jobs_dir()}/prepare.py",
            **_common.spark_submit_options("srgnn-prepare-{{ run_id | path_safe }}"),
            application_args=[
                "--clicks", "{{ params.clicks }}",
                "--out", RUN_DIR,
                "--format", "{{ params.format }}",
                "--encoding", "{{ params.encoding }}",
                "--min-item-support", "{{ params.min_item_support }}",
                "--test-days", "{{ params.test_days }}",
                "--valid-days", "{{ params.valid_days }}",
                "--max-prefix-length", "{{ params.max_prefix_length }}",
            ],
        )
        run_dir = RUN_DIR
    else:
        prepared = prepare(out_dir=RUN_DIR)
        run_dir = prepared["run_dir"]

    trained = train(run_dir)
    prepared >> trained
    evaluated = evaluate(run_dir, trained)
    publish_champion(final_refit(trained, gate(trained, evaluated)))


training_dag = srgnn_training()

if __name__ == "__main__":
    training_dag.test()
