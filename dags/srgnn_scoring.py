"""Scoring DAG: every night, top-K next-item recommendations for the day's sessions.

    wait_for_clicks -> score

One run per logical date ``ds``: wait until that day's raw clicks are there (the ``clicks``
param, a path template rendered with ``ds``, e.g. ``/data/clicks/ds={{ ds }}/``), score the
sessions with the model named by ``model_uri`` (the champion by default), replace that day in
the warehouse table ``recommendations`` atomically, run the SQL checks and log the run.

The schedule is a data-interval timetable: the run that starts just after midnight UTC has the
day that just ended as its logical date, so ``ds`` names a complete day of clicks.

Waiting and failing, as a documented choice: a day whose folder is not there yet is waited for
by the sensor ``wait_for_clicks`` (in reschedule mode: it frees its worker slot between looks,
every ``SRGNN_SCORING_POKE_MINUTES``) for at most ``SRGNN_SCORING_WAIT_MINUTES`` (default 6 h),
then the run fails without retries and the next day's run can start (``max_active_runs=1``
holds later days back only while a day is being waited for or scored). A user's mistake fails
at once, without retries: a clicks folder whose parent does not exist, a bad param, a manual run
without a logical date (trigger it with one: ``airflow dags trigger srgnn_scoring
--logical-date 2026-11-28``). An upstream job that knows when a day is complete can instead
make this DAG wait for an Asset event: set ``SRGNN_SCORING_SCHEDULE=none`` and trigger runs
from that event.

A rerun of a day replaces its rows: Airflow refuses a second run with the same logical date, so
rerun a day with ``airflow tasks clear srgnn_scoring -s 2026-11-28 -e 2026-11-28`` (or Clear in
the UI); a backfill (``airflow backfill create``) writes one ``ds`` per day, never duplicates.

In ``local`` mode the task calls the package in-process; in ``cluster`` mode
``SparkSubmitOperator`` submits ``jobs/score.py`` to the master of the Airflow connection
``$SRGNN_SPARK_CONN_ID`` (the driver reads the warehouse URL and MLflow URI from the same
environment as the task).

Configuration (environment, read when the file is parsed; see ``srgnn.config``):
``SRGNN_SCORING_SCHEDULE`` (cron or preset, default ``@daily``; ``none`` for triggered runs
only), ``SRGNN_SCORING_CLICKS`` (folder holding one ``ds=YYYY-MM-DD/`` folder per day),
``SRGNN_SCORING_FORMAT``, ``SRGNN_MODEL_URI``, ``SRGNN_TOP_K``, ``SRGNN_SCORING_ENGINE``,
``SRGNN_SCORING_WAIT_MINUTES``, ``SRGNN_EXECUTION_MODE``, ``SRGNN_SPARK_CONN_ID``,
``SRGNN_TASK_RETRIES``.

Try it without a scheduler (``airflow db migrate`` first, with ``AIRFLOW__CORE__DAGS_FOLDER``
set to this folder): ``airflow dags test srgnn_scoring 2026-11-28`` scores that day;
``python dags/srgnn_scoring.py`` scores the current UTC day.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import jinja2
from airflow.sdk import BaseSensorOperator, CronDataIntervalTimetable, dag, task
from airflow.sdk.exceptions import AirflowFailException

import _common
from srgnn.config import ScoreConfig, Source

DAG_ID = "srgnn_scoring"
# Rendered per run: the clicks param is itself a template, see _common.day_path.
CLICKS_FOR_DAY = "{{ day_path(params.clicks, ds) }}"


def _schedule():
    cron = _common.schedule(_common.deployment().scoring_schedule)
    return None if cron is None else CronDataIntervalTimetable(cron, timezone="UTC")


def _day(context) -> tuple[str, str]:
    """``(ds, clicks path of that day)`` of a run; a run without a logical date is a user error."""
    if context.get("logical_date") is None:
        raise AirflowFailException(
            "error: a scoring run needs a logical date (the day to score); trigger it with one, "
            "e.g. airflow dags trigger srgnn_scoring --logical-date 2026-11-28")
    ds = context["ds"]
    return ds, _common.day_path(context["params"]["clicks"], ds)


class WaitForClicks(BaseSensorOperator):
    """Waits until the run's day folder (or file) of clicks exists.

    A remote URI (``s3a://``, ``hdfs://``) is not looked at: the scoring job reads it and
    reports a missing day itself. A local path whose parent folder is missing is a
    configuration mistake, not late data: it fails at once.
    """

    def poke(self, context) -> bool:
        _, path = _day(context)
        if "://" in path and not path.startswith("file://"):
            return True
        local = Path(path.removeprefix("file://"))
        if not local.parent.exists():
            raise AirflowFailException(
                f"error: {local.parent} does not exist; check the clicks param or "
                "SRGNN_SCORING_CLICKS")
        self.log.info("looking for %s", local)
        return local.exists()


@task(inlets=[_common.CHAMPION])
@_common.fail_fast_on_user_errors
def score(params: dict | None = None, **context) -> dict:
    from srgnn.pipeline import score_step

    ds, clicks = _day({**context, "params": params})
    return score_step(_common.build(Source, {**params, "clicks": clicks}), ds,
                      _common.build(ScoreConfig, params))


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
        **_common.params(Source, clicks=(_common.deployment().scoring_clicks
                                         or str(_common.home() / "clicks")).rstrip("/")
                         + "/ds={{ ds }}/",
                         format=_common.deployment().scoring_format),
        **_common.params(ScoreConfig),
    },
)
def srgnn_scoring():
    deployment = _common.deployment()
    waiting = WaitForClicks(
        task_id="wait_for_clicks",
        mode="reschedule",
        poke_interval=timedelta(minutes=deployment.scoring_poke_minutes),
        timeout=timedelta(minutes=deployment.scoring_wait_minutes),
        retries=0,  # the timeout already says how long to wait
    )
    if deployment.execution_mode == "cluster":
        from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

        scored = SparkSubmitOperator(
            task_id="score",
            application=f"{_common.jobs_dir()}/score.py",
            **_common.spark_submit_options("srgnn-score-{{ ds }}"),
            application_args=[
                "--clicks", CLICKS_FOR_DAY,
                "--format", "{{ params.format }}",
                "--encoding", "{{ params.encoding }}",
                "--ds", "{{ ds }}",
                "--model", "{{ params.model_uri }}",
                "--top-k", "{{ params.top_k }}",
                "--engine", "spark",
            ],
            inlets=[_common.CHAMPION],
        )
    else:
        scored = score()
    waiting >> scored


scoring_dag = srgnn_scoring()

if __name__ == "__main__":
    scoring_dag.test()
