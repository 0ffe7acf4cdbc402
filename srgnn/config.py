"""Every setting a user can change, in one table: name, type, default, environment variable, help.

The table is the fields of frozen dataclasses, each field carrying an :class:`Option` in
its metadata:

* :class:`Settings`: where things live (home folder, MLflow, warehouse, Spark master);
* :class:`Source`: the raw clicks to read (path and format);
* :class:`PrepareConfig`: sessionisation, filters and the time split;
* :class:`TrainConfig`: the model and its training;
* :class:`ScoreConfig`: the nightly scoring;
* :class:`Deployment`: how the Airflow DAGs run (schedules, inputs, retries, cluster mode);
* :class:`Runtime`: process-level switches (memory retention, Spark's class archive).

``python -m srgnn.config`` prints every setting with its variable, default and meaning.

Everything else is built from it: the command line's flags (:mod:`srgnn.cli`), the Airflow
DAGs' params (``dags/_common.py``), the ``jobs/*.py`` entry points (which call the command
line). A value comes from, in order: a flag or param, the field's environment variable
(:func:`env_value`; empty counts as unset), the field's default. Library functions take these
objects as arguments and never read the environment themselves.

This module imports nothing of the package and creating a config has no side effects.

Why this module is long: it is the whole settings table, one field with its help text per
setting, together with the few functions that read it; split, a reader would need two files
to see what one setting is.
"""

from __future__ import annotations

import functools
import math
import os
import re
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

K = 20  # list length: top-K recommendations, HR@K / MRR@K, the champion gate
FORMATS = ("auto", "csv", "json", "parquet", "yoochoose", "diginetica", "otto")
# Arithmetic of training (TrainConfig.precision) and scoring: "auto" is bfloat16 where the CPU
# multiplies it natively, float32 elsewhere (srgnn.cpu.resolve_precision).
PRECISIONS = ("auto", "float32", "bfloat16")
ENGINES = ("local", "spark")
# How scoring finds the top K (srgnn.serving.predict.Scorer): every item, an approximate index,
# or the index above a catalogue size.
TOPK_INDEXES = ("auto", "exact", "ivf")
# Training loss over the catalogue (TrainConfig.softmax): "auto" is the full cross-entropy up to
# TrainConfig.sampled_softmax_above items and sampled softmax above (resolve_softmax).
SOFTMAX = ("auto", "full", "sampled")
CANDIDATES = ("auto", "srgnn")  # TrainConfig.candidates (srgnn.evaluation.selection)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class SettingError(ValueError):
    """A setting's value (from a flag, a param or the environment) is not acceptable."""


@dataclass(frozen=True)
class Option:
    """How one config field meets the user: filled in by :func:`options`.

    ``name`` is the field name (``min_item_support``); ``flag`` the command-line form
    (``--min-item-support``); ``env`` the environment variable (``SRGNN_MIN_ITEM_SUPPORT``) or
    ``None``; ``type`` one of ``int, float, bool, str, Path``; ``optional`` when ``None`` is
    a valid value; ``choices`` and the bounds the accepted values. The bounds mean what the
    JSON Schema keywords of the same names mean (``minimum <= value``, ``exclusive_minimum <
    value``, ``value <= maximum``, ``value < exclusive_maximum``): :func:`check` enforces them
    for the command line, the environment and the dataclasses (:func:`check_fields`), and the
    DAG params carry them as their schema, so that every way in refuses the same values.
    """

    help: str
    env: str | None = None
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None
    exclusive_maximum: float | None = None
    cli: bool = True  # offered as a flag and a DAG param (False: internal or test-only)
    name: str = ""
    type: type = str
    optional: bool = False
    default: Any = None
    required: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_BUDGET_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_budget(text: str) -> float:
    """Seconds of a time budget written ``900``, ``900s``, ``30m``, ``2h`` or ``1.5h``; empty: 0.

    Raises:
        ValueError: for anything else, naming the accepted forms.
    """
    if not text or not text.strip():
        return 0.0
    match = _BUDGET.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"search must be a positive duration such as 900s, 30m or 2h, "
                         f"not {text!r}.")
    return float(match.group(1)) * _BUDGET_UNITS[match.group(2).lower()]


_BOUNDS = ("minimum", "exclusive_minimum", "maximum", "exclusive_maximum")


