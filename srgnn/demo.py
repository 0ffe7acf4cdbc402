"""``srgnn demo``: the whole product on generated data, on the embedded defaults.

1. generates eight days of realistic clicks (with malformed lines) under
   ``<home>/demo/``: seven days for training, the eighth as the night to score;
2. runs the Airflow training DAG (prepare with Spark local -> train SR-GNN -> register in
   MLflow on SQLite -> evaluate and gate -> champion asset) with ``dag.test()``;
3. runs the scoring DAG for the eighth day (recommendations into the DuckDB warehouse,
   SQL checks, run log) with ``dag.test()``;
4. prints a summary and sample rows from a query in ``sql/queries``.

Airflow keeps its metadata in SQLite under ``<home>/airflow``. Running the demo again
regenerates the data and runs both DAGs again (the day's rows are replaced, not duplicated).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

from srgnn.config import Settings

REPO = Path(__file__).resolve().parents[1]
DAGS_DIR = REPO / "dags"
DEMO_DAYS = 8
DEMO_EPOCHS = 4


def _airflow_env(home: Path) -> dict:
    airflow_home = home / "airflow"
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "false",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        # dags/.airflowignore is written to work with both syntaxes; regexp needs no pathspec
        "AIRFLOW__CORE__DAG_IGNORE_FILE_SYNTAX": "regexp",
        "SRGNN_HOME": str(home),
        "SRGNN_TASK_RETRIES": "0",
        "SRGNN_TRAINING_SCHEDULE": "none",
        "SRGNN_SCORING_SCHEDULE": "none",
    }


def _load_dag(path: Path, attribute: str):
    import importlib.util

    if str(DAGS_DIR) not in sys.path:
        sys.path.insert(0, str(DAGS_DIR))
    spec = importlib.util.spec_from_file_location(f"srgnn_demo_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, attribute)


def _check_run(dag_run, name: str) -> None:
    state = str(getattr(dag_run, "state", "")).lower()
    if not state.endswith("success"):
        raise click.ClickException(f"the {name} DAG run ended in state {state!r}; see the task logs above")


def run_demo(settings: Settings, epochs: int = DEMO_EPOCHS) -> dict:
    from srgnn.data.synth import SynthConfig, write_clickstream

    from srgnn.logs import configure

    started = time.time()
    home = settings.home.resolve()
    os.environ.update(_airflow_env(home))
    configure(own_handlers=True)  # the steps' progress lines, whatever level Airflow logs at
    demo = home / "demo"
    raw, scoring = demo / "train_clicks", demo / "scoring_clicks"
    for folder in (raw, scoring):
        shutil.rmtree(folder, ignore_errors=True)

    # 1. data: eight days ending yesterday (UTC); the last one is tonight's scoring input.
    last_day = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
    synth = SynthConfig(sessions=24_000, items=2_000, days=DEMO_DAYS, end_date=last_day.isoformat())
    generated = write_clickstream(str(raw), synth, by_day=True)
    scoring.mkdir(parents=True, exist_ok=True)
    score_day = last_day.isoformat()
    shutil.move(str(raw / f"ds={score_day}"), str(scoring / f"ds={score_day}"))
    click.echo(f"[demo] generated {generated.clicks:,} clicks + {generated.bad_lines:,} malformed lines "
               f"over {DEMO_DAYS} days under {demo}")

    # 2. Airflow metadata in SQLite under the home folder.
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())

    # 3. training DAG.
    click.echo("[demo] training DAG: prepare (Spark) -> train (SR-GNN) -> evaluate -> gate -> "
               "publish champion")
    training = _load_dag(DAGS_DIR / "srgnn_training.py", "training_dag")
    run = training.test(run_conf={"clicks": str(raw), "format": "csv", "test_days": 1, "valid_days": 1,
                                  "min_item_support": 5, "epochs": epochs})
    _check_run(run, "training")

    # 4. scoring DAG for the held-out day.
    os.environ["SRGNN_SCORING_CLICKS"] = str(scoring)
    click.echo(f"[demo] scoring DAG for ds={score_day}")
    scoring_dag = _load_dag(DAGS_DIR / "srgnn_scoring.py", "scoring_dag")
    logical = dt.datetime.combine(last_day, dt.time(), tzinfo=dt.timezone.utc)
    run = scoring_dag.test(logical_date=logical)
    _check_run(run, "scoring")

    summary = _summary(settings, home, score_day)
    summary["seconds"] = round(time.time() - started, 1)
    click.echo(f"\n[demo] done in {summary['seconds']:.0f} s")
    return summary


def _latest_run_dir(home: Path) -> Path:
    runs = sorted((home / "runs" / "srgnn_training").glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise click.ClickException(f"no prepared run under {home / 'runs' / 'srgnn_training'}")
    return runs[-1].parent


def _summary(settings: Settings, home: Path, ds: str) -> dict:
    from srgnn.warehouse import Warehouse

    run_dir = _latest_run_dir(home)
    prep = json.loads((run_dir / "summary.json").read_text())
    training = json.loads((run_dir / "training.json").read_text()) if (run_dir / "training.json").exists() else {}
    gate = json.loads((run_dir / "gate.json").read_text()) if (run_dir / "gate.json").exists() else {}
    evaluation = (run_dir / "evaluation.txt").read_text() if (run_dir / "evaluation.txt").exists() else ""
    click.echo("\n== srgnn demo summary ==")
    click.echo(f"prepared run       {run_dir}")
    click.echo(f"clicks read        {prep['clicks_read']:,}   quarantined {prep['clicks_quarantined']:,} "
               f"{prep['quarantine_reasons']}")
    click.echo(f"clicks removed     {prep['clicks_removed']}")
    click.echo("examples           " + ", ".join(f"{k} {v['examples']:,}" for k, v in prep["splits"].items()))
    if training:
        click.echo(f"registered model   srgnn version {training.get('version')} "
                   f"(promoted to champion: {gate.get('promoted')}; {gate.get('reason')})  {training.get('model_uri')}")
    if evaluation:
        click.echo("\nSR-GNN vs the champion and the baselines on the held-out day (test split):")
        click.echo(evaluation.rstrip())
    with Warehouse.connect(settings.warehouse, read_only=True) as warehouse:
        runs = warehouse.run_query("scoring_runs", start_ds=ds, end_ds=ds).to_dicts()
        top = warehouse.run_query("top_items", ds=ds, limit=5)
        sample = warehouse.run_query("day_recommendations", ds=ds)
    last = runs[-1] if runs else {}
    click.echo(f"\nscoring ds={ds}: sessions {last.get('sessions_in')}, fallbacks {last.get('fallbacks')}, "
               f"quarantined {last.get('quarantined')}, rows written {last.get('rows_written')}, "
               f"model {last.get('model_version')}")
    click.echo(f"warehouse          {settings.warehouse}  (table recommendations)")
    click.echo("\nsql/queries/top_items.sql (most recommended items of the day):")
    click.echo(_format_rows(top.columns, top.rows))
    click.echo("\nsql/queries/day_recommendations.sql (first rows):")
    click.echo(_format_rows(sample.columns, sample.rows[:6]))
    return {"run_dir": str(run_dir), "prepare": prep, "training": training, "scoring": last}


def _format_rows(columns, rows) -> str:
    cells = [[str(c) for c in columns]] + [[str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells)
