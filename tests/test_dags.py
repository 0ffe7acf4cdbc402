"""The Airflow DAG files: they import cleanly and light, and their structure is what we promise.

DAGs are loaded the way Airflow loads them (``DagBag``), under a throwaway ``AIRFLOW_HOME``;
no metadata database is needed. ``dags/`` goes on ``sys.path`` as the dag-processor does for
a bundle, so that the DAG files can import their shared ``_common`` module. Each DAG file
reads its configuration from the environment while it is parsed, so every ``bag(...)`` call
below parses the files again under the environment it is given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "dags"
HEAVY_MODULES = ("torch", "pyspark", "mlflow", "duckdb", "srgnn.pipeline", "srgnn.data",
                 "srgnn.model", "srgnn.training", "srgnn.evaluation", "srgnn.serving",
                 "srgnn.warehouse")
CONFIG_VARS = ("SRGNN_EXECUTION_MODE", "SRGNN_SPARK_CONN_ID", "SRGNN_JOBS_DIR", "SRGNN_SPARK_PY_FILES",
               "SRGNN_TRAINING_SCHEDULE", "SRGNN_SCORING_SCHEDULE", "SRGNN_TRAINING_CLICKS",
               "SRGNN_TRAINING_FORMAT", "SRGNN_SCORING_CLICKS", "SRGNN_MODEL_URI",
               "SRGNN_SCORING_ENGINE", "SRGNN_SCORING_FORMAT", "SRGNN_TOP_K", "SRGNN_MIN_ITEM_SUPPORT", "SRGNN_TEST_DAYS",
               "SRGNN_VALID_DAYS", "SRGNN_TASK_RETRIES", "SRGNN_EPOCHS", "SRGNN_PRECISION",
               "SRGNN_SCORING_WAIT_MINUTES", "SRGNN_SCORING_POKE_MINUTES")
TRAINING_TASKS = ("prepare", "train", "evaluate", "gate", "final_refit", "publish_champion")


def _airflow_environment(home: Path, srgnn_home: Path) -> dict[str, str]:
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "SRGNN_HOME": str(srgnn_home),
    }


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory):
    """A private AIRFLOW_HOME, set before Airflow is first imported in this process."""
    home = tmp_path_factory.mktemp("airflow-home")
    srgnn_home = tmp_path_factory.mktemp("srgnn-home")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in _airflow_environment(home, srgnn_home).items():
            patch.setenv(name, value)
        for name in CONFIG_VARS:
            patch.delenv(name, raising=False)
        patch.syspath_prepend(str(DAGS))
        yield SimpleNamespace(home=home, srgnn_home=srgnn_home)


@pytest.fixture
def bag(airflow_env, monkeypatch):
    """Parse the DAG folder under extra environment variables; fail on any import error."""
    from airflow.dag_processing.dagbag import DagBag

    def load(**environment):
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        dagbag = DagBag(dag_folder=str(DAGS))
        assert dagbag.import_errors == {}
        return dagbag

    return load


def _edges(dag) -> set[tuple[str, str]]:
    return {(upstream, task.task_id) for task in dag.tasks for upstream in task.upstream_task_ids}


def _render(dag, task_id: str, field: str, context: dict):
    task = dag.get_task(task_id)
    return task.render_template(getattr(task, field), context, jinja_env=dag.get_template_env())


# -- import -----------------------------------------------------------------------------------

def test_dag_folder_imports_without_errors(bag):
    dagbag = bag()
    assert set(dagbag.dag_ids) == {"srgnn_training", "srgnn_scoring"}


@pytest.mark.parametrize("syntax", ["glob", "regexp"])
def test_helper_modules_are_not_parsed_as_dag_files(bag, syntax):
    # _common.py would be parsed (it mentions both "airflow" and "dag") without .airflowignore
    assert "airflow" in (DAGS / "_common.py").read_text() and "dag" in (DAGS / "_common.py").read_text()
    dagbag = bag(AIRFLOW__CORE__DAG_IGNORE_FILE_SYNTAX=syntax)
    assert sorted(stat.file for stat in dagbag.dagbag_stats) == ["srgnn_scoring.py", "srgnn_training.py"]


@pytest.mark.parametrize("mode", ["local", "cluster"])
def test_importing_the_dag_folder_stays_light(tmp_path, mode):
    """A fresh interpreter parses both DAG files and has not imported torch, Spark or MLflow."""
    script = (
        "import json, sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(DAGS)!r})\n"
        f"heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]\n"
        "print(json.dumps({'dags': sorted(bag.dag_ids), 'errors': list(bag.import_errors), 'heavy': heavy}))\n"
    )
    environment = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
    environment.update(_airflow_environment(tmp_path / "airflow", tmp_path / "srgnn"))
    environment.update(PYTHONPATH=str(DAGS), SRGNN_EXECUTION_MODE=mode)
    result = subprocess.run([sys.executable, "-c", script], env=environment, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"dags": ["srgnn_scoring", "srgnn_training"], "errors": [], "heavy": []}


def test_unknown_execution_mode_is_an_import_error(airflow_env, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("SRGNN_EXECUTION_MODE", "yarn")
    dagbag = DagBag(dag_folder=str(DAGS))
    assert len(dagbag.import_errors) == 2
    assert all("SRGNN_EXECUTION_MODE" in error for error in dagbag.import_errors.values())


# -- training DAG -----------------------------------------------------------------------------

def test_training_dag_structure(bag):
    dag = bag().dags["srgnn_training"]
    assert {task.task_id for task in dag.tasks} == set(TRAINING_TASKS)
    assert _edges(dag) == {("prepare", "train"), ("train", "evaluate"), ("prepare", "evaluate"),
                           ("train", "gate"), ("evaluate", "gate"), ("gate", "final_refit"),
                           ("train", "final_refit"), ("final_refit", "publish_champion")}
    assert dag.schedule == "@weekly"
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.start_date.year == 2025 and dag.start_date.tzinfo is not None
    assert set(dag.tags) == {"srgnn", "training"}
    assert all(task.retries == 2 for task in dag.tasks)
    assert {type(task).__name__ for task in dag.tasks} == {"_PythonDecoratedOperator"}


def test_training_dag_publishes_the_champion_asset(bag):
    dag = bag().dags["srgnn_training"]
    outlets = {task.task_id: [asset.uri for asset in task.outlets] for task in dag.tasks}
    assert outlets == {"prepare": [], "train": [], "evaluate": [], "gate": [], "final_refit": [],
                       "publish_champion": ["srgnn://models/srgnn/champion"]}


def test_training_params_and_their_environment_defaults(bag, airflow_env):
    from srgnn import config

    params = bag().dags["srgnn_training"].params.dump()
    # every user-facing prepare and training setting of the one settings table (refit included)
    table = [opt.name for cls in (config.PrepareConfig, config.TrainConfig)
             for opt in config.options(cls) if opt.cli]
    assert {"refit", "final_refit", "min_improvement", "lr_floor"} <= set(table)
    assert sorted(params) == sorted(["clicks", "format", "encoding", *table])
    assert {k: params[k] for k in ("clicks", "format", "min_item_support", "test_days",
                                   "valid_days", "epochs", "refit", "short_fallback", "precision",
                                   "hidden_size", "lr", "max_examples_per_epoch", "processes",
                                   "final_refit", "min_improvement", "lr_floor")} == {
        "clicks": str(airflow_env.srgnn_home.resolve() / "clicks"), "format": "auto",
        "min_item_support": 5, "test_days": 7, "valid_days": 7, "epochs": 30, "refit": True,
        "final_refit": True, "min_improvement": 0.0005, "lr_floor": 1e-5,
        "short_fallback": True, "precision": "auto", "hidden_size": 100, "lr": 0.001,
        "max_examples_per_epoch": None, "processes": 1,
    }
    params = bag(SRGNN_TRAINING_CLICKS="/data/clicks/*.csv.gz", SRGNN_TRAINING_FORMAT="yoochoose",
                 SRGNN_MIN_ITEM_SUPPORT="3", SRGNN_TEST_DAYS="1", SRGNN_VALID_DAYS="0",
                 SRGNN_TRAINING_SCHEDULE="0 3 * * 1", SRGNN_TASK_RETRIES="4", SRGNN_EPOCHS="4",
                 SRGNN_PRECISION="float32", SRGNN_TRAIN_PROCESSES="2", SRGNN_REFIT="false",
                 ).dags["srgnn_training"].params.dump()
    assert {k: params[k] for k in ("clicks", "format", "min_item_support", "test_days",
                                   "valid_days", "epochs", "precision", "processes", "refit")} == {
        "clicks": "/data/clicks/*.csv.gz", "format": "yoochoose",
        "min_item_support": 3, "test_days": 1, "valid_days": 0, "epochs": 4, "precision": "float32",
        "processes": 2, "refit": False,
    }


def test_training_params_are_validated(bag):
    from airflow.sdk.definitions.param import ParamValidationError

    params = bag().dags["srgnn_training"].params
    params["epochs"] = 3
    params["format"] = "diginetica"
    params["refit"] = True
    for name, bad in [("format", "xml"), ("min_item_support", 0), ("epochs", 0), ("test_days", -1),
                      ("refit", "yes"), ("short_fallback", "no"), ("precision", "half"),
                      ("processes", 0), ("lr_floor", -1e-5), ("min_improvement", -0.01),
                      ("final_refit", "no")]:
        with pytest.raises(ParamValidationError):
            params[name] = bad


def test_training_form_refuses_out_of_range_values_and_keeps_valid_ones(bag):
    from airflow.sdk.definitions.param import ParamValidationError

    params = bag().dags["srgnn_training"].params
    for name, bad, good in [("dropout", 1.0, 0.99), ("dropout", 1, 0), ("scale", 0.0, 0.01),
                            ("scale", -2.0, 16.0), ("lr", 0.0, 1e-4), ("lr_decay_rate", 0.0, 1.0),
                            ("lr_decay_rate", 1.01, 0.5), ("propensity_weighting", 1.5, 1.0),
                            ("propensity_clip", 0.5, 1.0), ("multitask_weight", -0.1, 0.0)]:
        with pytest.raises(ParamValidationError):
            params[name] = bad
        params[name] = good
    resolved = params.validate()  # the whole form, as a triggered run sees it
    assert (resolved["dropout"], resolved["scale"], resolved["lr"], resolved["lr_decay_rate"],
            resolved["propensity_weighting"], resolved["propensity_clip"]) == (
        0, 16.0, 1e-4, 0.5, 1.0, 1.0)


def test_training_form_and_training_task_agree_at_every_bound(bag):
    """At each bound of each training param, and one step either side, the form accepts a value
    exactly when the training task (``_common.build``) does."""
    import _common
    from airflow.sdk.definitions.param import ParamValidationError
    from airflow.sdk.exceptions import AirflowFailException

    from srgnn import config

    params = bag().dags["srgnn_training"].params
    tried = 0
    for opt in config.options(config.TrainConfig):
        if not opt.cli or opt.type not in (int, float):
            continue
        step = 1 if opt.type is int else 1e-3
        for bound in config.bounds(opt).values():
            for value in (opt.type(bound - step), opt.type(bound), opt.type(bound + step)):
                try:
                    params[opt.name] = value
                    form = True
                except ParamValidationError:
                    form = False
                try:
                    _common.build(config.TrainConfig, {opt.name: value})
                    task = True
                except AirflowFailException:
                    task = False
                assert form == task, (opt.name, value, form, task)
                tried += 1
    assert tried >= 60  # every bounded numeric training setting, not a handful


def test_training_schedule_and_retries_come_from_the_environment(bag):
    dag = bag(SRGNN_TRAINING_SCHEDULE="0 3 * * 1", SRGNN_TASK_RETRIES="4").dags["srgnn_training"]
    assert dag.schedule == "0 3 * * 1"
    assert all(task.retries == 4 for task in dag.tasks)
    assert bag(SRGNN_TRAINING_SCHEDULE="none").dags["srgnn_training"].schedule is None


def test_training_run_folder_is_decided_from_the_run_id(bag, airflow_env):
    dag = bag().dags["srgnn_training"]
    context = {"run_id": "scheduled__2026-11-29T00:00:00+00:00", "dag": dag, "params": dag.params.dump()}
    rendered = _render(dag, "prepare", "op_kwargs", context)
    assert rendered == {"out_dir": str(airflow_env.srgnn_home.resolve() / "runs" / "srgnn_training"
                                       / "scheduled__2026-11-29T00_00_00_00_00")}


def test_cluster_mode_submits_the_prepare_job(bag, airflow_env):
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    dag = bag(SRGNN_EXECUTION_MODE="cluster", SRGNN_SPARK_CONN_ID="spark_prod",
              SRGNN_JOBS_DIR="/opt/srgnn/jobs").dags["srgnn_training"]
    prepare = dag.get_task("prepare")
    assert isinstance(prepare, SparkSubmitOperator)
    assert prepare._conn_id == "spark_prod"
    assert prepare.application == "/opt/srgnn/jobs/prepare.py"
    assert {type(task).__name__ for task in dag.tasks if task.task_id != "prepare"} == {"_PythonDecoratedOperator"}
    assert _edges(dag) == {("prepare", "train"), ("train", "evaluate"), ("train", "gate"),
                           ("evaluate", "gate"), ("gate", "final_refit"), ("train", "final_refit"),
                           ("final_refit", "publish_champion")}

    context = {"run_id": "manual__2026-11-29T10:11:12.5+00:00", "dag": dag, "params": dag.params.dump()}
    run_dir = str(airflow_env.srgnn_home.resolve() / "runs" / "srgnn_training" / "manual__2026-11-29T10_11_12.5_00_00")
    assert _render(dag, "prepare", "application_args", context) == [
        "--clicks", str(airflow_env.srgnn_home.resolve() / "clicks"), "--out", run_dir, "--format", "auto",
        "--encoding", "utf-8", "--min-item-support", "5", "--test-days", "7", "--valid-days", "7",
        "--max-prefix-length", "100",
    ]
    # The training task reads the folder the Spark job wrote, from the same template.
    assert list(_render(dag, "train", "op_args", context)) == [run_dir]
    evaluate = dag.get_task("evaluate")  # its second argument is train's XCom, not a template
    assert evaluate.render_template(evaluate.op_args[0], context, jinja_env=dag.get_template_env()) == run_dir


def test_default_spark_connection_and_jobs_folder(bag):
    prepare = bag(SRGNN_EXECUTION_MODE="cluster").dags["srgnn_training"].get_task("prepare")
    assert prepare._conn_id == "spark_default"
    assert prepare.application == str(ROOT / "jobs" / "prepare.py")
    assert (ROOT / "jobs" / "prepare.py").is_file()


# -- scoring DAG ------------------------------------------------------------------------------

def test_scoring_dag_structure(bag):
    from airflow.sdk import CronDataIntervalTimetable

    dag = bag().dags["srgnn_scoring"]
    assert [task.task_id for task in dag.tasks] == ["wait_for_clicks", "score"]
    assert _edges(dag) == {("wait_for_clicks", "score")}
    score = dag.get_task("score")
    assert type(score).__name__ == "_PythonDecoratedOperator"
    assert score.retries == 2
    assert [asset.uri for asset in score.inlets] == ["srgnn://models/srgnn/champion"]
    wait = dag.get_task("wait_for_clicks")
    assert wait.mode == "reschedule" and wait.retries == 0  # its timeout says how long to wait
    assert wait.timeout == 360 * 60 and wait.poke_interval == 5 * 60
    # A data-interval timetable: the run after midnight has the finished day as its `ds`.
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "0 0 * * *"
    assert dag.catchup is False
    assert set(dag.tags) == {"srgnn", "scoring"}
    assert dag.params.dump() == {
        "clicks": str(Path(os.environ["SRGNN_HOME"]).resolve() / "clicks") + "/ds={{ ds }}/",
        "format": "auto", "encoding": "utf-8", "model_uri": "models:/srgnn@champion", "top_k": 20,
        "engine": "local",
    }
    waits = bag(SRGNN_SCORING_WAIT_MINUTES="30").dags["srgnn_scoring"].get_task("wait_for_clicks")
    assert waits.timeout == 30 * 60


def test_scoring_schedule_and_params_from_the_environment(bag):
    dag = bag(SRGNN_SCORING_SCHEDULE="30 2 * * *", SRGNN_SCORING_CLICKS="s3a://bucket/clicks/",
              SRGNN_MODEL_URI="models:/srgnn/7", SRGNN_TOP_K="50",
              SRGNN_SCORING_FORMAT="json").dags["srgnn_scoring"]
    assert dag.timetable.expression == "30 2 * * *"
    assert dag.params.dump()["clicks"] == "s3a://bucket/clicks/ds={{ ds }}/"
    assert dag.params.dump()["model_uri"] == "models:/srgnn/7"
    assert dag.params.dump()["top_k"] == 50
    assert dag.params.dump()["format"] == "json"
    assert bag(SRGNN_SCORING_SCHEDULE="none").dags["srgnn_scoring"].schedule is None


def test_a_bad_setting_in_the_environment_is_a_parse_error_naming_it(airflow_env, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("SRGNN_TOP_K", "twenty")
    errors = DagBag(dag_folder=str(DAGS)).import_errors
    assert errors and all("SRGNN_TOP_K must be an integer" in error for error in errors.values())


def test_the_scoring_day_and_its_folder_come_from_the_logical_date(airflow_env):
    import srgnn_scoring
    from airflow.sdk.exceptions import AirflowFailException

    context = {"logical_date": "2026-11-27T00:00:00+00:00", "ds": "2026-11-27",
               "params": {"clicks": "/data/clicks/ds={{ ds }}/"}}
    assert srgnn_scoring._day(context) == ("2026-11-27", "/data/clicks/ds=2026-11-27/")
    context["params"]["clicks"] = "/data/{{ ds_nodash }}/*.json"
    assert srgnn_scoring._day(context)[1] == "/data/20261127/*.json"
    # A manual run without a logical date: a user error, failed at once (no retries).
    with pytest.raises(AirflowFailException, match="needs a logical date"):
        srgnn_scoring._day({"logical_date": None, "params": context["params"]})


def test_the_sensor_waits_for_the_day_and_fails_at_once_on_a_wrong_folder(airflow_env, tmp_path):
    import srgnn_scoring
    from airflow.sdk.exceptions import AirflowFailException

    sensor = srgnn_scoring.WaitForClicks(task_id="probe")
    root = tmp_path / "clicks"
    root.mkdir()
    context = {"logical_date": "2026-11-27", "ds": "2026-11-27",
               "params": {"clicks": str(root) + "/ds={{ ds }}/"}}
    assert sensor.poke(context) is False  # not arrived yet: keep waiting
    (root / "ds=2026-11-27").mkdir()
    assert sensor.poke(context) is True
    context["params"]["clicks"] = str(tmp_path / "typo" / "ds={{ ds }}")
    with pytest.raises(AirflowFailException, match="does not exist"):
        sensor.poke(context)
    context["params"]["clicks"] = "s3a://bucket/clicks/ds={{ ds }}/"
    assert sensor.poke(context) is True  # remote: the scoring job reports a missing day itself


def test_user_errors_fail_the_task_without_retries(airflow_env):
    import _common
    from airflow.sdk.exceptions import AirflowFailException

    from srgnn.config import SettingError, TrainConfig
    from srgnn.data.readers import InputError

    @_common.fail_fast_on_user_errors
    def task_body(error):
        raise error

    with pytest.raises(AirflowFailException, match="error: /data/x: no such file or folder"):
        task_body(InputError("/data/x: no such file or folder"))
    with pytest.raises(AirflowFailException, match="epochs"):
        _common.build(TrainConfig, {"epochs": 0})
    with pytest.raises(AirflowFailException, match="bad"):
        task_body(SettingError("bad"))
    with pytest.raises(RuntimeError):  # an environment fault: retried as usual
        task_body(RuntimeError("connection reset"))


def test_cluster_mode_submits_the_scoring_job(bag):
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    dag = bag(SRGNN_EXECUTION_MODE="cluster", SRGNN_SCORING_CLICKS="hdfs:///raw/clicks",
              SRGNN_SPARK_PY_FILES="/opt/srgnn/dist/srgnn.zip").dags["srgnn_scoring"]
    score = dag.get_task("score")
    assert isinstance(score, SparkSubmitOperator)
    assert score.application == str(ROOT / "jobs" / "score.py")
    assert score.py_files == "/opt/srgnn/dist/srgnn.zip"
    assert [asset.uri for asset in score.inlets] == ["srgnn://models/srgnn/champion"]
    args = _render(dag, "score", "application_args", {"ds": "2026-11-27", "params": dag.params.dump()})
    assert args == ["--clicks", "hdfs:///raw/clicks/ds=2026-11-27/", "--format", "auto",
                    "--encoding", "utf-8", "--ds", "2026-11-27", "--model", "models:/srgnn@champion",
                    "--top-k", "20", "--engine", "spark"]


def test_cluster_jobs_ship_the_environment_archive_and_the_memory_settings(bag):
    dag = bag(SRGNN_EXECUTION_MODE="cluster", SRGNN_SPARK_ARCHIVE="hdfs:///envs/srgnn.tar.gz",
              SRGNN_SPARK_DRIVER_MEMORY="3g", SRGNN_SPARK_EXECUTOR_MEMORY="5g",
              SRGNN_SPARK_SUBMIT="/opt/spark/bin/spark-submit")
    for dag_id, task_id in (("srgnn_training", "prepare"), ("srgnn_scoring", "score")):
        task = dag.dags[dag_id].get_task(task_id)
        assert task._archives == "hdfs:///envs/srgnn.tar.gz#environment"
        assert task.conf["spark.pyspark.python"] == "./environment/bin/python"
        assert task.conf["spark.pyspark.driver.python"] == sys.executable
        assert (task._driver_memory, task._executor_memory) == ("3g", "5g")
        assert task._spark_binary == "/opt/spark/bin/spark-submit"


def test_cluster_jobs_without_an_archive_name_the_executors_python(bag):
    task = bag(SRGNN_EXECUTION_MODE="cluster", SRGNN_SPARK_PYTHON="/opt/py/bin/python").dags[
        "srgnn_scoring"].get_task("score")
    assert task._archives is None
    assert task.conf["spark.pyspark.python"] == "/opt/py/bin/python"
    assert task._executor_memory is None  # Spark's default
    assert task._driver_memory == "2g"


# -- shared helpers ---------------------------------------------------------------------------

def test_champion_gate_emits_only_promotions(airflow_env):
    import _common
    from airflow.sdk.exceptions import AirflowSkipException

    trained = {"run_id": "abc", "version": 7, "candidate": {"HR@20": 0.31, "MRR@20": 0.1},
               "promoted": True, "model_uri": "models:/srgnn/7", "reason": "higher HR@20"}
    events = {_common.CHAMPION: SimpleNamespace(extra={})}
    extra = _common.publish_champion(trained, events)
    assert events[_common.CHAMPION].extra == extra == {
        "model_uri": "models:/srgnn/7", "version": "7", "run_id": "abc",
        "metrics": {"HR@20": 0.31, "MRR@20": 0.1}}

    events = {_common.CHAMPION: SimpleNamespace(extra={})}
    with pytest.raises(AirflowSkipException, match="did not beat the champion"):
        _common.publish_champion({**trained, "promoted": False}, events)
    assert events[_common.CHAMPION].extra == {}


@pytest.mark.parametrize("run_id, folder", [
    ("scheduled__2026-11-29T00:00:00+00:00", "scheduled__2026-11-29T00_00_00_00_00"),
    ("manual__2026-11-29T10:11:12.123456+00:00", "manual__2026-11-29T10_11_12.123456_00_00"),
    ("my run/../x", "my_run_.._x"),
])
def test_path_safe(airflow_env, run_id, folder):
    import _common

    assert _common.path_safe(run_id) == folder
    assert "/" not in _common.path_safe(run_id)
