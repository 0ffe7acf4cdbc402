"""Model selection on validation: an Optuna search over a small declared space of training
settings, within a time budget.

``srgnn train --search 2h`` (``TrainConfig.search``, DAG param ``search``) runs it before the
usual training: each trial trains a model on the run folder's train split with the settings
it draws from :data:`SPACE` (the other settings are the user's) and is scored by its best
validation HR@K, the figure that selects the epoch. The search then hands the best trial's
settings to the usual training, which trains, refits, registers and gates that configuration
as it would any other.

* The first trial is the user's own configuration, so the search never returns something
  that validation shows worse than what was asked for.
* Trials are drawn by Optuna's TPE sampler, seeded by ``TrainConfig.seed``.
* A trial whose validation HR@K at some epoch is below the median of earlier trials at the
  same epoch is stopped there (Optuna's ``MedianPruner``, from the second epoch on, after three
  complete trials).
* The budget bounds the wall time of the search: no trial starts after it, and the trial
  running when it ends stops after its current epoch and counts with the epochs it trained.
  ``TrainConfig.search_trials`` caps the number of trials as well.
* Every trial is an MLflow child run of the training's run (run name ``trial-N``, its drawn
  settings as params, its epochs' metrics, tag ``search.state``: ``complete``, ``pruned`` or
  ``cut`` by the budget); the whole search (every trial's settings, state, epochs, best HR@K
  and MRR@K, seconds) is returned by :func:`search` and kept by the training as
  ``search.json`` in the run folder and the MLflow run.

Example::

    from srgnn.config import TrainConfig
    from srgnn.data.runfolder import RunFolder
    from srgnn.training.search import search
    found = search(RunFolder("var/runs/r1"), TrainConfig(epochs=8), budget_seconds=3600)
    print(found.config, found.trials[found.best]["valid_hit_rate"])
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace

from srgnn.config import SettingError, TrainConfig, parse_budget

__all__ = ["SPACE", "SearchResult", "search", "parse_budget", "draw", "trial_table"]

logger = logging.getLogger(__name__)

# The declared space: setting -> how a trial draws it. ("float", low, high, log), ("int", low,
# high), ("choice", values), ("bool",). A setting that only matters with another is drawn only
# then (``scale`` with ``normalize``).
SPACE: dict[str, tuple] = {
    "lr": ("float", 3e-4, 3e-3, True),
    "lr_decay_step": ("int", 1, 4),
    "lr_decay_rate": ("choice", (0.1, 0.3)),
    "hidden_size": ("choice", (100, 128)),
    "steps": ("int", 1, 3),
    "normalize": ("bool",),
    "scale": ("float", 8.0, 20.0, False),
    "dropout": ("float", 0.0, 0.3, False),
    "position_embeddings": ("bool",),
    "star_node": ("bool",),
}
_REQUIRES = {"scale": "normalize"}

@dataclass
class SearchResult:
    """What :func:`search` found.

    Attributes:
        config: the best trial's configuration (the user's, with the drawn settings).
        best: index in ``trials`` of the best trial.
        trials: per trial: ``number``, ``params`` (drawn), ``state`` (``complete``, ``pruned``,
            ``cut``), ``epochs``, ``valid_hit_rate`` and ``valid_mrr`` (its best epoch's),
            ``seconds``, ``run_id`` (its MLflow child run, when tracked).
        seconds: the search's wall time.
        budget_seconds: the budget it was given.
    """

    config: TrainConfig
    best: int
    trials: list[dict]
    seconds: float
    budget_seconds: float

    def as_dict(self) -> dict:
        return {"best": self.best, "chosen": {name: getattr(self.config, name) for name in SPACE},
                "budget_seconds": self.budget_seconds, "seconds": round(self.seconds, 1),
                "trials": self.trials}


def space(base: TrainConfig) -> dict[str, tuple]:
    """:data:`SPACE` widened to hold ``base``'s own values (its first trial)."""
    out = {}
    for name, spec in SPACE.items():
        value = getattr(base, name)
        if spec[0] in ("float", "int"):
            out[name] = (spec[0], min(spec[1], value), max(spec[2], value), *spec[3:])
        elif spec[0] == "choice":
            out[name] = ("choice", tuple(sorted(set(spec[1]) | {value})))
        else:
            out[name] = spec
    return out


def draw(trial, base: TrainConfig) -> dict:
    """The settings ``trial`` (an Optuna trial) draws from :func:`space`."""
    params: dict = {}
    for name, spec in space(base).items():
        needs = _REQUIRES.get(name)
        if needs is not None and not params.get(needs, getattr(base, needs)):
            continue
        kind = spec[0]
        if kind == "float":
            low, high = spec[1], spec[2]
            log = spec[3] and low > 0
            params[name] = trial.suggest_float(name, low, high, log=log)
        elif kind == "int":
            params[name] = trial.suggest_int(name, spec[1], spec[2])
        elif kind == "choice":
            params[name] = trial.suggest_categorical(name, list(spec[1]))
        else:
            params[name] = trial.suggest_categorical(name, [False, True])
    return params


def _base_params(base: TrainConfig) -> dict:
    """The user's own configuration as a trial of the space (enqueued first)."""
    params = {name: getattr(base, name) for name in SPACE}
    if not base.normalize:
        params.pop("scale")
    return params


class _OutOfTime(Exception):
    """The budget ended during a trial."""


def search(run, base: TrainConfig, budget_seconds: float, *, max_trials: int | None = None,
           tracked: bool = True) -> SearchResult:
    """Search :data:`SPACE` on ``run``'s (a :class:`~srgnn.data.runfolder.RunFolder`)
    validation split for ``budget_seconds`` (module docstring). With ``tracked``, each trial
    is an MLflow child run of the active run."""
    import optuna

    from srgnn.training.loop import train

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.monotonic()
    deadline = started + budget_seconds
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=base.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    study.enqueue_trial(_base_params(base))
    records: list[dict] = []
    train_dir, valid_dir = run.graphs("train"), run.graphs("valid")

    def objective(trial) -> float:
        params = draw(trial, base)
        config = replace(base, **params, progress=False, search="", processes=1)
        record = {"number": trial.number, "params": params, "state": "complete", "epochs": 0,
                  "valid_hit_rate": math.nan, "valid_mrr": math.nan, "seconds": 0.0}
        records.append(record)
        clock = time.monotonic()
        best = [math.nan, math.nan]

        def epoch_end(stats) -> None:
            record["epochs"] = stats.epoch
            if not stats.valid_hit_rate <= best[0]:  # the first, a better one, or NaN so far
                best[:] = [stats.valid_hit_rate, stats.valid_mrr]
            if tracked:
                import mlflow

                mlflow.log_metrics(stats.metrics(base.top_k), step=stats.epoch)
            trial.report(stats.valid_hit_rate, stats.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
            if time.monotonic() >= deadline:
                raise _OutOfTime()

        with _child_run(tracked, trial.number, params) as run_id:
            record["run_id"] = run_id
            try:
                train(train_dir, valid_dir, run.num_items, config, on_epoch_end=epoch_end)
            except optuna.TrialPruned:
                record["state"] = "pruned"
            except _OutOfTime:
                record["state"] = "cut"
            finally:
                record.update(valid_hit_rate=best[0], valid_mrr=best[1],
                              seconds=round(time.monotonic() - clock, 1))
                _tag_state(tracked, record["state"])
        logger.info("search trial %d (%s, %d epochs, %.0f s): valid HR@%d %.4f  %s",
                    trial.number, record["state"], record["epochs"], record["seconds"],
                    base.top_k, best[0], params)
        if record["state"] == "pruned":
            raise optuna.TrialPruned()
        return best[0]

    def out_of_time(study, trial) -> None:
        if time.monotonic() >= deadline or (max_trials and len(records) >= max_trials):
            study.stop()

    study.optimize(objective, n_trials=max_trials, callbacks=[out_of_time],
                   catch=(), gc_after_trial=True)
    scored = [i for i, r in enumerate(records) if r["state"] != "pruned"
              and not math.isnan(r["valid_hit_rate"])]
    if not scored:
        raise SettingError(f"the search scored no trial in {budget_seconds:.0f} s on validation "
                           "(every trial pruned or without a figure): give it a larger budget.")
    best = max(scored, key=lambda i: (records[i]["valid_hit_rate"], records[i]["valid_mrr"], -i))
    chosen = replace(base, **records[best]["params"])
    seconds = time.monotonic() - started
    logger.info("search: %d trials in %.0f s (budget %.0f s); best trial %d, valid HR@%d %.4f: %s",
                len(records), seconds, budget_seconds, records[best]["number"], base.top_k,
                records[best]["valid_hit_rate"], records[best]["params"])
    return SearchResult(config=chosen, best=best, trials=records, seconds=seconds,
                        budget_seconds=budget_seconds)


class _child_run:
    """An MLflow child run of the active run for one trial (nothing when not tracked)."""

    def __init__(self, tracked: bool, number: int, params: dict) -> None:
        self.tracked, self.number, self.params = tracked, number, params
        self._run = None

    def __enter__(self) -> str | None:
        if not self.tracked:
            return None
        import mlflow

        self._run = mlflow.start_run(run_name=f"trial-{self.number}", nested=True)
        mlflow.log_params({f"search.{k}": v for k, v in self.params.items()})
        mlflow.set_tag("search.trial", str(self.number))
        return self._run.info.run_id

    def __exit__(self, *exc) -> None:
        if self._run is not None:
            import mlflow

            mlflow.end_run("FAILED" if exc[0] is not None else "FINISHED")


def _tag_state(tracked: bool, state: str) -> None:
    if tracked:
        import mlflow

        mlflow.set_tag("search.state", state)


def trial_table(result: SearchResult, k: int) -> str:
    """The trials as a text table, best first."""
    order = sorted(range(len(result.trials)),
                   key=lambda i: -(result.trials[i]["valid_hit_rate"]
                                   if not math.isnan(result.trials[i]["valid_hit_rate"]) else -1))
    lines = [f"{'trial':>5}  {'state':8}  {'epochs':>6}  {f'HR@{k}':>7}  {f'MRR@{k}':>7}  "
             f"{'seconds':>7}  settings"]
    for i in order:
        r = result.trials[i]
        lines.append(f"{r['number']:>5}  {r['state']:8}  {r['epochs']:>6}  "
                     f"{100 * r['valid_hit_rate']:>7.2f}  {100 * r['valid_mrr']:>7.2f}  "
                     f"{r['seconds']:>7.0f}  {_settings_text(r['params'])}")
    return "\n".join(lines)


def _settings_text(params: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())
