"""Training loop for SR-GNN: streamed batches, Adam, per-epoch checkpoints, early stopping.

``train`` reads the ``train`` and ``valid`` splits of the session-graph Parquet
(docs/contracts.md) with :class:`srgnn.model.reader.GraphParquetReader`, minimises the
cross-entropy over the whole catalogue with Adam (L2 penalty ``l2``, learning rate
multiplied by ``lr_decay_rate`` every ``lr_decay_step`` epochs), evaluates HR@K and MRR@K on
the validation split after every epoch, and keeps the epoch with the best validation HR@K.
An epoch counts as better only when its HR@K beats the best so far by more than
``min_improvement`` (absolute). Training stops for one of three reasons, kept as
``TrainResult.stop_reason`` and in the checkpoint: ``"patience"`` (``patience`` epochs without
a better one), ``"lr_floor"`` (the step decay has brought the learning rate below ``lr_floor``:
no further epoch starts) or ``"epochs"`` (all ``epochs`` ran). Each epoch logs one line (loss,
validation HR@K / MRR@K, examples/s, learning rate, seconds).

Checkpoints (:mod:`srgnn.training.checkpoints`): with an ``output_dir`` every finished epoch
is saved, and ``train(..., resume=True)`` continues from the last finished epoch. Since the
order of every epoch is a function of the seed and the epoch number only, and the model has
no other randomness, a resumed run produces exactly the epochs an uninterrupted run would
have produced (same thread count, same machine).

Differences from the reference code, on purpose: the learning-rate scheduler steps at the end
of an epoch, as the paper describes (the reference steps it first, so its decay comes one epoch
early: ``lr_decay_step=2`` does the same for the first four epochs; the README compares the
two); the model is selected on a validation split, never on the test set; with
``precision="auto"`` (the default) on a CPU that multiplies bfloat16 natively, the loss's three
catalogue products take bfloat16 operands with float32 accumulation (mixed precision; the
softmax, the graph network, the weights and the optimizer stay float32).

Large catalogues: with ``softmax="sampled"`` (or ``"auto"`` above ``sampled_softmax_above``
items, :meth:`TrainConfig.softmax_for`) each step scores the targets against ``negatives``
shared items drawn from the training targets' frequencies, log-Q corrected
(:mod:`srgnn.model.sampled`; always float32), and :class:`~srgnn.training.lazy_adam.LazyAdam`
updates only the embedding rows the step used, L2 decay included (decay applied to the rows
used in a step, as lazy Adam does). The draws are seeded by ``(seed, epoch)``, so resuming
stays exact. Validation ranks every item as with the full loss.

Refit: :func:`refit` trains again from the same initial weights on several splits together
(e.g. train + valid) for the number of epochs that validation chose, so that the model also
learns from the most recent days that selection had to hold out.

Example::

    from srgnn.config import TrainConfig
    from srgnn.training.loop import train
    result = train("runs/r1/graphs/train", "runs/r1/graphs/valid", num_items=43097,
                   config=TrainConfig(epochs=10), output_dir="runs/r1/model")
    print(result.best_epoch, result.history[-1])

Why this module is long: it is the whole training procedure (steps, epochs, validation, early
stopping, refit) with the hooks through which data-parallel training runs the same code
(:class:`Replicas`); split, one training would be read across several files.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from srgnn.config import SettingError, TrainConfig
from srgnn.cpu import resolve_precision
from srgnn.cpu import torch_threads as cpu_threads
from srgnn.evaluation.evaluate import metric_table
from srgnn.evaluation.metrics import ranks_from_scores
from srgnn.model.batching import GraphBatch
from srgnn.model.network import SRGNN, ModelConfig
from srgnn.model.popularity import PopularityLoss
from srgnn.model.reader import GraphParquetReader, parquet_files
from srgnn.model.sampled import NegativeSampler, sampled_loss, target_counts
from srgnn.training.checkpoints import (CHECKPOINT_NAME, STOP_EPOCHS, STOP_LR_FLOOR,
                                        STOP_PATIENCE, EpochStats, RunState, load_checkpoint,
                                        save_best, save_checkpoint)
from srgnn.training.lazy_adam import LazyAdam
from srgnn.training.memory import retain_freed_memory

__all__ = [
    "EpochStats",
    "TrainResult",
    "train",
    "refit",
    "training_step",
    "target_ranks",
    "validate",
    "Replicas",
    "refuse_sampled_softmax",
    "model_config",
    "torch_threads",
    "STOP_PATIENCE",
    "STOP_LR_FLOOR",
    "STOP_EPOCHS",
]

logger = logging.getLogger(__name__)


def model_config(config: TrainConfig, num_items: int) -> ModelConfig:
    """The :class:`ModelConfig` that ``config`` trains for a catalogue of ``num_items``."""
    return ModelConfig(num_items=num_items, hidden_size=config.hidden_size, steps=config.steps,
                       nonhybrid=config.nonhybrid, normalize=config.normalize, scale=config.scale,
                       position_embeddings=config.position_embeddings, dropout=config.dropout,
                       star_node=config.star_node, attention_edges=config.attention_edges,
                       temporal_edges=config.temporal_edges,
                       multitask_weight=config.multitask_weight,
                       return_weight=config.return_weight)


def check_graph_columns(config: TrainConfig, reader: GraphParquetReader, source) -> None:
    """Refuse, in one line, graphs without the optional column an option needs (``edge_gap``
    for temporal_edges, ``remaining`` for multitask_weight, ``returns`` for return_weight):
    folders prepared before them; and return_weight where no example has a return label (no
    session with a ``user_id``, or none old enough for its return window)."""
    needs = {"temporal_edges": ("edge_gap", config.temporal_edges),
             "multitask_weight": ("remaining", config.multitask_weight > 0),
             "return_weight": ("returns", config.return_weight > 0)}
    for option, (column, on) in needs.items():
        if on and not reader.has_column(column):
            raise SettingError(f"{option} needs the {column} column, which the graphs in {source} "
                             "lack (prepared before it): run srgnn prepare again.")
    if config.return_weight > 0 and reader.known_values("returns") == 0:
        raise SettingError(f"return_weight needs examples whose user is known, but no example in "
                           f"{source} has a return label: the input has no user_id, or every "
                           "user's session ends within return_days of the last click; set "
                           "return_weight to 0.")


def torch_threads(config: TrainConfig) -> int:
    """The torch threads of a training (:func:`srgnn.cpu.torch_threads`)."""
    return cpu_threads(config.num_threads)


@dataclass
class TrainResult:
    """The outcome of :func:`train`."""

    config: TrainConfig
    model_config: ModelConfig
    best_epoch: int  # epoch (from 1) with the best validation HR@K
    best_valid_hit_rate: float
    best_valid_mrr: float  # MRR@K of the best epoch
    history: list[EpochStats]
    best_state_dict: dict[str, torch.Tensor]
    stopped_early: bool  # True when patience or the learning-rate floor ended it before config.epochs
    output_dir: Path | None = None
    stop_reason: str = STOP_EPOCHS  # STOP_PATIENCE, STOP_LR_FLOOR or STOP_EPOCHS

    def best_model(self) -> SRGNN:
        """A fresh :class:`SRGNN` holding the best epoch's weights, in eval mode."""
        model = SRGNN(self.model_config)
        model.load_state_dict(self.best_state_dict)
        return model.eval()