def option(default=MISSING, *, help: str, env: str | None | bool = True,
           choices: tuple[str, ...] | None = None, cli: bool = True, **limits: float):
    """A dataclass field with its :class:`Option`. ``env=True`` derives ``SRGNN_<NAME>``;
    ``limits`` are among ``minimum``, ``exclusive_minimum``, ``maximum``,
    ``exclusive_maximum``."""
    unknown = set(limits) - set(_BOUNDS)
    if unknown:
        raise TypeError(f"option() got unknown bound(s) {', '.join(sorted(unknown))}")
    meta = {"option": Option(help=help, env=env if isinstance(env, str) or env is None else None,
                             choices=choices, cli=cli, **limits),
            "derive_env": env is True}
    return field(default=default, metadata=meta)


def bounds(opt: Option) -> dict[str, float]:
    """The bounds ``opt`` sets, by name (those of :class:`Option`, which are JSON Schema's)."""
    return {name: getattr(opt, name) for name in _BOUNDS if getattr(opt, name) is not None}


def _within(opt: Option, value) -> bool:
    """Whether ``value`` is within the bounds of ``opt`` (NaN never is, where bounds exist)."""
    return ((opt.minimum is None or value >= opt.minimum)
            and (opt.exclusive_minimum is None or value > opt.exclusive_minimum)
            and (opt.maximum is None or value <= opt.maximum)
            and (opt.exclusive_maximum is None or value < opt.exclusive_maximum))


def _range_text(opt: Option) -> str:
    """The bounds of ``opt`` in words: ``at least 1``, ``positive``, ``in [0, 1)``."""
    low = opt.minimum if opt.minimum is not None else opt.exclusive_minimum
    high = opt.maximum if opt.maximum is not None else opt.exclusive_maximum
    if low is not None and high is not None:
        return (f"in {'[' if opt.minimum is not None else '('}{low:g}, "
                f"{high:g}{']' if opt.maximum is not None else ')'}")
    if opt.minimum is not None:
        return f"at least {low:g}"
    if low is not None:
        return "positive" if low == 0 else f"greater than {low:g}"
    return f"at most {high:g}" if opt.maximum is not None else f"less than {high:g}"


