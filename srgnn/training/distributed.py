"""Data-parallel training in several processes: PyTorch DDP (gloo, CPU), started on Spark.

With ``TrainConfig.processes`` above 1 (``SRGNN_TRAIN_PROCESSES``, ``srgnn train
--processes``, DAG param ``processes``), :func:`srgnn.training.run.run_training` hands over to
:func:`launch`, which starts that many processes with PySpark's ``TorchDistributor`` on the
configured Spark master. One process (the default) trains as before, in the caller.

Every process (rank) runs :func:`_rank_main`:

* it joins the process group (gloo over TCP, the address that ``torchrun`` gives it) and builds
  the model from the same seed as the others (DDP also copies rank 0's weights to all);
* it reads only its shard of the training split: rank ``r`` of ``N`` owns the consecutive
  examples ``[r * n // N, (r + 1) * n // N)`` in file and row order and reads only the
  Parquet row groups that hold them (``GraphParquetReader(..., part=(r, N))``). Every epoch
  it shuffles its shard (seeded by seed, epoch and rank) and serves local batches of its
  share of ``batch_size`` (batch 100 over 2 ranks: 50 rows each); a global step is the
  union of the ranks' local batches. ``max_examples_per_epoch`` counts the examples of all
  ranks. All ranks take the steps of the largest shard (the shard sizes come from the
  Parquet metadata); a rank that ran out serves a placeholder row weighed 0. Its loss is its
  rows' mean weighted by ``ranks * rows / step rows``, so the average of the ranks' gradients
  that DDP computes is the gradient of the global batch's mean loss: the step one process
  would take on that batch, up to the order of float additions;
* validation: each rank ranks the targets of its part of every validation batch, the ranks
  are gathered in the single-process order, and every rank computes the same figures, so
  early stopping decides the same everywhere (:class:`DataParallel`);
* rank 0 writes the checkpoints, logs to MLflow and registers the model
  (:func:`~srgnn.training.run.run_training`, as one process does); the other ranks make the
  same training calls (:func:`_follow`), write and log nothing, and return rank 0's result.

Where the processes run: with a local master (``local[*]``) on this machine
(``TorchDistributor`` local mode: ``torchrun`` with N processes); on a cluster master each
process is one task of a barrier stage, which needs N free task slots at once. :func:`launch`
waits a short while for the application's executors and stops with a message naming the
setting when they hold fewer slots than N, instead of a barrier stage that waits for ever.
Every rank reads its shard of the training graphs (and the Parquet metadata of all), the
validation graphs and the checkpoint folder of the run folder, so on a cluster the run folder
lives on storage that all nodes see, and rank 0 needs the MLflow tracking server. Each
process uses ``num_threads`` torch threads, by default the cores over the processes (local)
or ``spark.task.cpus`` (cluster).

Sampled softmax (``TrainConfig.softmax`` resolving to ``sampled``) is refused: its item-table
gradient is sparse and reaches the loss outside the module's ``forward``, which DDP's
gradient averaging does not see; distributed training uses the full softmax
(``--softmax full``).

Example::

    from srgnn.config import Settings, TrainConfig
    from srgnn.training.run import run_training
    run_training(Settings.from_env(spark_master="spark://master:7077"), "var/runs/r1",
                 TrainConfig(epochs=10, processes=4))
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

from srgnn.config import K, SettingError, Settings, TrainConfig
from srgnn.data.runfolder import RunFolder
from srgnn.evaluation.evaluate import metric_table
from srgnn.training.loop import Replicas, refuse_sampled_softmax, target_ranks

__all__ = ["DataParallel", "DistributedTrainingError", "check_processes", "launch",
           "process_threads"]

logger = logging.getLogger(__name__)

SLOT_WAIT_SECONDS = 120  # how long launch waits for the executors of a cluster application,
SLOT_SETTLE_SECONDS = 30  # or for one more after the last one came
_TIMEOUT = timedelta(minutes=30)  # a collective waiting longer than this fails,
_RESULT_TIMEOUT = timedelta(hours=12)  # but for rank 0's result after the training


class DistributedTrainingError(RuntimeError):
    """A rank of a distributed training failed; the message holds its error line."""


class DataParallel(Replicas):
    """The loop's hooks (:class:`srgnn.training.loop.Replicas`) for rank ``rank`` of
    ``world_size`` processes in an initialised ``torch.distributed`` process group."""

    def __init__(self, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}.")
        self.rank, self.world_size = rank, world_size
        self.writes = rank == 0
        self.sampled_softmax = False  # its sparse item-table gradient would escape DDP
        self._weight, self._rows = 1.0, 0  # of the batch being served
        self._loss_sum, self._examples = 0.0, 0  # this rank's, since the last epoch_totals

    def wrap(self, model):
        return _Synchronised(model, self)

    def shard(self, reader):
        return _Shard(reader.part_of(self.rank, self.world_size), self)

    def epoch_totals(self, loss: float, examples: int) -> tuple[float, int]:
        # The loop's figures count a rank's placeholder row (an empty share); these do not.
        import torch.distributed as dist

        totals = torch.tensor([self._loss_sum, float(self._examples)], dtype=torch.float64)
        dist.all_reduce(totals)
        self._loss_sum, self._examples = 0.0, 0
        examples = int(totals[1])
        return float(totals[0]) / max(examples, 1), examples

    def validation(self, model, reader, k: int) -> dict:
        import torch.distributed as dist

        pieces = []
        for index, (batch, rows, _) in enumerate(reader.shard(0, self.rank, self.world_size)):
            if rows:
                ranks, lengths = target_ranks(model, [batch])
                pieces.append((index, self.rank, ranks, lengths))
        gathered: list = [None] * self.world_size
        dist.all_gather_object(gathered, pieces)
        # Batch by batch, rank by rank: the order in which one process ranks them.
        ordered = sorted((p for part in gathered for p in part), key=lambda p: p[:2])
        if not ordered:
            empty = np.zeros(0, dtype=np.int64)
            return metric_table(empty, empty, k)
        return metric_table(np.concatenate([p[2] for p in ordered]),
                            np.concatenate([p[3] for p in ordered]), k)

    def _serve(self, rows: int, batch_rows: int) -> None:
        self._rows = rows
        self._weight = self.world_size * rows / batch_rows

    def _record(self, mean_loss: float) -> None:
        self._loss_sum += mean_loss * self._rows
        self._examples += self._rows


class _Shard:
    """A rank's local batches (``len`` = the steps every rank takes in an epoch)."""

    def __init__(self, reader, replicas: DataParallel) -> None:
        self._reader, self._replicas = reader, replicas

    def __len__(self) -> int:
        return len(self._reader)

    def batches(self, epoch: int = 0):
        for batch, rows, step_rows in self._reader.steps(epoch):
            self._replicas._serve(rows, step_rows)
            yield batch


