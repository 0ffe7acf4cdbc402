"""The ``srgnn`` command line.

Its flags are built from the settings table in :mod:`srgnn.config`: every flag shows its
environment variable and default in ``--help``, and a flag wins over the variable, which wins
over the default. Each command configures logging once (:mod:`srgnn.logs`), so progress lines
reach a redirected output. User mistakes (a missing file, a bad column, an unknown format, a
bad setting) print one line starting with ``error:`` and exit with code 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from srgnn import config as cfg
from srgnn.config import K, PrepareConfig, ScoreConfig, Settings, Source, TrainConfig
from srgnn.data.inputs import InputError


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
    """Bad input, a bad setting, or a fault the message explains in full (a warehouse that is
    locked, unreachable or refused a load; a model registry that cannot be asked): one line,
    not a stack trace."""
    if isinstance(exc, (InputError, cfg.SettingError)):
        return True
    warehouse = sys.modules.get("srgnn.warehouse.errors")
    if warehouse is not None and isinstance(exc, warehouse.WarehouseError):
        return True
    models = sys.modules.get("srgnn.serving.models")
    return models is not None and isinstance(exc, models.ModelUnavailable)


# --------------------------------------------------------------------------------------------
# Flags from the settings table
# --------------------------------------------------------------------------------------------
_CLICK_TYPES = {int: click.INT, float: click.FLOAT, str: click.STRING}


def _flag(opt: cfg.Option, **changes):
    """A click option for one row of the settings table.

    Its default is read from the environment when the command runs (``config.env_value``);
    ``--help`` shows the variable and the table's default.
    """
    help_text = opt.help
    if opt.env:
        help_text += f"  [env var: {opt.env}]"

    def default():
        return cfg.env_value(opt)

    kwargs = dict(default=default, show_default=False if opt.default is None else str(opt.default),
                  help=help_text)
    flag = changes.pop("flag", opt.flag)
    kwargs.update(changes)
    if opt.type is bool:
        name = opt.name.replace("_", "-")
        return click.option(f"--{name}/--no-{name}", opt.name, **kwargs)
    if opt.choices:
        kind = click.Choice(list(opt.choices))
    elif opt.type is Path:
        kind = click.Path(file_okay=False, path_type=Path)
    else:
        kind = _CLICK_TYPES[opt.type]
    if opt.required:
        kwargs.pop("default")
        kwargs.pop("show_default")
        kwargs["required"] = True
    return click.option(flag, opt.name, type=kind, **kwargs)


def flags(config_class, *, only=None, skip=(), **changes):
    """A decorator adding the flags of ``config_class``'s user-facing fields to a command."""
    chosen = [opt for opt in cfg.options(config_class)
              if (opt.cli or (only is not None and opt.name in only)) and opt.name not in skip
              and (only is None or opt.name in only)]

    def decorate(func):
        for opt in reversed(chosen):
            func = _flag(opt, **dict(changes.get(opt.name, {})))(func)
        return func
    return decorate


def build(config_class, values: dict):
    """``config_class`` from the flags in ``values``; bad combinations are usage errors."""
    try:
        return cfg.from_values(config_class, values)
    except cfg.SettingError as exc:
        raise click.UsageError(str(exc)) from None


def _settings(ctx: click.Context, **overrides) -> Settings:
    settings = ctx.obj
    if any(value is not None for value in overrides.values()):
        import dataclasses

        settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    return settings


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------
@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@flags(Settings, only=("home",))
@click.pass_context
def cli(ctx: click.Context, home: Path) -> None:
    """srgnn-pipeline: session-based next-item recommendations with SR-GNN.

    Raw clicks -> Spark session graphs -> PyTorch SR-GNN tracked in MLflow -> nightly top-K
    recommendations in a warehouse table, scheduled by Airflow. Start with `srgnn demo`.
    """
    from srgnn.logs import configure

    configure()
    try:
        ctx.obj = Settings.from_env(home=home)
    except cfg.SettingError as exc:
        raise click.UsageError(str(exc)) from None


_OUT = click.option("--out", type=click.Path(file_okay=False), default=None,
                    help="Run folder (default: <home>/runs/<UTC timestamp>).")