def options(cls) -> list[Option]:
    """The :class:`Option` of every field of the config class ``cls``, in field order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        meta = f.metadata.get("option")
        if meta is None:
            continue
        kind, optional = _base_type(hints[f.name])
        env = f"SRGNN_{f.name.upper()}" if f.metadata.get("derive_env") else meta.env
        out.append(Option(help=meta.help, env=env, choices=meta.choices, **bounds(meta),
                          cli=meta.cli, name=f.name, type=kind, optional=optional,
                          default=None if f.default is MISSING else f.default,
                          required=f.default is MISSING))
    return out


def _base_type(hint) -> tuple[type, bool]:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args:  # X | None
        return args[0], True
    return hint, False


def parse(opt: Option, text: str, source: str | None = None):
    """The value of ``opt`` written as ``text`` (an environment variable, a flag)."""
    where = source or (f"${opt.env}" if opt.env else opt.flag)
    text = text.strip()
    if opt.optional and text.lower() in ("", "none", "null"):
        return None
    try:
        if opt.type is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError
        value = opt.type(text)
    except ValueError:
        kind = {bool: "true or false", int: "an integer", float: "a number"}.get(opt.type, "text")
        raise SettingError(f"{where} must be {kind}, not {text!r}.") from None
    return check(opt, value, where)


def check(opt: Option, value, where: str | None = None):
    """``value`` if it is acceptable for ``opt``; raises :class:`SettingError` otherwise."""
    where = where or opt.name
    if value is None:
        return value
    if opt.choices is not None and value not in opt.choices:
        raise SettingError(f"{where} must be one of {', '.join(opt.choices)}, not {value!r}.")
    if not _within(opt, value):
        raise SettingError(f"{where} must be {_range_text(opt)}, not {value!r}.")
    return value


def check_fields(config) -> None:
    """Raise :class:`SettingError` for the first field of the config dataclass instance
    ``config`` outside its choices or bounds (the checks of :func:`check`, by field name)."""
    for opt in _checked(type(config)):
        check(opt, getattr(config, opt.name))


@functools.cache
def _checked(cls) -> tuple[Option, ...]:
    return tuple(opt for opt in options(cls) if opt.choices is not None or bounds(opt))


def env_value(opt: Option, environ=None):
    """The value of ``opt`` from its environment variable, or its default when unset."""
    environ = os.environ if environ is None else environ
    text = environ.get(opt.env, "") if opt.env else ""
    if text.strip() == "":
        return opt.default
    return parse(opt, text)


def from_env(cls, environ=None, **overrides):
    """A ``cls`` from the environment; ``overrides`` that are not ``None`` win.

    Raises:
        SettingError: for a value that does not parse or is out of range (also when the
            dataclass itself refuses the combination).
    """
    values = {}
    for opt in options(cls):
        given = overrides.get(opt.name)
        if given is not None:
            values[opt.name] = check(opt, given)
        elif not opt.required:
            values[opt.name] = env_value(opt, environ)
    extra = {k: v for k, v in overrides.items() if k not in values and v is not None}
    try:
        return cls(**values, **extra)
    except (TypeError, ValueError) as exc:
        raise SettingError(str(exc)) from None


def from_values(cls, values: dict):
    """A ``cls`` from a mapping that may hold other keys too (command-line flags, DAG params):
    its own fields from ``values``, the rest from the environment."""
    names = {opt.name for opt in options(cls)}
    return from_env(cls, **{k: v for k, v in values.items() if k in names})


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Where things live. Embedded defaults keep everything under one home folder."""

    home: Path = option(Path("var"), help="Project home: prepared runs, MLflow store (SQLite), "
                                          "warehouse (DuckDB).")
    mlflow_tracking_uri: str | None = option(
        None, env="MLFLOW_TRACKING_URI", cli=False,
        help="MLflow tracking server or database URI (default: sqlite:///<home>/mlflow.db).")
    warehouse_url: str | None = option(
        None, help="SQLAlchemy-style warehouse URL (default: duckdb:///<home>/warehouse.duckdb).")
    warehouse_lock_wait_seconds: float = option(
        120.0, minimum=0, cli=False,
        help="How long a warehouse writer waits for a lock another process holds (a DuckDB "
             "file open elsewhere, even read-only; a PostgreSQL table another load holds), "
             "trying again with growing pauses and logging each try, before it fails; 0: "
             "fail at once.")
    spark_master: str = option("local[*]", help="Spark master URL (spark://host:7077, yarn, k8s://...).",
                               cli=False)
    spark_driver_memory: str = option(
        "2g", cli=False,
        help="Memory of the Spark driver JVM that srgnn starts (every master; under "
             "spark-submit its --driver-memory decides).")
    spark_executor_memory: str | None = option(
        None, cli=False, help="Memory of each Spark executor on a cluster (default: Spark's, 1g).")
    spark_python: str | None = option(
        None, cli=False,
        help="Python that Spark's Python workers run, on every master (default: this "
             "interpreter, right where the executors share this machine's files; on a cluster, "
             "the Python of the environment shipped to the executors).")
    topk_index: str = option(
        "auto", cli=False, choices=TOPK_INDEXES,
        help="How scoring finds each session's top K: exact (every item), ivf (an approximate "
             "faiss index of the item embeddings, its recall against exact measured and "
             "reported), auto (ivf above SRGNN_APPROXIMATE_ABOVE items). Evaluation is exact.")
    approximate_above: int = option(
        100_000, minimum=0, cli=False,
        help="Catalogue size above which topk_index auto uses the approximate index.")
    approximate_nprobe: int | None = option(
        None, minimum=1, cli=False,
        help="Inverted lists the approximate index probes per session (unset: the fewest "
             "reaching SRGNN_APPROXIMATE_RECALL on the first sessions scored).")
    approximate_recall: float = option(
        0.95, minimum=0.01, maximum=1, cli=False,
        help="Top-K recall against exact that the chosen nprobe reaches on the sample sessions.")
    recall_sample: int = option(
        1000, minimum=1, cli=False,
        help="Sessions scored exactly too by the approximate index: the first ones choose "
             "nprobe, the next ones measure the recall reported by the run.")

    def __post_init__(self) -> None:
        if not isinstance(self.home, Path):
            object.__setattr__(self, "home", Path(self.home))
        check_fields(self)

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "Settings":
        return from_env(cls, environ, **overrides)

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> str:
        return (self.home / "mlartifacts").resolve().as_uri()

    @property
    def warehouse(self) -> str:
        if self.warehouse_url:
            return self.warehouse_url
        return f"duckdb:///{(self.home / 'warehouse.duckdb').resolve()}"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"