def training_step(
    model: SRGNN, optimizer: torch.optim.Optimizer, batch: GraphBatch, precision: str = "float32",
    sampler: NegativeSampler | None = None, popularity: PopularityLoss | None = None,
) -> float:
    """One optimizer step on ``batch``; returns the batch's mean cross-entropy.

    ``precision`` is the operand type of the catalogue products (:meth:`SRGNN.loss`). With a
    ``sampler`` the loss is the sampled softmax (:func:`srgnn.model.sampled.sampled_loss`),
    whose table gradient is sparse (use the optimizer of :func:`_make_optimizer` for it).
    ``popularity``: the penalty and example weights against popularity bias
    (:mod:`srgnn.model.popularity`; the sampled loss takes the weights only).
    """
    optimizer.zero_grad(set_to_none=True)
    if sampler is None:
        if popularity is None:
            loss = model.loss(batch, precision)  # cross-entropy over all N items
        else:
            loss = model.loss(batch, precision, popularity)
    else:  # the target against K shared negatives
        weights = None if popularity is None else popularity.weights(batch.targets)
        loss = sampled_loss(model, batch, sampler, weights=weights)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@torch.inference_mode()
def target_ranks(model: SRGNN, batches) -> tuple[np.ndarray, np.ndarray]:
    """1-based rank of every target among all items, and the prefix lengths.

    Ranks are ``1 +`` the number of items scored strictly higher than the target
    (:func:`srgnn.evaluation.metrics.ranks_from_scores`).
    """
    was_training = model.training
    model.eval()
    ranks, lengths = [], []
    try:
        for batch in batches:
            scores = model(batch)  # (B, N)
            ranks.append(ranks_from_scores(scores, batch.targets.numpy()))
            lengths.append(batch.prefix_lengths.numpy())
    finally:
        model.train(was_training)
    if not ranks:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(ranks), np.concatenate(lengths)


