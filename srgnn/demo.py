"""``srgnn demo``: the whole pipeline on generated data, on the embedded defaults."""

from __future__ import annotations

import click

from .config import PrepareConfig, Settings


def run_demo(settings: Settings) -> dict:
    from .prepare import run_prepare
    from .spark import get_spark
    from .synth import SynthConfig, write_clickstream

    home = settings.home
    raw_dir = home / "demo" / "raw"
    synth = SynthConfig(sessions=20_000, items=2_000, days=7)
    result = write_clickstream(str(raw_dir), synth, by_day=True)
    click.echo(f"generated {result.clicks:,} clicks and {result.bad_lines:,} malformed lines over "
               f"{len(result.days)} days in {raw_dir}")
    spark = get_spark(settings, app_name="srgnn-demo")
    out = str(home / "demo" / "run")
    prepared = run_prepare(spark, str(raw_dir), out, PrepareConfig(test_days=1, valid_days=1))
    from .cli import _print_prepare_summary

    _print_prepare_summary(prepared.summary)
    return {"prepare": prepared.summary}
