"""The ``srgnn`` command line.

Every option can also come from an environment variable (shown in ``--help``); flags win.
User mistakes (a missing file, a bad column, an unknown format) print one line starting
with ``error:`` and exit with code 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .config import PrepareConfig, Settings
from .io import FORMATS, InputError


class _Group(click.Group):
    """Turns user-facing errors into one line and exit code 1 instead of a stack trace."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as exc:  # noqa: BLE001 - only user-facing errors are caught below
            if not _is_user_error(exc):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)


def _is_user_error(exc: BaseException) -> bool:
    """Bad input or a refused warehouse load: reported in one line, not as a stack trace."""
    if isinstance(exc, InputError):
        return True
    warehouse = sys.modules.get("srgnn.warehouse")
    return warehouse is not None and isinstance(exc, warehouse.WarehouseError)


def _user_error(exc: ValueError) -> click.UsageError:
    """A configuration value rejected by a config dataclass, reported as a usage error."""
    return click.UsageError(str(exc))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), envvar="SRGNN_HOME",
              default=Path("var"), show_default=True, show_envvar=True,
              help="Project home: prepared runs, MLflow store (SQLite), warehouse (DuckDB).")
@click.pass_context
def cli(ctx: click.Context, home: Path) -> None:
    """srgnn-pipeline: session-based next-item recommendations with SR-GNN.

    Raw clicks -> Spark session graphs -> PyTorch SR-GNN tracked in MLflow -> nightly top-K
    recommendations in a warehouse table, scheduled by Airflow. Start with `srgnn demo`.
    """
    ctx.obj = Settings.from_env(home=home)


def _prepare_config(min_item_support, test_days, valid_days) -> PrepareConfig:
    try:
        return PrepareConfig(min_item_support=min_item_support, test_days=test_days, valid_days=valid_days)
    except ValueError as exc:
        raise _user_error(exc) from None


def _with_options(func, options):
    for option in reversed(options):
        func = option(func)
    return func


def prepare_options(func):
    """Options shared by `prepare` and `train` (they both run the prepare job)."""
    defaults = PrepareConfig()
    options = [
        click.option("--clicks", required=True, help="Raw clicks: a file, a folder or a glob (CSV, CSV.gz, JSON Lines, Parquet)."),
        click.option("--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True,
                     help="Input format; 'auto' decides from the file name and first line when unambiguous."),
        click.option("--min-item-support", type=int, default=defaults.min_item_support, show_default=True,
                     envvar="SRGNN_MIN_ITEM_SUPPORT", show_envvar=True, help="Drop items with fewer clicks."),
        click.option("--test-days", type=int, default=defaults.test_days, show_default=True,
                     envvar="SRGNN_TEST_DAYS", show_envvar=True, help="Sessions ending in the last N days are the test split."),
        click.option("--valid-days", type=int, default=defaults.valid_days, show_default=True,
                     envvar="SRGNN_VALID_DAYS", show_envvar=True, help="The N days before the test window are the validation split."),
    ]
    return _with_options(func, options)


@cli.command()
@prepare_options
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output run folder (default: <home>/runs/<UTC timestamp>).")
@click.pass_obj
def prepare(settings: Settings, clicks, fmt, min_item_support, test_days, valid_days, out) -> None:
    """Raw clicks -> sessions -> train/valid/test session graphs (Parquet) with Spark."""
    from .prepare import default_out_dir, run_prepare
    from .spark import get_spark

    config = _prepare_config(min_item_support, test_days, valid_days)
    out = out or default_out_dir(settings.home)
    from .io import check_input

    check_input(clicks, fmt)  # fail fast, before Spark starts, on a user mistake
    spark = get_spark(settings, app_name="srgnn-prepare")
    result = run_prepare(spark, clicks, out, config, fmt)
    _print_prepare_summary(result.summary)


def _print_prepare_summary(s: dict) -> None:
    click.echo(f"prepared {s['out_dir']}  ({s['format']}, {s['seconds']} s)")
    click.echo(f"  clicks read        {s['clicks_read']:>12,}")
    click.echo(f"  quarantined        {s['clicks_quarantined']:>12,}  {s['quarantine_reasons'] or ''}")
    for name, n in s["clicks_removed"].items():
        click.echo(f"  removed: {name:<24} {n:>10,}")
    click.echo(f"  clicks kept        {s['clicks_kept']:>12,}")
    click.echo(f"  items (vocabulary) {s['vocab_size']:>12,}")
    for split, v in s["splits"].items():
        click.echo(f"  {split:<6} sessions {v['sessions']:>10,}  examples {v['examples']:>10,}")
    click.echo(f"  examples lost to items unseen in the training window: {s['examples_lost_to_unseen_items']:,}")


