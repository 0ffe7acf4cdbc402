"""Lists of variable length as two flat arrays: ``values`` and ``offsets`` (Arrow's layout).

A batch of ``S`` lists (sessions, prefixes, neighbour lists) is one array ``values`` holding
every list's elements back to back and ``offsets`` of length ``S + 1`` such that list ``s`` is
``values[offsets[s]:offsets[s + 1]]``. Everything in the package that works on many sessions at
once (graph building, batching, the baselines, the recommender, evaluation) uses this layout
and these helpers, so that nothing loops over sessions in Python.

Example::

    >>> values, offsets = from_lists([[5, 9, 5], [], [7]])
    >>> values.tolist(), offsets.tolist()
    ([5, 9, 5, 7], [0, 3, 3, 4])
    >>> row_of_value(offsets).tolist()
    [0, 0, 0, 2]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "counts_to_offsets",
    "check_lists",
    "row_of_value",
    "gather_lists",
    "concat_lists",
    "expand_ranges",
    "position_in_group",
    "filter_values",
    "from_lists",
    "from_arrow",
    "to_arrow",
]


def counts_to_offsets(counts: np.ndarray, dtype=np.int64) -> np.ndarray:
    """(S + 1,) offsets of lists with the given (S,) lengths."""
    offsets = np.zeros(len(counts) + 1, dtype=dtype)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def check_lists(values, offsets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(values, offsets, lengths)`` as int64 arrays, after checking that ``offsets``
    describe ``values``.

    Raises:
        ValueError: for offsets that do not start at 0, end at ``len(values)`` and never
            decrease, or for values that are not one-dimensional.
    """
    values = np.asarray(values, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    if values.ndim != 1:
        raise ValueError(f"values must be one-dimensional, got shape {values.shape}.")
    if offsets.ndim != 1 or len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(values):
        raise ValueError(
            "offsets must start at 0 and end at len(values) "
            f"(got {len(offsets)} offsets for {len(values)} values)."
        )
    lengths = np.diff(offsets)
    if (lengths < 0).any():
        raise ValueError("offsets must be non-decreasing.")
    return values, offsets, lengths


def row_of_value(offsets: np.ndarray) -> np.ndarray:
    """(len(values),) index of the list each flat value belongs to."""
    return np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))


def gather_lists(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray):
    """``(values, offsets)`` of the lists ``rows`` (in that order)."""
    starts, lengths = offsets[rows], offsets[rows + 1] - offsets[rows]
    new_offsets = counts_to_offsets(lengths)
    within = np.arange(new_offsets[-1]) - np.repeat(new_offsets[:-1], lengths)
    return values[np.repeat(starts, lengths) + within], new_offsets


def concat_lists(parts: Sequence[tuple[np.ndarray, np.ndarray]]):
    """``(values, offsets)`` of several list batches one after the other."""
    values = np.concatenate([np.asarray(v) for v, _ in parts])
    offsets = [np.asarray(parts[0][1], dtype=np.int64)]
    for _, part_offsets in parts[1:]:
        offsets.append(np.asarray(part_offsets[1:], dtype=np.int64) + offsets[-1][-1])
    return values, np.concatenate(offsets)


def filter_values(values: np.ndarray, offsets: np.ndarray, keep: np.ndarray):
    """``(values, offsets)`` without the values where ``keep`` is False; every list stays
    (possibly empty), in its order."""
    counts = np.bincount(row_of_value(offsets)[keep], minlength=len(offsets) - 1)
    return values[keep], counts_to_offsets(counts)


def expand_ranges(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ranges ``[starts[q], starts[q] + lengths[q])``: the owner ``q`` and the position of
    every element, concatenated (a vectorised ``for q: for p in range(...)``)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    owner = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    first_of_owner = np.repeat(np.cumsum(lengths) - lengths, lengths)
    positions = np.arange(len(owner), dtype=np.int64) - first_of_owner + np.repeat(starts, lengths)
    return owner, positions


def position_in_group(sorted_groups: np.ndarray, num_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by group: 0-based position of each row in its group, and group sizes."""
    counts = np.bincount(sorted_groups, minlength=num_groups)
    starts = counts_to_offsets(counts)[:-1]
    return np.arange(len(sorted_groups), dtype=np.int64) - starts[sorted_groups], counts


def from_lists(lists) -> tuple[np.ndarray, np.ndarray]:
    """``(values, offsets)`` of integer lists given as a sequence of sequences or an Arrow
    list array (``ListArray``, ``LargeListArray`` or a ``ChunkedArray`` of either)."""
    if hasattr(lists, "offsets") or hasattr(lists, "combine_chunks"):
        return from_arrow(lists)
    if not isinstance(lists, (Sequence, np.ndarray)):
        lists = list(lists)
    lengths = np.fromiter((len(s) for s in lists), dtype=np.int64, count=len(lists))
    offsets = counts_to_offsets(lengths)
    if offsets[-1] == 0:
        return np.zeros(0, dtype=np.int64), offsets
    values = np.concatenate([np.asarray(s, dtype=np.int64).reshape(-1) for s in lists])
    return values, offsets


def from_arrow(column, dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
    """``(values, offsets)`` of an Arrow list column (offsets rebased to start at 0).

    ``dtype=None`` keeps the values as Arrow gives them (e.g. an object array of strings).
    """
    if hasattr(column, "combine_chunks"):  # ChunkedArray
        column = column.combine_chunks()
    offsets = np.asarray(column.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    values = column.flatten().to_numpy(zero_copy_only=False)
    if dtype is not None:
        values = np.asarray(values, dtype=dtype)
    return values, offsets - offsets[0]


def to_arrow(values: np.ndarray, offsets: np.ndarray, value_type=None):
    """A ``pyarrow.ListArray`` of ``(values, offsets)`` (int32 offsets)."""
    import pyarrow as pa

    return pa.ListArray.from_arrays(pa.array(np.asarray(offsets, dtype=np.int32)),
                                    pa.array(values, type=value_type))