@cli.command()
@flags(Source)
@flags(PrepareConfig)
@_OUT
@click.pass_context
def prepare(ctx, out, **values) -> None:
    """Raw clicks -> sessions -> train/valid/test session graphs (Parquet) with Spark."""
    from srgnn.pipeline import prepare_step

    result = prepare_step(build(Source, values), build(PrepareConfig, values), out, ctx.obj)
    _print_prepare_summary(result["summary"])


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
    if s.get("prefixes_cut"):
        click.echo(f"  prefixes cut to the last {s['config']['max_prefix_length']} clicks: "
                   f"{s['prefixes_cut']:,} ({s['prefix_clicks_cut']:,} clicks left out of them)")


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
@click.option("--successor-share", type=float, default=0.55, show_default=True,
              help="Share of next clicks that follow the current item in its browsing order; "
                   "near 1 the next item depends mostly on the last one.")
@click.option("--users", type=int, default=0, show_default=True,
              help="Accounts that log in: half of the sessions then carry a user_id (a fourth "
                   "column), the active users' sessions browsing other intents than the rest's; "
                   "0 = every session anonymous.")
def generate(out, sessions, items, days, end_date, bad_share, seed, by_day, compress,
             successor_share, users) -> None:
    """Write a realistic synthetic clickstream (latent intents, popularity skew, bad lines)."""
    from srgnn.data.synth import SynthConfig, write_clickstream

    if sessions < 1 or items < 2 or days < 1 or not 0 <= bad_share < 1:
        raise click.UsageError("--sessions >= 1, --items >= 2, --days >= 1 and 0 <= --bad-share < 1 are required.")
    if not 0 <= successor_share <= 1:
        raise click.UsageError("--successor-share must lie between 0 and 1.")
    if users < 0:
        raise click.UsageError("--users must be 0 or more.")
    result = write_clickstream(out, SynthConfig(sessions=sessions, items=items, days=days, end_date=end_date,
                                                bad_share=bad_share, seed=seed,
                                                successor_share=successor_share, users=users),
                               by_day=by_day, compress=compress)
    click.echo(f"wrote {result.clicks:,} clicks ({result.duplicates:,} logged twice) and "
               f"{result.bad_lines:,} malformed lines in {len(result.files)} file(s): {out}")


@cli.command()
@flags(Source)
@flags(PrepareConfig)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run folder (default: <home>/runs/<UTC timestamp>); with --resume, the folder to continue.")
@flags(TrainConfig)
@click.option("--resume", is_flag=True,
              help="Continue the run folder's training after a crash; on a finished training, "
                   "reuse its registered version.")
