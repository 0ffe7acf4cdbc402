"""Scoring DAG: every night, top-K next-item recommendations for the day's sessions.

    score

One task per logical date ``ds``: read that day's raw clicks (the ``clicks`` param, a path
template rendered with ``ds``, e.g. ``/data/clicks/ds={{ ds }}/``), score the sessions with the
model named by ``model_uri`` (the champion by default), replace that day in the warehouse table
``recommendations`` atomically, run the SQL checks and log the run. A rerun or a backfill
rewrites the same days: one ``ds`` per day, never duplicates.

The schedule is a data-interval timetable: the run that starts just after midnight UTC has the
day that just ended as its logical date, so ``ds`` names a complete day of clicks.

In ``local`` mode the task calls the package in-process; in ``cluster`` mode
``SparkSubmitOperator`` submits ``jobs/score.py`` to the master of the Airflow connection
``$SRGNN_SPARK_CONN_ID`` (the driver reads the warehouse URL and MLflow URI from the same
environment as the task).

Configuration (environment, read when the file is parsed): ``SRGNN_SCORING_SCHEDULE`` (cron
or preset, default ``@daily``; ``none`` for triggered runs only), ``SRGNN_SCORING_CLICKS``
(folder holding one ``ds=YYYY-MM-DD/`` folder per day), ``SRGNN_SCORING_FORMAT``,
``SRGNN_MODEL_URI``, ``SRGNN_TOP_K``, ``SRGNN_SCORING_ENGINE``, ``SRGNN_EXECUTION_MODE``,
``SRGNN_SPARK_CONN_ID``, ``SRGNN_TASK_RETRIES``.

Try it without a scheduler (``airflow db migrate`` first, with ``AIRFLOW__CORE__DAGS_FOLDER``
set to this folder): ``airflow dags test srgnn_scoring 2026-11-28`` scores that day;
``python dags/srgnn_scoring.py`` scores the current UTC day.
"""

from __future__ import annotations

import jinja2
from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

import _common
from srgnn.io import FORMATS

DAG_ID = "srgnn_scoring"
# Rendered per run: the clicks param is itself a template, see _common.day_path.
CLICKS_FOR_DAY = "{{ day_path(params.clicks, ds) }}"


def _schedule():
    cron = _common.schedule("SRGNN_SCORING_SCHEDULE", "@daily")
    return None if cron is None else CronDataIntervalTimetable(cron, timezone="UTC")


@task(inlets=[_common.CHAMPION])
def score(clicks: str, ds: str, params: dict | None = None) -> dict:
    from srgnn.pipeline import score_step

    return score_step(clicks, ds, model_uri=params["model_uri"], top_k=params["top_k"], engine=params["engine"],
                      fmt=params["format"])


@dag(
    dag_id=DAG_ID,
    schedule=_schedule(),
    start_date=_common.START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=_common.default_args(),
    tags=["srgnn", "scoring"],
    doc_md=__doc__,
    user_defined_macros=_common.TEMPLATE_MACROS,
    user_defined_filters=_common.TEMPLATE_FILTERS,
    # A run without a logical date has no `ds`: fail loudly instead of reading "ds=/".
    template_undefined=jinja2.StrictUndefined,
    params={
        "clicks": Param(
            _common.env("SRGNN_SCORING_CLICKS", str(_common.home() / "clicks")).rstrip("/") + "/ds={{ ds }}/",
            type="string", minLength=1,
            description="Path template of one day's raw clicks; {{ ds }} and {{ ds_nodash }} are replaced.",
        ),
        "format": Param(
            _common.env("SRGNN_SCORING_FORMAT", "auto"), enum=list(FORMATS),
            description="Input format of the day's clicks; 'auto' decides from the file name and first line.",
        ),
        "model_uri": Param(
            _common.env("SRGNN_MODEL_URI", _common.CHAMPION_URI), type="string", minLength=1,
            description="MLflow model to score with (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/...).",
        ),
        "top_k": Param(
            _common.env_int("SRGNN_TOP_K", 20), type="integer", minimum=1,
            description="Recommendations per session.",
        ),
        "engine": Param(
            _common.env("SRGNN_SCORING_ENGINE", "local"), enum=["local", "spark"],
            description="local mode only: score in the task process (local) or with Spark (spark). "
                        "Cluster mode always scores with Spark.",
        ),
    },
)
def srgnn_scoring():
    if _common.execution_mode() == "cluster":
        from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

        SparkSubmitOperator(
            task_id="score",
            conn_id=_common.spark_conn_id(),
            application=f"{_common.jobs_dir()}/score.py",
            py_files=_common.spark_py_files(),
            name="srgnn-score-{{ ds }}",
            application_args=[
                "--clicks", CLICKS_FOR_DAY,
                "--format", "{{ params.format }}",
                "--ds", "{{ ds }}",
                "--model", "{{ params.model_uri }}",
                "--top-k", "{{ params.top_k }}",
            ],
            inlets=[_common.CHAMPION],
        )
    else:
        score(clicks=CLICKS_FOR_DAY, ds="{{ ds }}")


scoring_dag = srgnn_scoring()

if __name__ == "__main__":
    scoring_dag.test()