@dataclass(frozen=True)
class Source:
    """Raw clicks to read."""

    clicks: str = option(help="Raw clicks: a file, a folder or a glob (CSV, CSV.gz, JSON Lines, "
                              "Parquet).", env=None)
    format: str = option("auto", env=None, choices=FORMATS,
                         help="Input format; 'auto' decides from the file name and first line "
                              "when unambiguous.")
    encoding: str = option("utf-8", help="Character encoding of text input (CSV, JSON Lines); "
                                         "a row that does not decode is quarantined as "
                                         "bad_encoding, never altered.")


@dataclass(frozen=True)
class PrepareConfig:
    """Sessionisation, filtering and split settings (reference SR-GNN preprocessing)."""

    min_item_support: int = option(5, minimum=1, help="Drop items with fewer clicks than this "
                                                       "(over all days).")
    min_session_length: int = option(2, minimum=2, cli=False,
                                     help="Sessions shorter than this are dropped (before and "
                                          "after the item filter).")
    test_days: int = option(7, minimum=0, help="Sessions ending in the last N days are the test "
                                               "split (0: none).")
    valid_days: int = option(7, minimum=0, help="The N days before the test window are the "
                                                "validation split (0: none).")
    max_prefix_length: int = option(100, minimum=1,
                                    help="An example's prefix keeps at most the last N clicks "
                                         "before its target, so prepare's cost stays linear in "
                                         "the clicks of very long (bot) sessions; the cut is "
                                         "counted in summary.json.")
    return_days: int = option(7, minimum=1,
                              help="A session of a known user_id 'returns' (return_weight's "
                                   "label) when the user's next session starts within N days "
                                   "of its last click; no label for anonymous sessions and "
                                   "where the N days run past the input's last click.")

    def __post_init__(self) -> None:
        if self.min_item_support < 1:
            raise ValueError("min_item_support must be at least 1.")
        if self.min_session_length < 2:
            raise ValueError("min_session_length must be at least 2 (a session needs a next item).")
        if self.test_days < 0 or self.valid_days < 0:
            raise ValueError("test_days and valid_days must be non-negative.")


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting. Defaults: the SR-GNN paper's values, except three model options
    that validation favoured on every data set measured (README, "Model options"):
    ``normalize`` (scale 12), ``position_embeddings`` and ``star_node``; turning the three off
    gives the paper's model."""

    hidden_size: int = option(100, minimum=1, help="d: item embedding and node state width.")
    steps: int = option(1, minimum=1, help="Propagation steps of the gated graph cell.")
    nonhybrid: bool = option(False, help="Session embedding from attention only (no last-click "
                                         "term).")
    normalize: bool = option(True, help="NISER: L2-normalised item embeddings (graph input and "
                                         "scoring) and session vector; scores are scale x cosine.")
    scale: float = option(12.0, exclusive_minimum=0,
                          help="With normalize: the factor of the cosine scores (12-16 in the "
                               "literature); positive.")
    position_embeddings: bool = option(True, help="Learned reversed-position embeddings (from the "
                                                   "last click, the 50th on shared) added to the "
                                                   "click states of the attention readout.")
    dropout: float = option(0.0, minimum=0, exclusive_maximum=1,
                            help="Dropout on the item embeddings fed to the graph cell and on "
                                 "the session vector, in training only; in [0, 1).")
    star_node: bool = option(True, help="SGNN-HN: a star node per session, linked to every item, "
                                         "updated by attention each step, and a highway gate "
                                         "between the embeddings and the propagated states.")
    attention_edges: bool = option(False, help="Graph attention in the gated cell: each message "
                                               "weighed by learned attention over the node's in- "
                                               "(out-) neighbours instead of 1 / degree.")
    temporal_edges: bool = option(False, help="Edge weights also by a learned weight of the "
                                              "log2-bucketed seconds between the edge's two "
                                              "clicks (graphs from a prepare that writes "
                                              "edge_gap; scoring takes the gaps from the "
                                              "clicks' times, 0 where none are given).")
    multitask_weight: float = option(0.0, minimum=0, help="Weight of an auxiliary loss (Poisson, "
                                                          "on the session's clicks after the "
                                                          "target) from the session vector; 0 = "
                                                          "off. Scores do not use it.")
    return_weight: float = option(0.0, minimum=0, help="Weight of an auxiliary loss (binary "
                                                       "cross-entropy, on whether the session's "
                                                       "user comes back within return_days) "
                                                       "from the session vector, over the "
                                                       "examples whose user_id is known; 0 = "
                                                       "off. Scores do not use it.")
    batch_size: int = option(100, minimum=1, help="Training examples per optimizer step.")
    lr: float = option(0.001, exclusive_minimum=0, help="Adam learning rate.")
    lr_decay_step: int = option(3, minimum=1, help="Multiply the learning rate by lr_decay_rate "
                                                   "every this many epochs.")
    lr_decay_rate: float = option(0.1, exclusive_minimum=0, maximum=1,
                                  help="Step decay factor, in (0, 1].")
    l2: float = option(1e-5, minimum=0, help="L2 penalty (Adam weight_decay, added to the "
                                             "gradient as in the reference code).")
    epochs: int = option(30, minimum=1, help="Upper bound on training epochs.")
    patience: int = option(5, minimum=1, help="Stop after this many epochs without a better "
                                              "validation HR@K.")
    min_improvement: float = option(0.0005, minimum=0,
                                    help="An epoch counts as better (it is kept, and the "
                                         "patience starts again) only when its validation HR@K "
                                         "beats the best so far by more than this, absolute "
                                         "(0.0005 = 0.05 point).")
    lr_floor: float = option(1e-5, minimum=0,
                             help="No epoch starts once the step decay has brought the "
                                  "learning rate below this (0: no floor).")
    refit: bool = option(True, help="After validation chose the epoch count, train again from "
                                    "the same initial weights on train + valid for that many "
                                    "epochs and register that model (without a test split this "
                                    "happens after the gate, which then judges the selection "
                                    "model on valid).")
    final_refit: bool = option(True, help="With refit: when the gate promotes the candidate, "
                                          "train once more on every day (train + valid + test) "
                                          "for the same epochs, register that model and make it "
                                          "the champion.")
    top_k: int = option(K, minimum=1, cli=False, env=None,
                        help="K of the validation metrics (HR@K selects the epoch).")
    seed: int = option(2019, help="Seeds the initial weights and the shuffling of every epoch.")
    num_threads: int = option(0, minimum=0, env=None,
                              help="torch CPU threads of this training; 0 = SRGNN_NUM_THREADS, "
                                   "or the cores this process may use.")
    processes: int = option(1, minimum=1, env="SRGNN_TRAIN_PROCESSES",
                            help="Training processes: 1 trains in this process; N > 1 trains "
                                 "with PyTorch DDP (gloo, CPU) in N processes that "
                                 "TorchDistributor starts on the Spark master (one task slot "
                                 "each on a cluster), each reading its shard of the training "
                                 "split; rank 0 logs and registers.")
    max_examples_per_epoch: int | None = option(None, minimum=1, help="Cap on training examples "
                                                                      "per epoch (quick runs).")
    max_valid_examples: int | None = option(None, minimum=1, cli=False,
                                            help="Cap on validation examples (quick runs).")
    eval_batch_size: int = option(500, minimum=1, cli=False,
                                  help="Examples per batch when scoring the validation split.")
    shuffle_buffer: int = option(1_000_000, minimum=1, cli=False,
                                 help="Rows shuffled together (~150 B each).")
    progress: bool = option(True, cli=False, help="Show a progress bar per epoch on a terminal.")
    short_fallback: bool = option(True, help="Answer 1-3 click sessions with item-KNN where "
                                             "validation by length shows it better.")
    short_augment: int = option(3, minimum=0, help="Neighbours to prepend to a 1-3 click session "
                                                   "(the items co-clicked most with its clicks in "
                                                   "training) before SR-GNN scores it, for the "
                                                   "lengths where validation by length shows it "
                                                   "better; 0 = off.")
    candidates: str = option("auto", choices=CANDIDATES,
                             help="What the run may register: auto = the best on validation of "
                                  "SR-GNN, the baselines and their blend; srgnn = SR-GNN only.")
    search: str = option("", help="Time budget (900s, 30m, 2h) of a search on validation over "
                                  "the learning-rate schedule, hidden size, steps and the model "
                                  "options before training (Optuna; srgnn.training.search); "
                                  "empty: train these settings as given.")
    search_trials: int | None = option(None, minimum=1, help="With search: at most this many "
                                                             "trials.")
    precision: str = option("auto", choices=PRECISIONS,
                            help="Operands of the loss's catalogue products; auto = bfloat16 where "
                                 "the CPU multiplies it natively (float32 accumulation, softmax "
                                 "and weights).")
    softmax: str = option("auto", choices=SOFTMAX,
                          help="Training loss: full = cross-entropy over every item; sampled = "
                               "the target against shared negatives drawn from training-target "
                               "frequency^0.5, log-Q corrected, with lazy (sparse) embedding "
                               "updates; auto = sampled above sampled_softmax_above items. "
                               "Validation always ranks every item.")
    sampled_softmax_above: int = option(100_000, minimum=1,
                                        help="softmax=auto trains with sampled softmax when the "
                                             "catalogue has more items than this.")
    negatives: int = option(2048, minimum=1,
                            help="Sampled softmax: negatives drawn per step, shared by the "
                                 "batch's examples.")
    popularity_penalty: float = option(0.0, minimum=0,
                                       help="Against popularity bias: adds lambda * the expected "
                                            "normalised log-popularity of the predicted "
                                            "distribution to the loss (0 = off). Full softmax "
                                            "only: refused with sampled softmax.")
    propensity_weighting: float = option(0.0, minimum=0, maximum=1,
                                         help="Against popularity bias: weighs each training "
                                              "example by (target count + 1)^-p, clipped, mean 1 "
                                              "per batch (p in [0, 1]; 0 = off). Both softmaxes.")
    propensity_clip: float = option(10.0, minimum=1,
                                    help="With propensity_weighting: no weight above this many "
                                         "times the median weight of the training examples.")

    def __post_init__(self) -> None:
        # Each field's range and choices are in its option (the command line, the environment
        # and the DAG params check the same ones); the combinations follow.
        check_fields(self)
        if parse_budget(self.search) > 0 and self.processes > 1:  # (raises when malformed)
            raise ValueError("search trains its trials in one process: use processes 1 (or "
                             "search after choosing the settings with one process).")
        if self.popularity_penalty > 0 and self.softmax == "sampled":
            raise ValueError("popularity_penalty needs the full softmax (it weighs every item's "
                             "probability): use softmax full, or popularity_penalty 0.")
        if (self.popularity_penalty > 0 or self.propensity_weighting > 0) and self.processes > 1:
            raise ValueError("popularity_penalty and propensity_weighting train in one process: "
                             "use processes 1.")

    def softmax_for(self, num_items: int) -> str:
        """``"full"`` or ``"sampled"``: the loss this config trains with on ``num_items`` items."""
        return resolve_softmax(self.softmax, num_items, self.sampled_softmax_above)