def _validation(model: SRGNN, reader: GraphParquetReader, k: int) -> dict:
    ranks, lengths = target_ranks(model, reader.batches())
    return metric_table(ranks, lengths, k)


class Replicas:
    """How the processes of one training share it; this default is one process doing it all.

    :class:`srgnn.training.distributed.DataParallel` is the one for several processes (PyTorch
    DDP): each steps on its part of every batch and the gradients are averaged. These methods
    are the places where the loop lets it in.
    """

    writes = True  # this process writes the checkpoints (the others only read them to resume)
    world_size = 1  # the processes that share the training
    sampled_softmax = True  # the loop may train with sampled softmax (refuse_sampled_softmax)

    def wrap(self, model: SRGNN):
        """What :func:`training_step` steps (its ``loss``): the model itself here."""
        return model

    def shard(self, reader: GraphParquetReader):
        """The reader of this process's examples (``batches(epoch)`` and ``len``)."""
        return reader

    def epoch_totals(self, loss: float, examples: int) -> tuple[float, int]:
        """An epoch's mean training loss and examples over all processes, from this one's."""
        return loss, examples

    def validation(self, model: SRGNN, reader: GraphParquetReader, k: int) -> dict:
        """The validation figures of ``model`` over the whole split."""
        return _validation(model, reader, k)


def refuse_sampled_softmax(config: TrainConfig, num_items: int, processes: int) -> None:
    """Raise :class:`~srgnn.config.SettingError` (a ValueError) when ``config`` trains with
    sampled softmax on ``num_items`` items: a training shared by ``processes`` processes uses
    the full softmax. The sampled loss's item-table gradient is sparse and reaches the loss
    outside the model's ``forward``, which DDP's gradient averaging does not see."""
    if config.softmax_for(num_items) == "sampled":
        raise SettingError(
            f"distributed training (processes={processes}) uses the full softmax, and these "
            f"settings choose sampled softmax for {num_items:,} items: set softmax to full "
            "(--softmax full, SRGNN_SOFTMAX=full) or train in one process.")


def refuse_popularity_penalty(config: TrainConfig, num_items: int) -> None:
    """Raise :class:`~srgnn.config.SettingError` when ``config`` asks for a popularity penalty
    and trains ``num_items`` items with sampled softmax (the penalty weighs every item's
    predicted probability, which sampled softmax never computes)."""
    if config.popularity_penalty > 0 and config.softmax_for(num_items) == "sampled":
        raise SettingError(
            f"popularity_penalty needs the full softmax, and these settings choose sampled "
            f"softmax for {num_items:,} items: set softmax to full (--softmax full, "
            "SRGNN_SOFTMAX=full) or drop the penalty.")


def validate(model: SRGNN, source, *, k: int = 20, batch_size: int = 500,
             max_examples: int | None = None) -> dict:
    """The validation figures (:func:`srgnn.evaluation.evaluate.metric_table`) of ``model`` on
    a session-graph Parquet split, ranking every target under the full score matrix."""
    reader = GraphParquetReader(source, batch_size, shuffle=False, max_examples=max_examples)
    return _validation(model, reader, k)