class _WeightedLoss(torch.nn.Module):
    """The model's loss as a module ``forward``: DDP averages gradients only of what its
    ``forward`` computed."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch, precision: str, weight: float):
        loss = self.model.loss(batch, precision)
        return loss * weight, loss.detach()


class _Synchronised(torch.nn.Module):
    """What :func:`srgnn.training.loop.training_step` steps on a rank: ``loss`` runs through
    DistributedDataParallel, weighted so that the averaged gradient is the whole batch's."""

    def __init__(self, model, replicas: DataParallel) -> None:
        super().__init__()
        from torch.nn.parallel import DistributedDataParallel

        self.ddp = DistributedDataParallel(_WeightedLoss(model))
        self._replicas = replicas

    def loss(self, batch, precision: str = "float32") -> torch.Tensor:
        weighted, mean = self.ddp(batch, precision, self._replicas._weight)
        self._replicas._record(float(mean))
        return weighted


# --------------------------------------------------------------------------------------------
# The processes
# --------------------------------------------------------------------------------------------
def _rank_main(settings: Settings, run_dir: str, config: TrainConfig, options: dict) -> dict:
    """One rank: join the group, train (rank 0 through run_training), return rank 0's result
    (every rank returns it: TorchDistributor's local mode keeps whichever rank ends last).

    A failing rank writes its error line to ``<checkpoint folder>/rank<r>.error`` before it
    exits (TorchDistributor keeps a rank's output, not its exception): :func:`launch` reports
    the first one written, the cause of the others' failures.
    """
    import torch.distributed as dist

    from srgnn import logs

    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    logs.configure(logging.INFO if rank == 0 else logging.WARNING)
    try:
        dist.init_process_group("gloo", timeout=_TIMEOUT)
        try:
            # After training, rank 0 alone chooses the short-session routes and the candidate,
            # logs and registers, which may take longer than a step's collective may wait.
            results = dist.new_group(backend="gloo", timeout=_RESULT_TIMEOUT)
            replicas = DataParallel(rank, world_size)
            outcome = None
            if rank == 0:
                from srgnn.training.run import run_training

                logger.info("rank 0 of %d: training %s with %d torch thread(s) a process",
                            world_size, run_dir, config.num_threads)
                outcome = run_training(settings, run_dir, config, replicas=replicas, **options)
            else:
                _follow(run_dir, config, replicas, resume=options["resume"],
                        refit=options["refit"])
            box = [outcome]
            dist.broadcast_object_list(box, src=0, group=results)  # rank 0's registration
            return box[0]
        finally:
            dist.destroy_process_group()
    except Exception as exc:
        logger.exception("rank %d of %d failed", rank, world_size)
        errors = _errors_dir(run_dir)
        errors.mkdir(parents=True, exist_ok=True)
        (errors / f"rank{rank}.error").write_text(f"{type(exc).__name__}: {exc}\n")
        raise


