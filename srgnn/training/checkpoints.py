"""A training's state between epochs, and its checkpoints.

With an output folder, every finished epoch atomically rewrites ``checkpoint.pt`` (model,
optimizer, scheduler, RNG states, epoch, best metric, history) and, when the epoch is the best
so far, ``best_model.pt``. :func:`load_checkpoint` restores all of it, refusing a checkpoint
made with settings that change what an epoch computes (``RESUMABLE_CHANGES`` lists those that
may differ).
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from srgnn.config import resolve_softmax

__all__ = ["EpochStats", "RunState", "save_checkpoint", "save_best", "load_checkpoint",
           "CHECKPOINT_NAME", "BEST_MODEL_NAME", "RESUMABLE_CHANGES", "STOP_PATIENCE",
           "STOP_LR_FLOOR", "STOP_EPOCHS"]

CHECKPOINT_NAME = "checkpoint.pt"
BEST_MODEL_NAME = "best_model.pt"

# Fields that may differ between a checkpoint and the run that resumes it: they change how
# long or how visibly the run goes, or what follows the training, not what any epoch computes.
RESUMABLE_CHANGES = {"epochs", "patience", "progress", "num_threads", "eval_batch_size",
                      "short_fallback", "short_augment", "processes", "min_improvement",
                      "lr_floor", "refit", "final_refit", "search", "search_trials",
                      "candidates"}

# Why a training ended (RunState.stop_reason, TrainResult.stop_reason).
STOP_PATIENCE = "patience"  # patience epochs without a better validation HR@K
STOP_LR_FLOOR = "lr_floor"  # the step decay brought the learning rate below lr_floor
STOP_EPOCHS = "epochs"  # every epoch of config.epochs ran


@dataclass
class EpochStats:
    """What one epoch did (``epoch`` counts from 1)."""

    epoch: int
    train_loss: float  # mean cross-entropy over the epoch's training examples
    valid_hit_rate: float  # HR@K on the validation split
    valid_mrr: float  # MRR@K on the validation split
    examples_per_second: float  # training throughput (reading + batching + step)
    learning_rate: float  # the rate used during this epoch
    train_examples: int
    seconds: float  # wall time of the epoch, validation included

    def metrics(self, k: int = 20) -> dict[str, float]:
        """Flat metric names, for logging (e.g. to MLflow)."""
        return {
            "train_loss": self.train_loss,
            f"valid_hr_at_{k}": self.valid_hit_rate,
            f"valid_mrr_at_{k}": self.valid_mrr,
            "examples_per_second": self.examples_per_second,
            "learning_rate": self.learning_rate,
        }


@dataclass
class RunState:
    epoch: int = 0  # last finished epoch
    best_epoch: int = 0
    best_hit_rate: float = -math.inf
    best_mrr: float = math.nan
    stopped_early: bool = False
    stop_reason: str = ""  # STOP_*; "" while the training goes on
    history: list[EpochStats] = field(default_factory=list)
    best_state_dict: dict[str, torch.Tensor] | None = None


def atomic_save(payload: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    os.replace(partial, path)  # readers see the old file or the new one, never half of one


def rng_states() -> dict[str, Any]:
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [name, keys.tolist(), position, has_gauss, cached],
        "python": random.getstate(),
    }


def _setrng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(out, state, config, model_config, model, optimizer, scheduler) -> None:
    atomic_save(
        {
            "config": asdict(config),
            "model_config": asdict(model_config),
            "epoch": state.epoch,
            "best_epoch": state.best_epoch,
            "best_hit_rate": state.best_hit_rate,
            "best_mrr": state.best_mrr,
            "stopped_early": state.stopped_early,
            "stop_reason": state.stop_reason,
            "history": [asdict(stats) for stats in state.history],
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_states(),
        },
        out / CHECKPOINT_NAME,
    )


def save_best(out, state, config, model_config) -> None:
    atomic_save(
        {
            "config": asdict(config),
            "model_config": asdict(model_config),
            "epoch": state.best_epoch,
            "valid_hit_rate": state.best_hit_rate,
            "valid_mrr": state.best_mrr,
            "model": state.best_state_dict,
        },
        out / BEST_MODEL_NAME,
    )


# The loss settings are compared by the loss they choose for the catalogue (softmax="auto" and
# "full" agree below the threshold; the negatives matter only to sampled softmax).
_LOSS_SETTINGS = ("softmax", "sampled_softmax_above", "negatives")


def _loss(values: dict, num_items: int) -> tuple:
    softmax = resolve_softmax(values.get("softmax", "full"), num_items,  # older: full only
                              values.get("sampled_softmax_above", 0))
    return (softmax, values.get("negatives")) if softmax == "sampled" else (softmax,)


# Settings that came after the first checkpoints, with the value an older checkpoint ran with
# (float32 only, none of the model or popularity options).
_EARLIER_VALUES = {"precision": "float32", "normalize": False, "scale": 12.0,
                   "position_embeddings": False, "dropout": 0.0, "star_node": False,
                   "attention_edges": False, "temporal_edges": False, "multitask_weight": 0.0,
                   "return_weight": 0.0,
                   "popularity_penalty": 0.0, "propensity_weighting": 0.0,
                   "propensity_clip": 10.0}


def load_checkpoint(out, config, model_config, model, optimizer, scheduler) -> RunState:
    checkpoint = torch.load(out / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    saved = {**_EARLIER_VALUES, **checkpoint["config"]}
    current = asdict(config)
    changed = sorted(
        name for name in current
        if name not in RESUMABLE_CHANGES | set(_LOSS_SETTINGS) and saved.get(name) != current[name]
    )
    if _loss(saved, model_config.num_items) != _loss(current, model_config.num_items):
        changed.append("softmax")
    # an older model_config lacks the later fields: their defaults are what it ran with
    if changed or type(model_config)(**checkpoint["model_config"]) != model_config:
        differing = ", ".join(changed) or "num_items"
        raise ValueError(
            f"the checkpoint in {out} was made with other settings ({differing} differ); "
            "resume with the same settings or train into a new output_dir."
        )
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    _setrng_states(checkpoint["rng"])
    state = RunState(
        epoch=checkpoint["epoch"],
        best_epoch=checkpoint["best_epoch"],
        best_hit_rate=checkpoint["best_hit_rate"],
        best_mrr=checkpoint["best_mrr"],
        stopped_early=checkpoint["stopped_early"],
        # Older checkpoints: only patience stopped a run early.
        stop_reason=checkpoint.get("stop_reason",
                                   STOP_PATIENCE if checkpoint["stopped_early"] else ""),
        history=[EpochStats(**stats) for stats in checkpoint["history"]],
    )
    best_path = out / BEST_MODEL_NAME
    if state.best_epoch and best_path.exists():
        best = torch.load(best_path, map_location="cpu", weights_only=True)
        state.best_state_dict = best["model"]
    return state
