"""Small session sets with a known structure, and their session-graph Parquet, for tests and
benchmarks (no Spark).

:func:`clustered_sessions` generates sessions a sequence model can learn and popularity cannot;
:func:`write_graph_parquet` writes the ``graphs/<split>/`` layout of docs/contracts.md from plain
session lists: every prefix of a session becomes one row that predicts the session's next item,
and the graph columns come from :func:`srgnn.data.graph.build_graphs`, the same code ``prepare``
uses. Sessions are lists of item indices (``1..N``) or ``(values, offsets)`` flat arrays
(:mod:`srgnn.data.ragged`)::

    sessions = clustered_sessions(num_items=200, num_sessions=2000)
    train, valid = split_sessions(sessions)
    write_graph_parquet(tmp / "graphs" / "train", train, files=2, row_group_size=500)
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from srgnn.data.graph import build_graphs, graphs_to_arrow
from srgnn.data.ragged import counts_to_offsets, expand_ranges, from_lists, to_arrow

__all__ = [
    "sessions_to_arrays",
    "expand_prefixes",
    "graph_table",
    "write_graph_parquet",
    "clustered_sessions",
    "split_sessions",
]


def sessions_to_arrays(sessions: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """A list of sessions (lists of item indices) as flat int64 ``values`` and ``offsets``."""
    return from_lists(sessions)


def expand_prefixes(values: np.ndarray, offsets: np.ndarray):
    """Every (prefix, next item) pair of every session, vectorised.

    Returns:
        ``(prefix_values, prefix_offsets, targets, session_of_example)``: a session of length
        ``k`` gives ``k - 1`` examples with prefixes of length ``1 .. k - 1``.
    """
    values = np.asarray(values, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    examples_per_session = np.maximum(np.diff(offsets) - 1, 0)
    # example j of a session has the prefix length j + 1: ranges starting at 1
    session_of_example, prefix_lengths = expand_ranges(
        np.ones(len(examples_per_session), dtype=np.int64), examples_per_session)
    session_start = offsets[:-1][session_of_example]
    targets = values[session_start + prefix_lengths]
    _, positions = expand_ranges(session_start, prefix_lengths)
    return values[positions], counts_to_offsets(prefix_lengths), targets, session_of_example


def graph_table(
    sessions: Sequence[Sequence[int]] | tuple[np.ndarray, np.ndarray],
    session_ids: Sequence[str] | None = None,
) -> pa.Table:
    """The session-graph table (contract columns) of all prefixes of ``sessions``.

    Args:
        sessions: a list of sessions, or ``(values, offsets)`` flat arrays.
        session_ids: raw id of every session; default ``"s0", "s1", ...``.
    """
    values, offsets = sessions if isinstance(sessions, tuple) else sessions_to_arrays(sessions)
    prefix_values, prefix_offsets, targets, session_of_example = expand_prefixes(values, offsets)
    columns = graphs_to_arrow(build_graphs(prefix_values, prefix_offsets))
    num_sessions = len(offsets) - 1
    ids = np.array(
        session_ids if session_ids is not None else [f"s{i}" for i in range(num_sessions)],
        dtype=object,
    )
    return pa.table(
        {
            "session_id": pa.array(ids[session_of_example], type=pa.string()),
            "prefix": to_arrow(prefix_values.astype(np.int32), prefix_offsets),
            "nodes": columns["nodes"],
            "alias": columns["alias"],
            "edge_src": columns["edge_src"],
            "edge_dst": columns["edge_dst"],
            "target": pa.array(targets.astype(np.int32)),
            "prefix_length": pa.array(np.diff(prefix_offsets).astype(np.int32)),
        }
    )


def write_graph_parquet(
    folder: str | Path,
    sessions: Sequence[Sequence[int]] | tuple[np.ndarray, np.ndarray],
    *,
    files: int = 1,
    row_group_size: int | None = None,
) -> Path:
    """Write the graph rows of ``sessions`` as ``folder/part-XXXXX.parquet`` files.

    Returns the folder. ``files`` splits the rows into that many files and ``row_group_size``
    sets rows per row group, so streaming and shuffling across files and row groups get tested.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = graph_table(sessions)
    bounds = np.linspace(0, table.num_rows, files + 1).astype(int)
    for index in range(files):
        part = table.slice(bounds[index], bounds[index + 1] - bounds[index])
        pq.write_table(part, folder / f"part-{index:05d}.parquet", row_group_size=row_group_size)
    (folder / "_SUCCESS").touch()
    return folder


def clustered_sessions(
    num_items: int = 200,
    num_sessions: int = 2000,
    *,
    cluster_size: int = 10,
    follow_probability: float = 0.8,
    mean_length: float = 5.0,
    seed: int = 0,
) -> list[list[int]]:
    """Sessions with a structure a sequence model can learn and popularity cannot.

    Items ``1..num_items`` fall into clusters of ``cluster_size`` consecutive indices, each
    arranged in a cycle. A session starts at a random item (skewed towards low indices, so
    that popularity is informative but weak) and then, with ``follow_probability``, moves
    to the next item of its cluster's cycle, otherwise to a random item of the same cluster.
    Lengths are ``2 + Poisson(mean_length - 2)``.
    """
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, num_items + 1) ** 0.5
    starts = rng.choice(num_items, size=num_sessions, p=weights / weights.sum())  # 0-based
    lengths = 2 + rng.poisson(max(mean_length - 2.0, 0.0), size=num_sessions)
    sessions = []
    for start, length in zip(starts, lengths):
        cluster_base = (start // cluster_size) * cluster_size
        members = min(cluster_size, num_items - cluster_base)
        position = start - cluster_base
        session = [cluster_base + position + 1]
        for _ in range(length - 1):
            if rng.random() < follow_probability:
                position = (position + 1) % members
            else:
                position = int(rng.integers(members))
            session.append(cluster_base + position + 1)
        sessions.append(session)
    return sessions


def split_sessions(sessions: list, valid_share: float = 0.2) -> tuple[list, list]:
    """The first ``1 - valid_share`` of the sessions for training, the rest for validation."""
    cut = int(round(len(sessions) * (1.0 - valid_share)))
    return sessions[:cut], sessions[cut:]