def train(
    train_data: str | Path | Sequence[str | Path],
    valid_data: str | Path | None,
    num_items: int,
    config: TrainConfig | None = None,
    *,
    output_dir: str | Path | None = None,
    resume: bool = False,
    on_epoch_end: Callable[[EpochStats], None] | None = None,
    replicas: Replicas | None = None,
) -> TrainResult:
    """Train SR-GNN and return the best epoch's weights with the whole history.

    Args:
        train_data: the training split of the session-graph Parquet (file or folder), or a
            list of Parquet files.
        valid_data: the validation split; selects the epoch and drives early stopping.
            ``None`` or a split without rows: no validation, every epoch runs and the last
            one is returned (its metrics are NaN).
        num_items: catalogue size ``N`` (item indices ``1..N``), e.g.
            :attr:`srgnn.data.runfolder.RunFolder.num_items`.
        config: training settings; defaults to ``TrainConfig()``.
        output_dir: folder for ``checkpoint.pt`` and ``best_model.pt``; ``None`` keeps
            everything in memory (no resume possible).
        resume: continue from ``output_dir/checkpoint.pt`` when it exists (a fresh start
            otherwise). The checkpoint's settings must match ``config`` except for those in
            :data:`srgnn.training.checkpoints.RESUMABLE_CHANGES`; the softmax settings are
            compared by the loss they choose for ``num_items``
            (:func:`~srgnn.training.checkpoints.load_checkpoint`).
        on_epoch_end: called with each epoch's :class:`EpochStats` after its checkpoint is
            written (e.g. to log metrics as they come).
        replicas: how the processes of a data-parallel training share it (:class:`Replicas`;
            :class:`srgnn.training.distributed.DataParallel`); ``None``: this process alone.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: for ``resume`` without ``output_dir``, a checkpoint made with other
            settings, an empty training split, or sampled softmax with ``replicas`` of several
            processes (:func:`refuse_sampled_softmax`).
    """
    config = config or TrainConfig()
    shape = model_config(config, num_items)
    if resume and output_dir is None:
        raise ValueError("resume=True needs the output_dir that holds the checkpoint.")
    out = Path(output_dir) if output_dir is not None else None

    retain_freed_memory()  # no page faults for the step's large buffers (srgnn.training.memory)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads(config))
    try:
        return _train(train_data, valid_data, config, shape, out, resume, on_epoch_end, replicas)
    finally:
        torch.set_num_threads(previous_threads)


def refit(
    sources: Sequence[str | Path],
    num_items: int,
    epochs: int,
    config: TrainConfig | None = None,
    *,
    output_dir: str | Path | None = None,
    resume: bool = False,
    on_epoch_end: Callable[[EpochStats], None] | None = None,
    replicas: Replicas | None = None,
) -> TrainResult:
    """Train from the initial weights on all ``sources`` together for exactly ``epochs`` epochs.

    The usual second step after :func:`train` chose the epoch count on validation: the same
    settings, seed and learning-rate schedule, with the validation days added to the training
    data (``sources = [train, valid]``). Nothing is held out, so the result has no validation
    figures (NaN) and its ``best_epoch`` is the last one; evaluate it on a split that none of
    ``sources`` contains.

    Args:
        sources: Parquet files or folders of the session-graph splits to train on.
        num_items: catalogue size ``N``.
        epochs: the number of epochs (e.g. ``TrainResult.best_epoch`` of the selection run).
        config: training settings (``epochs`` and ``patience`` are ignored).
        output_dir: checkpoint folder (use another one than the selection run's).
        resume: continue an interrupted refit from ``output_dir``.
        on_epoch_end, replicas: as for :func:`train`.

    Raises:
        ValueError: for ``epochs < 1`` or sources without any example.
    """
    if epochs < 1:
        raise ValueError(f"refit needs at least one epoch, got {epochs}.")
    config = replace(config or TrainConfig(), epochs=epochs, max_valid_examples=None)
    files = parquet_files(*sources)
    if not files:
        raise ValueError(f"no Parquet file in {', '.join(map(str, sources))}.")
    return train(files, None, num_items, config, output_dir=output_dir, resume=resume,
                 on_epoch_end=on_epoch_end, replicas=replicas)


