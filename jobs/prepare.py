"""Spark job: raw clicks -> session graphs; ``srgnn prepare`` as a spark-submit entry point.

    spark-submit jobs/prepare.py --clicks PATH --out DIR [--format F] [--min-item-support N]
                                 [--test-days N] [--valid-days N]

The flags, their environment variables and defaults are those of ``srgnn prepare --help``
(one settings table, :mod:`srgnn.config`). The package must be installed where the driver and
the executors run. Exit code 1 and a one-line message on bad input.
"""

import sys

from srgnn.cli import main

if __name__ == "__main__":
    main(["prepare", *sys.argv[1:]])
