"""Spark job: score one day's raw clicks into the warehouse; ``srgnn score`` as a spark-submit
entry point.

    spark-submit jobs/score.py --clicks PATH --ds YYYY-MM-DD --engine spark [--model URI]
                               [--top-k 20] [--warehouse URL] [--format F]

The flags, their environment variables and defaults are those of ``srgnn score --help`` (one
settings table, :mod:`srgnn.config`); settings not given as flags come from the environment
(SRGNN_HOME, MLFLOW_TRACKING_URI, SRGNN_WAREHOUSE_URL). Exit code 1 and a one-line message on
bad input.
"""

import sys

from srgnn.cli import main

if __name__ == "__main__":
    main(["score", *sys.argv[1:]])