def _errors_dir(run_dir) -> Path:
    return RunFolder(run_dir).checkpoint_dir


def _first_error(run_dir) -> str | None:
    """The error line of the rank that failed first, if one wrote it."""
    written = sorted(_errors_dir(run_dir).glob("rank*.error"), key=lambda p: p.stat().st_mtime)
    return written[0].read_text().strip() if written else None


def _follow(run_dir: str, config: TrainConfig, replicas: DataParallel, *, resume: bool,
            refit: bool) -> None:
    """The training calls of :func:`srgnn.training.run.run_training`, on a rank other than 0:
    the same data, settings and checkpoint folder (read to resume, never written)."""
    from srgnn.training.loop import refit as refit_model
    from srgnn.training.loop import train
    from srgnn.training.run import REFIT_DIR

    run = RunFolder(run_dir)
    result = train(run.graphs("train"), run.graphs("valid"), run.num_items, config,
                   output_dir=run.checkpoint_dir, resume=resume, replicas=replicas)
    if refit:
        refit_model([run.graphs("train"), run.graphs("valid")], run.num_items, result.best_epoch,
                    config, output_dir=run.checkpoint_dir / REFIT_DIR, resume=resume,
                    replicas=replicas)


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------
def check_processes(train_config: TrainConfig, num_items: int) -> None:
    """Refuse settings that a training in ``train_config.processes`` processes cannot run, before
    anything starts (:func:`srgnn.training.run.run_training` calls it before MLflow and Spark).

    Raises:
        SettingError: sampled softmax for ``num_items`` items, or a batch smaller than the
            processes.
    """
    processes = train_config.processes
    refuse_sampled_softmax(train_config, num_items, processes)
    if train_config.batch_size < processes:
        raise SettingError(
            f"distributed training shares every batch among its {processes} processes: the "
            f"batch size ({train_config.batch_size}) must be at least that (--batch-size).")