def resolve_softmax(softmax: str, num_items: int, above: int) -> str:
    """The training loss of ``softmax`` (:data:`SOFTMAX`) on ``num_items`` items: ``"full"`` or
    ``"sampled"`` (``"auto"``: sampled when ``num_items > above``)."""
    if softmax == "auto":
        return "sampled" if num_items > above else "full"
    return softmax


@dataclass(frozen=True)
class ScoreConfig:
    """The nightly scoring of one day."""

    model_uri: str = option("models:/srgnn@champion",
                            help="MLflow model URI or a saved recommender folder.")
    top_k: int = option(K, minimum=1, help="Recommendations per session.")
    engine: str = option("local", env="SRGNN_SCORING_ENGINE", choices=ENGINES,
                         help="local: batched torch in this process; spark: mapInArrow on the "
                              "Spark cluster.")


@dataclass(frozen=True)
class Deployment:
    """How the Airflow DAGs run (read when a DAG file is parsed; not command-line flags)."""

    execution_mode: str = option("local", choices=("local", "cluster"), cli=False,
                                 help="local: tasks call the package in-process (Spark local); "
                                      "cluster: Spark jobs go through spark-submit.")
    spark_conn_id: str = option("spark_default", cli=False,
                                help="Airflow connection of the Spark master (cluster mode).")
    jobs_dir: str | None = option(None, cli=False, help="Folder of the spark-submit entry points "
                                                        "(default: jobs/ beside dags/).")
    spark_py_files: str | None = option(None, cli=False, help="Zip of the package for cluster "
                                                              "nodes that do not have it installed.")
    spark_archive: str | None = option(
        None, cli=False,
        help="The executors' Python environment for cluster mode: an archive built by `make "
             "spark-env` (a path or URL spark-submit can read), shipped with --archives and "
             "unpacked as ./environment on each executor (default: executors run "
             "SRGNN_SPARK_PYTHON, else this interpreter's path).")
    spark_submit: str | None = option(
        None, cli=False,
        help="Path of the spark-submit command of cluster-mode tasks (default: the Airflow "
             "connection's spark-binary extra, a name looked up on PATH; when no spark-submit "
             "is on PATH, the one installed with PySpark beside this Python).")
    training_schedule: str = option("@weekly", cli=False,
                                    help="Cron expression or preset of the training DAG; none "
                                         "for triggered runs only.")
    scoring_schedule: str = option("@daily", cli=False,
                                   help="Cron expression or preset of the scoring DAG; none for "
                                        "triggered runs only.")
    training_clicks: str | None = option(None, cli=False, help="Default clicks of the training "
                                                               "DAG (default: <home>/clicks).")
    training_format: str = option("auto", choices=FORMATS, cli=False,
                                  help="Default input format of the training DAG.")
    scoring_clicks: str | None = option(None, cli=False,
                                        help="Folder holding one ds=YYYY-MM-DD/ folder per day "
                                             "(default: <home>/clicks).")
    scoring_format: str = option("auto", choices=FORMATS, cli=False,
                                 help="Input format of the days to score.")
    task_retries: int = option(2, minimum=0, cli=False,
                               help="Retries of a task that failed for a reason other than the "
                                    "user's input (a lost connection, a killed worker).")
    scoring_wait_minutes: int = option(360, minimum=0, cli=False,
                                       help="How long the scoring DAG waits for a day's clicks "
                                            "to arrive before it fails.")
    scoring_poke_minutes: int = option(5, minimum=1, cli=False,
                                       help="How often the scoring DAG looks for the day's clicks.")

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "Deployment":
        return from_env(cls, environ, **overrides)


