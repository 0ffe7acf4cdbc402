"""Spark job: score one day's raw clicks into the warehouse. Thin entry point around srgnn.score.

    spark-submit jobs/score.py --clicks PATH --ds YYYY-MM-DD [--model URI] [--top-k 20]
                               [--warehouse URL] [--engine spark|local]

Settings not given as flags come from the environment (SRGNN_HOME, MLFLOW_TRACKING_URI,
SRGNN_WAREHOUSE_URL). Exit code 1 and a one-line message on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from srgnn.config import Settings
    from srgnn.io import FORMATS, InputError
    from srgnn.score import score_day
    from srgnn.warehouse import WarehouseError

    parser = argparse.ArgumentParser(prog="score", description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", required=True)
    parser.add_argument("--ds", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--warehouse", default=None)
    parser.add_argument("--format", default="auto", choices=FORMATS)
    parser.add_argument("--engine", default="spark", choices=("spark", "local"))
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.warehouse:
        settings = dataclasses.replace(settings, warehouse_url=args.warehouse)
    try:
        result = score_day(settings, args.clicks, args.ds, model_uri=args.model, top_k=args.top_k,
                           engine=args.engine, fmt=args.format)
    except (InputError, WarehouseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
