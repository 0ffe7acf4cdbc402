"""Spark job: raw clicks -> session graphs. Thin entry point around srgnn.prepare.

    spark-submit jobs/prepare.py --clicks PATH --out DIR [--format F] [--min-item-support N]
                                 [--test-days N] [--valid-days N]

On a cluster, ship the package with the job (``--py-files dist/srgnn.zip``) or install it in
the executors' image. Exit code 1 and a one-line message on bad input.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from srgnn.config import PrepareConfig, Settings
    from srgnn.io import FORMATS, InputError
    from srgnn.prepare import run_prepare
    from srgnn.spark import get_spark

    defaults = PrepareConfig()
    parser = argparse.ArgumentParser(prog="prepare", description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--format", default="auto", choices=FORMATS)
    parser.add_argument("--min-item-support", type=int, default=defaults.min_item_support)
    parser.add_argument("--test-days", type=int, default=defaults.test_days)
    parser.add_argument("--valid-days", type=int, default=defaults.valid_days)
    args = parser.parse_args(argv)
    try:
        config = PrepareConfig(min_item_support=args.min_item_support, test_days=args.test_days,
                               valid_days=args.valid_days)
        spark = get_spark(Settings.from_env(), app_name="srgnn-prepare")
        result = run_prepare(spark, args.clicks, args.out, config, args.format)
    except (InputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"prepared {result.out_dir}: {result.summary['examples']} examples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