def _train(train_data, valid_data, config, shape, out, resume, on_epoch_end,
           replicas=None) -> TrainResult:
    replicas = replicas or Replicas()
    train_reader = GraphParquetReader(
        train_data,
        config.batch_size,
        shuffle=True,
        seed=config.seed,
        shuffle_buffer=config.shuffle_buffer,
        max_examples=config.max_examples_per_epoch,
    )
    valid_reader = None
    if valid_data is not None:
        valid_reader = GraphParquetReader(
            valid_data, config.eval_batch_size, shuffle=False,
            max_examples=config.max_valid_examples,
        )
        if valid_reader.num_examples == 0:
            logger.warning("the validation split %s is empty: the last epoch is kept", valid_data)
            valid_reader = None
    if train_reader.num_examples == 0:
        raise ValueError(f"the training split {train_data} holds no examples.")
    check_graph_columns(config, train_reader, train_data)
    if valid_reader is not None:
        check_graph_columns(replace(config, multitask_weight=0.0, return_weight=0.0),
                            valid_reader, valid_data)

    torch.manual_seed(config.seed)  # the initial weights
    model = SRGNN(shape)
    softmax = config.softmax_for(shape.num_items)
    if not replicas.sampled_softmax:
        refuse_sampled_softmax(config, shape.num_items, replicas.world_size)
    sampler = popularity = None
    refuse_popularity_penalty(config, shape.num_items)
    if softmax == "sampled" or config.popularity_penalty > 0 or config.propensity_weighting > 0:
        counts = target_counts(train_data, shape.num_items)
        popularity = PopularityLoss.from_counts(counts, config.popularity_penalty,
                                                config.propensity_weighting, config.propensity_clip)
    if softmax == "sampled":
        sampler = NegativeSampler.from_counts(counts, config.negatives)
        logger.info("sampled softmax: %d negatives a step over %d items, lazy Adam on the "
                    "item table", config.negatives, shape.num_items)
    optimizer = _make_optimizer(model, config, softmax)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=config.lr_decay_step, gamma=config.lr_decay_rate
    )
    state = RunState()
    if resume and out is not None and (out / CHECKPOINT_NAME).exists():
        state = load_checkpoint(out, config, shape, model, optimizer, scheduler)
        logger.info("resuming after epoch %d from %s", state.epoch, out / CHECKPOINT_NAME)
    trained, shard = replicas.wrap(model), replicas.shard(train_reader)

    while state.epoch < config.epochs and not state.stopped_early:
        epoch = state.epoch + 1
        started = time.perf_counter()
        learning_rate = optimizer.param_groups[0]["lr"]
        loss, examples, train_seconds = _train_epoch(trained, optimizer, shard, epoch, config,
                                                     sampler, popularity)
        loss, examples = replicas.epoch_totals(loss, examples)
        if valid_reader is None:
            hit_rate = mrr = math.nan
        else:
            figures = replicas.validation(model, valid_reader, config.top_k)
            hit_rate, mrr = figures[f"HR@{config.top_k}"], figures[f"MRR@{config.top_k}"]
        scheduler.step()
        stats = EpochStats(
            epoch=epoch,
            train_loss=loss,
            valid_hit_rate=hit_rate,
            valid_mrr=mrr,
            examples_per_second=examples / train_seconds if train_seconds > 0 else math.nan,
            learning_rate=learning_rate,
            train_examples=examples,
            seconds=time.perf_counter() - started,
        )
        state.epoch = epoch
        state.history.append(stats)
        if (valid_reader is None or state.best_epoch == 0
                or hit_rate > state.best_hit_rate + config.min_improvement):
            state.best_epoch, state.best_hit_rate, state.best_mrr = epoch, hit_rate, mrr
            state.best_state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if out is not None and replicas.writes:
                save_best(out, state, config, shape)
        state.stop_reason = _stop_reason(state, config, learning_rate,
                                         optimizer.param_groups[0]["lr"])
        state.stopped_early = state.stop_reason in (STOP_PATIENCE, STOP_LR_FLOOR)
        validation = ("no validation split" if valid_reader is None else
                      f"valid HR@{config.top_k} {100 * hit_rate:.2f}%, "
                      f"MRR@{config.top_k} {100 * mrr:.2f}%")
        logger.info(
            "epoch %d/%d: loss %.4f, %s, %.0f examples/s, lr %.2g, %.0f s%s",
            epoch, config.epochs, loss, validation, stats.examples_per_second, learning_rate,
            stats.seconds, _STOP_NOTES.get(state.stop_reason, ""),
        )
        if out is not None and replicas.writes:
            save_checkpoint(out, state, config, shape, model, optimizer, scheduler)
        if on_epoch_end is not None:
            on_epoch_end(stats)

    if state.best_state_dict is None:  # resumed a run that had already finished
        state.best_state_dict = model.state_dict()
    return TrainResult(
        config=config,
        model_config=shape,
        best_epoch=state.best_epoch,
        best_valid_hit_rate=state.best_hit_rate,
        best_valid_mrr=state.best_mrr,
        history=list(state.history),
        best_state_dict=state.best_state_dict,
        stopped_early=state.stopped_early,
        output_dir=out,
        stop_reason=state.stop_reason or STOP_EPOCHS,
    )