def launch(settings: Settings, run: RunFolder, train_config: TrainConfig, *,
           model_name: str = "srgnn", resume: bool = False, experiment_name: str = "srgnn",
           refit: bool = False, k: int = K) -> dict:
    """Train, log and register as :func:`srgnn.training.run.run_training` does, in
    ``train_config.processes`` processes started by TorchDistributor on ``settings.spark_master``.

    :func:`~srgnn.training.run.run_training` hands over to it once it has checked the run
    folder, ``refit`` and the settings (:func:`check_processes`), reached MLflow, and found no
    registration of an earlier attempt to reuse.

    Returns rank 0's :func:`~srgnn.training.run.run_training` result.

    Raises:
        SettingError: a cluster whose application has fewer task slots than processes.
        DistributedTrainingError: a rank failed (the message holds its error).
    """
    from srgnn.data.spark import get_spark

    processes = train_config.processes
    # The ranks may run elsewhere (executors start in their own folders): absolute paths.
    settings = replace(settings, home=settings.home.resolve())
    run = RunFolder(run.path.resolve())

    spark = get_spark(settings, app_name="srgnn-train")
    master = spark.sparkContext.master  # spark-submit's, where it started this process
    local = master.startswith("local")
    if not local:
        _wait_for_slots(spark, processes, master)
    threads = process_threads(train_config, processes, local,
                              int(spark.conf.get("spark.task.cpus", "1")))
    config = replace(train_config, num_threads=threads, progress=False)
    options = {"model_name": model_name, "resume": resume, "experiment_name": experiment_name,
               "refit": refit, "k": k}
    logger.info("distributed training: %d processes (%s), %d torch thread(s) each", processes,
                "on this machine" if local else f"on {master}", threads)

    from pyspark.ml.torch.distributor import TorchDistributor

    for stale in _errors_dir(run.path).glob("rank*.error"):
        stale.unlink()
    started = time.perf_counter()
    distributor = TorchDistributor(num_processes=processes, local_mode=local, use_gpu=False)
    try:
        outcome = distributor.run(_rank_main, settings, str(run.path), config, options)
    except Exception as exc:  # noqa: BLE001 - TorchDistributor and Spark wrap a rank's error
        cause = _first_error(run.path) or _error_line(str(exc))
        raise DistributedTrainingError(
            f"distributed training on {processes} processes failed: {cause} (each rank's "
            "output is above)") from exc
    logger.info("distributed training done in %.0f s", time.perf_counter() - started)
    return outcome


def process_threads(config: TrainConfig, processes: int, local: bool, task_cpus: int = 1) -> int:
    """Torch threads of each process: ``config.num_threads`` when set; else this machine's
    cores shared by the processes (local), or the cores of a task slot (cluster)."""
    if config.num_threads > 0:
        return config.num_threads
    if local:
        from srgnn.cpu import torch_threads

        return max(1, torch_threads() // processes)
    return max(1, task_cpus)


def _wait_for_slots(spark, processes: int, master: str, wait: float = SLOT_WAIT_SECONDS,
                    settle: float = SLOT_SETTLE_SECONDS) -> None:
    """Return once the application's executors hold ``processes`` task slots; raise
    SettingError when they hold fewer after ``wait`` seconds, or after ``settle`` seconds
    without a new one (a barrier stage would wait for the missing ones for ever)."""
    started = time.monotonic()
    slots, changed = _task_slots(spark), started
    while slots < processes:
        now = time.monotonic()
        if now - started > wait or (slots > 0 and now - changed > settle):
            raise SettingError(
                f"distributed training needs {processes} task slots at once "
                f"(SRGNN_TRAIN_PROCESSES={processes}), and the executors that {master} gave "
                f"this application hold {slots} after {now - started:.0f} s: lower the "
                "processes or free cores on the cluster.")
        time.sleep(0.5)
        current = _task_slots(spark)
        if current != slots:
            slots, changed = current, time.monotonic()


def _task_slots(spark) -> int:
    """Tasks the application's executors can run at once (Spark's own count, as its barrier
    stages use)."""
    context = spark.sparkContext._jsc.sc()
    profile = context.resourceProfileManager().defaultResourceProfile()
    return int(context.maxNumConcurrentTasks(profile))


_ERROR = re.compile(r"^(?:\[rank\d+\]: )?([\w.]*(?:Error|Exception)\b.*)$", re.MULTILINE)


def _error_line(text: str) -> str:
    """The last ``SomeError: message`` line of a failed rank's output, else the text's end."""
    lines = [m.group(1) for m in _ERROR.finditer(text)
             if not m.group(1).startswith(("ChildFailedError", "torch.distributed.elastic"))]
    useful = [line for line in lines if not line.startswith("RuntimeError: Command")]
    if useful:
        return useful[-1].strip()
    return text.strip().splitlines()[-1][-500:] if text.strip() else "no output"