@dataclass(frozen=True)
class Runtime:
    """Process-level switches (read where they act; not command-line flags)."""

    num_threads: int = option(0, minimum=0, cli=False,
                              help="torch CPU threads of every srgnn process; 0 = an explicit "
                                   "OMP_NUM_THREADS, else the cores this process may use (its "
                                   "CPU affinity and cgroup quota).")
    retain_freed_memory: bool = option(True, cli=False,
                                       help="Training keeps freed memory for reuse instead of "
                                            "page-faulting it back every step (false: glibc's "
                                            "defaults).")
    spark_class_archive: str | None = option(None, cli=False,
                                             help="Local Spark's class archive: unset for the "
                                                  "one built at install, off, or a path.")

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "Runtime":
        return from_env(cls, environ, **overrides)


TABLES = (Settings, Source, PrepareConfig, TrainConfig, ScoreConfig, Deployment, Runtime)


def markdown_table() -> str:
    """Every setting with an environment variable, as a Markdown table (``python -m
    srgnn.config``; the README's configuration table)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for cls in TABLES:
        for opt in options(cls):
            if opt.env:
                default = "unset" if opt.default is None else opt.default
                rows.append(f"| `{opt.env}` | `{default}` | {opt.help} |")
    return "\n".join(rows)


def config_dict(config) -> dict:
    """A flat, JSON-friendly dict of a config dataclass (used for MLflow params and summaries)."""
    out = {}
    for f in fields(config):
        value = getattr(config, f.name)
        out[f.name] = str(value) if isinstance(value, Path) else value
    return out


def json_safe(value):
    """NaN -> None and numpy scalars -> Python, recursively (for JSON artifacts and XCom)."""
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy scalar
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


__all__ = ["K", "FORMATS", "PRECISIONS", "ENGINES", "Option", "SettingError", "Settings", "Source",
           "PrepareConfig", "TrainConfig", "ScoreConfig", "Deployment", "Runtime", "TABLES",
           "markdown_table", "options", "env_value", "from_env", "TOPK_INDEXES",
           "from_values", "parse", "check", "check_fields", "bounds", "config_dict",
           "json_safe", "SOFTMAX", "resolve_softmax"]


if __name__ == "__main__":
    print(markdown_table())