@cli.command()
@click.option("--out", required=True, type=click.Path(), help="Output CSV file, or folder with --by-day.")
@click.option("--sessions", type=int, default=20_000, show_default=True)
@click.option("--items", type=int, default=2_000, show_default=True)
@click.option("--days", type=int, default=7, show_default=True)
@click.option("--end-date", default="2026-11-28", show_default=True, help="Last day of clicks (YYYY-MM-DD).")
@click.option("--bad-share", type=float, default=0.01, show_default=True, help="Share of malformed lines.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--by-day", is_flag=True, help="Write one file per day: OUT/ds=YYYY-MM-DD/clicks.csv.")
@click.option("--gzip", "compress", is_flag=True, help="Gzip the output.")
def generate(out, sessions, items, days, end_date, bad_share, seed, by_day, compress) -> None:
    """Write a realistic synthetic clickstream (latent intents, popularity skew, bad lines)."""
    from .synth import SynthConfig, write_clickstream

    if sessions < 1 or items < 2 or days < 1 or not 0 <= bad_share < 1:
        raise _user_error(ValueError("--sessions >= 1, --items >= 2, --days >= 1 and 0 <= --bad-share < 1 are required."))
    result = write_clickstream(out, SynthConfig(sessions=sessions, items=items, days=days, end_date=end_date,
                                                bad_share=bad_share, seed=seed), by_day=by_day, compress=compress)
    click.echo(f"wrote {result.clicks:,} clicks ({result.duplicates:,} logged twice) and "
               f"{result.bad_lines:,} malformed lines in {len(result.files)} file(s): {out}")


def _train_options(func):
    """Training flags; defaults are the SR-GNN paper's settings (srgnn.train.TrainConfig)."""
    from .config import PRECISIONS, TrainConfig

    d = TrainConfig()
    options = [
        click.option("--epochs", type=int, default=d.epochs, show_default=True, envvar="SRGNN_EPOCHS", show_envvar=True),
        click.option("--hidden-size", type=int, default=d.hidden_size, show_default=True, envvar="SRGNN_HIDDEN_SIZE", show_envvar=True),
        click.option("--batch-size", type=int, default=d.batch_size, show_default=True, envvar="SRGNN_BATCH_SIZE", show_envvar=True),
        click.option("--lr", type=float, default=d.lr, show_default=True, envvar="SRGNN_LR", show_envvar=True, help="Adam learning rate."),
        click.option("--lr-decay-step", type=int, default=d.lr_decay_step, show_default=True, help="Epochs between learning-rate decays (x0.1)."),
        click.option("--l2", type=float, default=d.l2, show_default=True, help="L2 penalty."),
        click.option("--steps", type=int, default=d.steps, show_default=True, help="Gated graph propagation steps."),
        click.option("--patience", type=int, default=d.patience, show_default=True, help="Early stopping on validation HR@20."),
        click.option("--nonhybrid", is_flag=True, help="Session embedding from attention only (no last-click term)."),
        click.option("--max-examples-per-epoch", type=int, default=None, help="Cap training examples per epoch (quick runs)."),
        click.option("--seed", type=int, default=d.seed, show_default=True),
        click.option("--short-fallback/--no-short-fallback", default=d.short_fallback, show_default=True,
                     help="Answer 1-3 click sessions with item-KNN where validation by length shows it better."),
        click.option("--precision", type=click.Choice(list(PRECISIONS)), default=d.precision,
                     show_default=True, envvar="SRGNN_PRECISION", show_envvar=True,
                     help="Operands of the loss's catalogue products; auto = bfloat16 where the CPU "
                          "multiplies it natively (float32 accumulation, softmax and weights)."),
        click.option("--resume", is_flag=True, help="Continue the run folder's training after a crash."),
        click.option("--refit", is_flag=True,
                     help="After choosing the epoch count on validation, train again on train + "
                          "valid for that many epochs and register that model (needs --test-days > 0)."),
    ]
    return _with_options(func, options)


@cli.command()
@prepare_options
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run folder (default: <home>/runs/<UTC timestamp>); with --resume, the folder to continue.")
@_train_options
@click.pass_obj
def train(settings: Settings, clicks, fmt, min_item_support, test_days, valid_days, out, resume, refit,
          **train_flags) -> None:
    """Prepare (Spark) + train SR-GNN + register in MLflow + champion gate.

    Prints the registered version, whether it became the champion, and its metrics next to
    the baselines on the held-out split.
    """
    from .io import check_input
    from .prepare import default_out_dir, run_prepare
    from .spark import get_spark
    from .config import TrainConfig
    from .training_run import run_training

    config = _prepare_config(min_item_support, test_days, valid_days)
    try:
        train_config = TrainConfig(**train_flags)
    except ValueError as exc:
        raise _user_error(exc) from None
    if refit and test_days < 1:
        raise _user_error("--refit trains on the validation days too; the held-out figures and "
                          "the gate then need a test split: use --test-days 1 or more.")
    out = out or default_out_dir(settings.home)
    if not (resume and Path(out, "summary.json").exists()):
        check_input(clicks, fmt)
        prepared = run_prepare(get_spark(settings, app_name="srgnn-prepare"), clicks, out, config, fmt)
        _print_prepare_summary(prepared.summary)
    result = run_training(settings, out, train_config, resume=resume, refit=refit)
    Path(out, "training.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    click.echo(f"\nregistered srgnn version {result['version']} ({result['model_uri']}), "
               f"best epoch {result.get('best_epoch')}")
    click.echo(f"gate: {result.get('decision')}: {result.get('reason')}")
    click.echo(f"short sessions: {result['short_fallback']['description']}")
    if result.get("table"):
        click.echo(result["table"])