@click.pass_context
def train(ctx, out, resume, **values) -> None:
    """Prepare (Spark) + train SR-GNN + register in MLflow + evaluate + champion gate.

    Prints the registered version, whether it became the champion, and its figures next to
    the champion's and the baselines' on the held-out split.
    """
    from srgnn.data.runfolder import RunFolder
    from srgnn.pipeline import (evaluate_step, final_refit_step, gate_step, prepare_step,
                                train_step)

    settings = ctx.obj
    source, prepare_config = build(Source, values), build(PrepareConfig, values)
    train_config = build(TrainConfig, values)
    from srgnn.pipeline import default_run_dir

    out = out or default_run_dir(settings)
    if not (resume and RunFolder(out).is_complete()):
        prepared = prepare_step(source, prepare_config, out, settings)
        _print_prepare_summary(prepared["summary"])
    trained = train_step(out, train_config, resume=resume, settings=settings)
    evaluated = evaluate_step(out, trained, settings=settings)
    gate = gate_step(trained, evaluated, settings=settings)
    decision = final_refit_step(trained, gate, train_config, settings=settings)
    final = decision["final_refit"]
    again = " (registered by an earlier attempt)" if trained.get("reused") else ""
    click.echo(f"\nregistered srgnn version {trained['version']} ({trained['model_uri']}){again}, "
               f"best epoch {trained.get('best_epoch')}, trained on {trained.get('trained_on')} "
               f"{trained.get('trained_days', '')}".rstrip())
    if trained.get("selection"):
        click.echo(f"kind: {trained['kind']} ({trained['selection']['reason']})")
    click.echo(f"gate: {gate['decision']}: {gate['reason']}")
    if final["done"]:
        click.echo(f"final refit: version {decision['version']} ({decision['model_uri']}), "
                   f"trained on {final['trained_on']} {final['trained_days']} for "
                   f"{final['epochs']} epoch(s), is the champion")
    else:
        click.echo(f"final refit: none ({final['reason']})")
    click.echo(f"short sessions: {trained['short_fallback']['description']}")
    click.echo(evaluated["table"])


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
@click.option("--top-k", type=int, default=K, show_default=True)
@flags(Source, only=("format", "encoding"))
@click.pass_obj
def evaluate(settings: Settings, run_dir, clicks, targets, model_uri, split, baselines, top_k,
             format, encoding) -> None:
    """One table: SR-GNN and the baselines x metrics, overall and by session length."""
    if bool(run_dir) == bool(clicks) or bool(clicks) != bool(targets):
        raise click.UsageError("give either --run, or --clicks with --targets.")
    if clicks:
        from srgnn.data.inputs import check_input
        from srgnn.data.spark import get_spark
        from srgnn.evaluation import heldout
        from srgnn.evaluation.evaluate import evaluate as evaluate_model
        from srgnn.evaluation.report import format_table
        from srgnn.serving.models import resolve_model

        check_input(clicks, format, encoding)
        recommender, model = resolve_model(settings, model_uri, topk_index="exact")
        held_out = heldout.from_clicks(get_spark(settings, app_name="srgnn-evaluate"), clicks,
                                       targets, recommender.vocabulary, format, encoding)
        result = evaluate_model(recommender, held_out, top_k)
        result["targets_without_session"] = int(held_out.absent.sum())
        click.echo(format_table({model.label: result}))
    else:
        from srgnn.pipeline import evaluate_step

        names = tuple(b.strip() for b in baselines.split(",") if b.strip())
        out = evaluate_step(run_dir, model_uri=model_uri, baselines=names, split=split, k=top_k,
                            settings=settings)
        click.echo(out["table"])


@cli.command()
@flags(Source)
@click.option("--ds", required=True, help="The day being scored (YYYY-MM-DD); its rows are replaced.")
@flags(ScoreConfig, model_uri={"flag": "--model"})
@flags(Settings, only=("warehouse_url",), warehouse_url={"flag": "--warehouse"})
@click.pass_context
def score(ctx, ds, warehouse_url, **values) -> None:
    """Write the top-K recommendations of one day's sessions to the warehouse (atomically)."""
    from srgnn.pipeline import score_step

    settings = _settings(ctx, warehouse_url=warehouse_url)
    result = score_step(build(Source, values), ds, build(ScoreConfig, values), settings)
    click.echo(f"scored {result['ds']} with {result['model_version']} ({result['engine']}, {result['seconds']} s)")
    for key in ("clicks_read", "quarantined", "duplicates_dropped", "unknown_clicks_skipped", "sessions_in",
                "fallbacks", "category_fallbacks", "rows_written", "rows_replaced"):
        click.echo(f"  {key:<24} {result[key]:>10,}")
    click.echo(f"  warehouse                {result['warehouse']}")
    click.echo(f"  quarantine               {result['quarantine']}")
    click.echo(f"  stage seconds            {result['stage_seconds']}")
    if result.get("topk"):  # exact, or the approximate index and its recall against exact
        click.echo(f"  top-k                    {json.dumps(result['topk'], default=str)}")


@cli.command()
@click.pass_obj
def demo(settings: Settings) -> None:
    """Generate a week of clicks and run the pipeline end to end on the embedded defaults."""
    from srgnn.demo import run_demo

    run_demo(settings)


def main(argv: list[str] | None = None) -> None:
    """The ``srgnn`` program. Given ``argv`` it runs like any click command (for callers in the
    same process). Run as the program (no ``argv``), it ends the process as soon as the command
    is done: output flushed, Spark stopped, then ``os._exit`` with the command's exit code.
    The interpreter's own teardown, which it skips, has nothing left to do for a finished
    command (files, databases and MLflow runs are closed by then; Spark's JVM removes its
    scratch folders as it exits) and takes a noticeable time once torch, MLflow and Spark are
    loaded."""
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
