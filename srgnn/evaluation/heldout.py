"""Held-out examples in raw item ids: what every evaluation scores a recommender on.

A :class:`HeldOut` holds prefixes (lists of raw item ids), the raw id of each prefix's true
next item, the prefix lengths, and the catalogue over which the list-level measures (coverage,
popularity bias) are computed. It comes from a split of a prepare run folder
(:func:`from_run`) or from raw held-out clicks with a file of targets (:func:`from_clicks`),
read exactly as scoring reads a day. Because examples are raw ids, models with different
vocabularies (a new candidate and an older champion) and the baselines are judged on exactly
the same examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from srgnn.data.runfolder import RunFolder
from srgnn.data.vocab import Vocabulary

__all__ = ["HeldOut", "from_run", "from_clicks"]


@dataclass(frozen=True)
class HeldOut:
    """``S`` examples: a prefix of raw item ids and the raw id of its next item.

    Attributes:
        sessions: pyarrow ``list<string>`` array of the prefixes, click order.
        targets: (S,) object array of raw target ids.
        prefix_lengths: (S,) int64 clicks of each prefix (for the by-length figures).
        catalogue: the items the list-level measures are taken over.
        absent: (S,) bool, True where the prefix has no session at all (a miss whatever is
            recommended), or ``None``.
        description: where the examples come from, for tables.
        times: pyarrow list array of each prefix click's timestamp, laid out like
            ``sessions``, for a ``temporal_edges`` model's gaps (as in scoring): raw held-out
            clicks' own times, or for a run folder's examples times rebuilt from the graphs'
            ``edge_gap`` (:meth:`RunFolder.example_times`); ``None`` when neither exists
            (every gap 0).
    """

    sessions: object
    targets: np.ndarray
    prefix_lengths: np.ndarray
    catalogue: Vocabulary
    absent: np.ndarray | None = None
    description: str = ""
    times: object = None

    def __len__(self) -> int:
        return len(self.targets)


def from_run(run: RunFolder | str, split: str | None = None, *,
             max_examples: int | None = None) -> HeldOut:
    """The examples of ``graphs/<split>`` of a run folder (default: its held-out split), in raw
    ids through the run's vocabulary; the catalogue is the run's.

    ``max_examples`` keeps the first that many in the split's order: the examples the training
    loop validates on under ``TrainConfig.max_valid_examples`` (``None``: all of them). Graphs
    with ``edge_gap`` give the prefixes click times with those gaps (:attr:`HeldOut.times`).
    """
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples must be positive or None, got {max_examples}.")
    run = run if isinstance(run, RunFolder) else RunFolder(run)
    split = split or run.held_out_split()
    sessions, targets, lengths = run.raw_examples(split)
    times = run.example_times(split)
    description = f"{split} split of {run.path}"
    if max_examples is not None and max_examples < len(targets):
        sessions, targets, lengths = (sessions.slice(0, max_examples), targets[:max_examples],
                                      lengths[:max_examples])
        times = None if times is None else times.slice(0, max_examples)
        description = f"first {max_examples} examples of the {description}"
    return HeldOut(sessions, targets, lengths, run.vocabulary, description=description,
                   times=times)


def from_clicks(spark, clicks: str, targets: str, catalogue: Vocabulary,
                fmt: str = "auto", encoding: str = "utf-8") -> HeldOut:
    """Held-out prefixes given as raw clicks (one session per prefix) and a
    ``session_id,item_id`` CSV of their true next items.

    The clicks are read and sessionised as scoring reads a day; a target whose session has no
    valid click is kept as an absent example (a miss).

    Raises:
        InputError: for an unreadable targets file or one without the two columns.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    from pyspark.sql import functions as F

    from srgnn.data import etl
    from srgnn.data.readers import InputError, read_clicks, spark_input_errors

    try:
        truth = pacsv.read_csv(targets, convert_options=pacsv.ConvertOptions(
            column_types={"session_id": pa.string(), "item_id": pa.string()}))
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"{targets}: cannot be read as a session_id,item_id CSV "
                         f"({str(exc).splitlines()[0]})") from None
    missing = [c for c in ("session_id", "item_id") if c not in truth.column_names]
    if missing:
        raise InputError(f"{targets}: missing required column(s) {', '.join(missing)}")
    with spark_input_errors(clicks):
        raw = read_clicks(spark, clicks, fmt, encoding)
        sessions = etl.sessionize(raw.clicks).select(
            "session_id", F.transform("events", lambda e: e["item_id"]).alias("items"),
            F.transform("events", lambda e: e["ts"]).alias("times")).toArrow()

    position = {sid: i for i, sid in enumerate(sessions.column("session_id").to_pylist())}
    rows = np.array([position.get(sid, -1) for sid in truth.column("session_id").to_pylist()],
                    dtype=np.int64)
    found = rows >= 0
    # a null index takes a null (empty) prefix for a target without a session
    picks = pa.array(np.where(found, rows, 0), pa.int64(), mask=~found)
    picked = sessions.take(picks)
    items = picked.column("items").combine_chunks()
    lengths = np.diff(np.asarray(items.offsets))
    return HeldOut(items, np.asarray(truth.column("item_id").to_pylist(), dtype=object), lengths,
                   catalogue, absent=~found, description=f"{clicks} with targets {targets}",
                   times=picked.column("times").combine_chunks())
