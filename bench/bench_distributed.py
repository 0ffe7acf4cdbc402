"""Training throughput of one process against data-parallel processes (prints a table).

Generated sessions (``--items`` items, hidden 100, batch 100), one epoch of ``--examples``
training examples without validation; the figure is the epoch's examples/s (all processes'
examples over the epoch's wall time, process start-up excluded). Rows:

* one process with every core (torch threads = the cores), and with one thread;
* ``--processes`` DDP processes (gloo) started by PySpark's TorchDistributor in local mode
  (``torchrun`` on this machine), the cores shared among them;
* with ``--cluster``, the same processes as tasks of a barrier stage on a Spark standalone
  cluster started for the run (tests/cluster.py: a master and two 1-core workers).

    .venv/bin/python bench/bench_distributed.py [--cluster]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from common import ROOT, machine, text_table


def _rank_epoch(train_dir: str, num_items: int, config):
    """One rank of the data-parallel epoch; returns its epoch figures."""
    import torch.distributed as dist

    from srgnn.training.distributed import DataParallel
    from srgnn.training.loop import train

    dist.init_process_group("gloo")
    try:
        replicas = DataParallel(dist.get_rank(), dist.get_world_size())
        return train(train_dir, None, num_items, config, replicas=replicas).history[-1]
    finally:
        dist.destroy_process_group()


def _distributed(train_dir, num_items, config, processes, master, local):
    from pyspark.ml.torch.distributor import TorchDistributor

    from srgnn.config import Settings
    from srgnn.data.spark import get_spark

    get_spark(Settings(home=Path(tempfile.mkdtemp()), spark_master=master,
                       spark_executor_memory="600m"), app_name="bench-distributed")
    stats = TorchDistributor(num_processes=processes, local_mode=local, use_gpu=False).run(
        _rank_epoch, str(train_dir), num_items, config)
    return stats.examples_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--examples", type=int, default=20000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--cluster", action="store_true")
    args = parser.parse_args()

    from srgnn.config import TrainConfig
    from srgnn.cpu import torch_threads
    from srgnn.data.samples import clustered_sessions, write_graph_parquet
    from srgnn.training.loop import train

    root = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    sessions = clustered_sessions(num_items=args.items, num_sessions=args.examples // 3,
                                  cluster_size=10, seed=1)
    train_dir = write_graph_parquet(root / "train", sessions, row_group_size=20000)
    config = TrainConfig(epochs=1, progress=False, max_examples_per_epoch=args.examples)
    cores = torch_threads()
    rows = []
    for threads in sorted({cores, 1}, reverse=True):
        stats = train(train_dir, None, args.items, replace(config, num_threads=threads)).history[-1]
        rows.append([f"1 process, {threads} thread(s)", f"{stats.examples_per_second:,.0f}"])
        print(*rows[-1], sep=": ", flush=True)
    threads = max(1, cores // args.processes)
    rate = _distributed(train_dir, args.items, replace(config, num_threads=threads),
                        args.processes, f"local[{args.processes}]", local=True)
    rows.append([f"{args.processes} processes (DDP, local mode), {threads} thread(s) each",
                 f"{rate:,.0f}"])
    print(*rows[-1], sep=": ", flush=True)
    if args.cluster:
        from pyspark.sql import SparkSession

        SparkSession.getActiveSession().stop()
        sys.path.insert(0, str(ROOT / "tests"))
        from cluster import start_cluster

        (root / "cluster-logs").mkdir()
        cluster = start_cluster(root / "cluster-logs")
        try:
            os.environ.pop("PYSPARK_PYTHON", None)
            rate = _distributed(train_dir, args.items, replace(config, num_threads=1),
                                args.processes, cluster.master, local=False)
        finally:
            cluster.stop()
        rows.append([f"{args.processes} processes (DDP, standalone cluster, 1-core workers)",
                     f"{rate:,.0f}"])
    print(f"SR-GNN training, {args.items:,} items, hidden 100, batch 100, {args.examples:,} "
          f"examples; {machine()}")
    print(text_table(["training", "examples/s"], rows))


if __name__ == "__main__":
    main()