@cli.command()
@click.option("--run", "run_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="A prepared run folder (srgnn prepare / srgnn train): evaluate on its test split.")
@click.option("--clicks", default=None, help="Or: held-out prefixes as raw clicks, one session per prefix ...")
@click.option("--targets", default=None, type=click.Path(exists=True, dir_okay=False),
              help="... and a session_id,item_id CSV of their true next items.")
@click.option("--model", "model_uri", default=None, help="Model to evaluate  [default: models:/srgnn@champion]")
@click.option("--split", type=click.Choice(["test", "valid"]), default=None, help="With --run; default: test (valid if test is empty).")
@click.option("--baselines", default="pop,spop,iknn,sknn,vsknn,markov", show_default=True,
              help="With --run: comma-separated baselines to compare with (empty for none).")
@click.option("--top-k", type=int, default=20, show_default=True)
@click.pass_obj
def evaluate(settings: Settings, run_dir, clicks, targets, model_uri, split, baselines, top_k) -> None:
    """One table: SR-GNN and the baselines x metrics, overall and by session length."""
    if bool(run_dir) == bool(clicks) or bool(clicks) != bool(targets):
        raise click.UsageError("give either --run, or --clicks with --targets.")
    if clicks:
        from .score import evaluate_held_out

        _, table = evaluate_held_out(settings, clicks, targets, model_uri=model_uri, k=top_k)
    else:
        from .training_run import evaluate_run

        names = tuple(b.strip() for b in baselines.split(",") if b.strip())
        _, table = evaluate_run(settings, run_dir, model_uri=model_uri, baselines=names, split=split, k=top_k)
    click.echo(table)


@cli.command()
@click.option("--clicks", required=True, help="The day's raw clicks: a file, a folder or a glob.")
@click.option("--ds", required=True, help="The day being scored (YYYY-MM-DD); its rows are replaced.")
@click.option("--model", "model_uri", default=None, envvar="SRGNN_MODEL_URI", show_envvar=True,
              help="MLflow model URI or a saved recommender folder  [default: models:/srgnn@champion]")
@click.option("--top-k", type=int, default=20, show_default=True, envvar="SRGNN_TOP_K", show_envvar=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True)
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local", show_default=True,
              envvar="SRGNN_SCORING_ENGINE", show_envvar=True,
              help="local: batched torch in this process; spark: mapInArrow on the Spark cluster.")
@click.option("--warehouse", "warehouse_url", default=None, envvar="SRGNN_WAREHOUSE_URL", show_envvar=True,
              help="SQLAlchemy-style URL  [default: duckdb:///<home>/warehouse.duckdb]")
@click.pass_obj
def score(settings: Settings, clicks, ds, model_uri, top_k, fmt, engine, warehouse_url) -> None:
    """Write the top-K recommendations of one day's sessions to the warehouse (atomically)."""
    import dataclasses

    from .score import score_day

    if warehouse_url:
        settings = dataclasses.replace(settings, warehouse_url=warehouse_url)
    result = score_day(settings, clicks, ds, model_uri=model_uri, top_k=top_k, engine=engine, fmt=fmt)
    click.echo(f"scored {result['ds']} with {result['model_version']} ({result['engine']}, {result['seconds']} s)")
    for key in ("sessions_in", "fallbacks", "unknown_clicks_skipped", "quarantined", "rows_written", "rows_replaced"):
        click.echo(f"  {key:<24} {result[key]:>10,}")
    click.echo(f"  warehouse                {result['warehouse']}")
    click.echo(f"  stage seconds            {result['stage_seconds']}")


@cli.command()
@click.pass_obj
def demo(settings: Settings) -> None:
    """Generate a week of clicks and run the pipeline end to end on the embedded defaults."""
    from .demo import run_demo

    run_demo(settings)


def main(argv: list[str] | None = None) -> None:
    """The ``srgnn`` program. Given ``argv`` it runs like any click command (for callers in the
    same process). Run as the program (no ``argv``), it ends the process as soon as the command
    is done: output flushed, Spark stopped, then ``os._exit`` with the command's exit code.
    The interpreter's own teardown, which it skips, takes 1-1.5 s once torch, MLflow and Spark
    are loaded and has nothing left to do for a finished command (files, databases and MLflow
    runs are closed by then; Spark's JVM removes its scratch folders as it exits)."""
    if argv is not None:
        cli.main(args=argv, prog_name="srgnn")
        return
    try:
        cli.main(prog_name="srgnn")
        code = 0
    except SystemExit as done:
        code = done.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    _exit_now(code or 0)


def _exit_now(code: int) -> None:
    import logging
    import os

    if "pyspark" in sys.modules:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