_STOP_NOTES = {STOP_PATIENCE: " (early stop: patience)",
               STOP_LR_FLOOR: " (early stop: the learning rate falls below lr_floor)"}


def _stop_reason(state: RunState, config: TrainConfig, used_lr: float, next_lr: float) -> str:
    """Why the training ends after ``state.epoch`` (``""``: it goes on). ``used_lr`` is the
    epoch's learning rate, ``next_lr`` the next epoch's after the decay."""
    if state.epoch >= config.epochs:
        return STOP_EPOCHS
    if state.epoch - state.best_epoch >= config.patience:
        return STOP_PATIENCE
    # Only the decay stops a run: a learning rate set below the floor still trains. The
    # tolerance keeps 1e-3 * 0.1 * 0.1 (rounded) at the floor 1e-5, not under it.
    if next_lr < used_lr and next_lr < config.lr_floor * (1 - 1e-9):
        return STOP_LR_FLOOR
    return ""


def _make_optimizer(model: SRGNN, config: TrainConfig, softmax: str = "full") -> torch.optim.Optimizer:
    if softmax == "sampled":  # sparse table gradient: only the rows a step used move (and decay)
        return LazyAdam(model.parameters(), lr=config.lr, weight_decay=config.l2)
    # The fused kernel updates the (N + 1, d) embedding table in one pass instead of several
    # (bench/bench_train_speed.py times both).
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.l2, fused=True)


def _train_epoch(model, optimizer, reader: GraphParquetReader, epoch: int, config: TrainConfig,
                 sampler: NegativeSampler | None = None, popularity: PopularityLoss | None = None):
    from tqdm.auto import tqdm

    model.train()
    total_loss, examples = 0.0, 0
    started = time.perf_counter()
    with tqdm(
        total=len(reader), desc=f"epoch {epoch}", unit="batch",
        disable=True if not config.progress else None,  # None: only on a terminal, not in log files
        leave=False, dynamic_ncols=True,
    ) as bar:
        # Epochs count from 1; the shuffle order of epoch e is seeded by (seed, e - 1).
        precision = resolve_precision(config.precision)
        if sampler is not None:
            sampler.reseed(config.seed, epoch)  # the epoch's draws: a resume repeats them
        for step, batch in enumerate(reader.batches(epoch - 1)):
            loss = training_step(model, optimizer, batch, precision, sampler, popularity)
            total_loss += loss * batch.batch_size
            examples += batch.batch_size
            bar.update(1)
            if step % 20 == 0:
                rate = examples / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(loss=f"{loss:.3f}", ex_s=f"{rate:.0f}", refresh=False)
    seconds = time.perf_counter() - started
    return total_loss / max(examples, 1), examples, seconds
