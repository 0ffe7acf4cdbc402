"""Session -> graph construction, vectorised over a batch of sessions.

This is the one implementation of SR-GNN's session graph (Wu et al., AAAI 2019, section 3.2),
used by ``prepare`` inside Spark (Arrow batches), by scoring, and by the MLflow model's
``predict``: the graph a model sees in production is built by the same code it was trained on.

A batch of sessions is given the way Arrow stores a ``list<int>`` column: one flat array of
item indices (``values``) and ``offsets`` such that session ``s`` is
``values[offsets[s]:offsets[s + 1]]``. For each session the graph has

* ``nodes``: its distinct items, in increasing item-index order (as ``np.unique`` orders them
  in the reference implementation);
* ``alias``: for every click position, the index of its item in ``nodes``;
* ``edge_src`` / ``edge_dst``: the distinct directed edges ``alias[t] -> alias[t + 1]`` between
  consecutive clicks, as node indices, sorted by (src, dst). A repeated consecutive click
  ``B, B`` gives the self-loop ``B -> B``; a revisit such as ``A, B, C, B`` keeps both
  ``B -> C`` and ``C -> B``;
* ``edge_gap`` (only when the clicks' time gaps are given): for every edge, the seconds between
  its two clicks; an edge taken several times keeps the gap of its latest transition.

The gaps themselves come from the clicks' times through :func:`click_gaps`: prepare (the kept
clicks of an indexed session) and scoring (the known clicks of a session) both call it, so a
model with ``temporal_edges`` sees the same gaps at scoring as in training.

Nothing here loops over sessions in Python: every step is a whole-array numpy operation.

Example (items A=1, B=2, C=3 in the session A, B, C, B)::

    >>> g = build_graphs(np.array([1, 2, 3, 2]), np.array([0, 4]))
    >>> g.nodes_values.tolist(), g.alias_values.tolist()
    ([1, 2, 3], [0, 1, 2, 1])
    >>> list(zip(g.edge_src.tolist(), g.edge_dst.tolist()))
    [(0, 1), (1, 2), (2, 1)]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from srgnn.data.ragged import check_lists, counts_to_offsets, to_arrow

__all__ = ["SessionGraphs", "build_graphs", "click_gaps", "edge_gap_times", "graphs_to_arrow",
           "normalized_adjacency"]


@dataclass(frozen=True)
class SessionGraphs:
    """Graphs of a batch of ``S`` sessions, stored as flat arrays plus offsets (Arrow layout).

    Attributes:
        nodes_values: (total_nodes,) distinct item indices of every session, concatenated.
        nodes_offsets: (S + 1,) session ``s`` owns ``nodes_values[nodes_offsets[s]:nodes_offsets[s+1]]``.
        alias_values: (total_clicks,) node index of every click; shares the input's offsets.
        alias_offsets: (S + 1,) the input offsets.
        edge_src: (total_edges,) source node index (within its session) of every edge.
        edge_dst: (total_edges,) destination node index of every edge.
        edge_offsets: (S + 1,) session ``s`` owns edges ``edge_offsets[s]:edge_offsets[s+1]``.
        edge_gap: (total_edges,) float32 seconds between the two clicks of every edge (its
            latest transition), or ``None`` when the clicks' times were not given.
    """

    nodes_values: np.ndarray
    nodes_offsets: np.ndarray
    alias_values: np.ndarray
    alias_offsets: np.ndarray
    edge_src: np.ndarray
    edge_dst: np.ndarray
    edge_offsets: np.ndarray
    edge_gap: np.ndarray | None = None

    @property
    def num_sessions(self) -> int:
        return len(self.nodes_offsets) - 1

    def slice(self, start: int, stop: int) -> "SessionGraphs":
        """The graphs of sessions ``start:stop`` (views of the arrays, no copies)."""
        def rows(values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            begin, end = offsets[start], offsets[stop]
            return values[begin:end], offsets[start : stop + 1] - begin

        edge_src, edge_offsets = rows(self.edge_src, self.edge_offsets)
        edge_gap = None if self.edge_gap is None else rows(self.edge_gap, self.edge_offsets)[0]
        return SessionGraphs(*rows(self.nodes_values, self.nodes_offsets),
                             *rows(self.alias_values, self.alias_offsets),
                             edge_src, rows(self.edge_dst, self.edge_offsets)[0], edge_offsets,
                             edge_gap)


_TICKS_PER_SECOND = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}


def click_gaps(times, offsets) -> np.ndarray:
    """float32 seconds from the previous click of the same list to each click, 0 for every
    list's first click; a click earlier than its predecessor (times out of order) gets 0.

    This is the gap :func:`build_graphs` takes, the one definition prepare and scoring share:
    the ``times`` are those of the clicks that remain (unknown or rare items already removed),
    so an edge across a removed click gets the time between the two clicks it joins.

    Args:
        times: (total_clicks,) click times: ``datetime64`` (the difference is taken exactly
            in whole ticks of its unit, as prepare does in microseconds) or numbers of seconds.
        offsets: (S + 1,) list ``s`` is ``times[offsets[s]:offsets[s + 1]]``.

    Raises:
        ValueError: if the offsets do not describe ``times``.
    """
    times = np.asarray(times)
    _, offsets, lengths = check_lists(np.zeros(len(times), dtype=np.int64), offsets)
    if np.issubdtype(times.dtype, np.datetime64):
        unit = np.datetime_data(times.dtype)[0]
        if unit not in _TICKS_PER_SECOND:
            times, unit = times.astype("datetime64[us]"), "us"
        steps = np.diff(times.astype(np.int64)) / _TICKS_PER_SECOND[unit]
    else:
        steps = np.diff(times.astype(np.float64))
    gaps = np.zeros(len(times), dtype=np.float64)
    gaps[1:] = steps
    gaps[offsets[:-1][lengths > 0]] = 0.0  # every list's first click
    return np.maximum(gaps, 0.0).astype(np.float32)


def edge_gap_times(graphs: SessionGraphs) -> np.ndarray:
    """Click times that give the graphs' ``edge_gap`` back: ``datetime64[ns]``, each list's
    first click at 0, one per click of ``graphs.alias_values``.

    Every transition is given the gap of its edge (an edge keeps its latest transition's gap,
    so the latest one has it either way), in whole nanoseconds; :func:`click_gaps` of these
    times then builds the same graphs with the same gaps, exactly from 0.01 s up (a float32
    gap's spacing is above a nanosecond there) and within it below, where every gap lies in
    the first bucket of ``temporal_edges`` anyway. For the examples of a graph Parquet, whose
    per-click times prepare does not keep.

    Raises:
        ValueError: when the graphs have no ``edge_gap`` or a transition has no edge.
    """
    if graphs.edge_gap is None:
        raise ValueError("the graphs carry no edge_gap to take click times from.")
    alias, offsets = graphs.alias_values, graphs.alias_offsets
    lengths = np.diff(offsets)
    session_of_click = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    same_session = session_of_click[:-1] == session_of_click[1:]
    span = int(alias.max()) + 1 if len(alias) else 1
    keys = (session_of_click[:-1][same_session] * span + alias[:-1][same_session]) * span \
        + alias[1:][same_session]
    edge_session = np.repeat(np.arange(len(lengths), dtype=np.int64), np.diff(graphs.edge_offsets))
    edge_keys = (edge_session * span + graphs.edge_src) * span + graphs.edge_dst  # sorted
    edge = np.minimum(np.searchsorted(edge_keys, keys), max(len(edge_keys) - 1, 0))
    if len(keys) and (not len(edge_keys) or (edge_keys[edge] != keys).any()):
        raise ValueError("a transition between two clicks has no edge in the graphs.")
    steps = np.zeros(len(alias), dtype=np.int64)
    steps[np.flatnonzero(same_session) + 1] = np.rint(
        np.asarray(graphs.edge_gap, dtype=np.float64)[edge] * 1e9).astype(np.int64)
    # Running sums wrap past 2**63 over a long split; each list's differences stay exact.
    with np.errstate(over="ignore"):
        total = np.cumsum(steps)
        starts = np.repeat(total[offsets[:-1][lengths > 0]], lengths[lengths > 0])
        return (total - starts).astype("datetime64[ns]")


def build_graphs(values: np.ndarray, offsets: np.ndarray,
                 gaps: np.ndarray | None = None) -> SessionGraphs:
    """Build the SR-GNN graph of every session in a batch.

    Args:
        values: (total_clicks,) non-negative integer item indices, sessions concatenated.
        offsets: (S + 1,) non-decreasing, ``offsets[0] == 0`` and ``offsets[-1] == len(values)``.
            Empty sessions are allowed (they get no nodes and no edges).
        gaps: (total_clicks,) seconds from the previous click of the session to each click
            (the first click's value is not used), or ``None``: the graphs then have no
            ``edge_gap``.

    Returns:
        The :class:`SessionGraphs` of the batch.

    Raises:
        ValueError: if the offsets do not describe ``values``, an item index is negative or
            ``gaps`` is not one value per click.
    """
    values, offsets, lengths = check_lists(values, offsets)
    if gaps is not None:
        gaps = np.asarray(gaps, dtype=np.float32)
        if gaps.shape != values.shape:
            raise ValueError(f"gaps must hold one value per click ({len(values)}), got shape "
                             f"{gaps.shape}.")
    if len(values) and values.min() < 0:
        raise ValueError("item indices must be non-negative.")
    num_sessions = len(lengths)
    session_of_click = np.repeat(np.arange(num_sessions, dtype=np.int64), lengths)

    # Distinct (session, item) pairs, sorted by session then item: the nodes.
    item_span = int(values.max()) + 1 if len(values) else 1
    keys = session_of_click * item_span + values
    node_keys, inverse = np.unique(keys, return_inverse=True)
    session_of_node = node_keys // item_span
    nodes_values = node_keys % item_span
    nodes_offsets = counts_to_offsets(np.bincount(session_of_node, minlength=num_sessions))
    alias_values = inverse.reshape(-1) - nodes_offsets[session_of_click]

    # Edges between consecutive clicks of the same session, de-duplicated per session.
    same_session = session_of_click[:-1] == session_of_click[1:]
    src = alias_values[:-1][same_session]
    dst = alias_values[1:][same_session]
    session_of_edge = session_of_click[:-1][same_session]
    node_span = int(np.diff(nodes_offsets).max()) + 1 if num_sessions else 1
    edge_keys, edge_of_transition = np.unique(
        (session_of_edge * node_span + src) * node_span + dst, return_inverse=True)
    edge_dst = edge_keys % node_span
    edge_src = (edge_keys // node_span) % node_span
    session_of_unique_edge = edge_keys // (node_span * node_span)
    edge_offsets = counts_to_offsets(np.bincount(session_of_unique_edge, minlength=num_sessions))
    edge_gap = None
    if gaps is not None:  # each edge's latest transition: the largest click position
        latest = np.zeros(len(edge_keys), dtype=np.int64)
        np.maximum.at(latest, edge_of_transition.reshape(-1),
                      np.flatnonzero(same_session) + 1)  # the transition's second click
        edge_gap = gaps[latest]

    return SessionGraphs(nodes_values, nodes_offsets, alias_values, offsets, edge_src, edge_dst,
                         edge_offsets, edge_gap)


def graphs_to_arrow(graphs: SessionGraphs):
    """The graph columns of the session-graph Parquet contract, as ``list<int32>`` Arrow arrays.

    Returns a dict ``{"nodes", "alias", "edge_src", "edge_dst"}`` of ``pyarrow.ListArray``,
    with ``edge_gap`` (``list<float32>``) too when the graphs have it.
    """
    def as_list(flat: np.ndarray, offsets: np.ndarray):
        return to_arrow(flat.astype(np.int32), offsets)

    columns = {
        "nodes": as_list(graphs.nodes_values, graphs.nodes_offsets),
        "alias": as_list(graphs.alias_values, graphs.alias_offsets),
        "edge_src": as_list(graphs.edge_src, graphs.edge_offsets),
        "edge_dst": as_list(graphs.edge_dst, graphs.edge_offsets),
    }
    if graphs.edge_gap is not None:
        columns["edge_gap"] = to_arrow(graphs.edge_gap.astype(np.float32), graphs.edge_offsets)
    return columns


def normalized_adjacency(num_nodes: int, edge_src: np.ndarray, edge_dst: np.ndarray) -> np.ndarray:
    """Dense ``(n, 2n)`` matrix ``[A_in | A_out]`` of one session, as in SR-GNN.

    ``A_out[i, j] = 1[i -> j] / outdeg(i)`` and ``A_in[i, j] = 1[j -> i] / indeg(i)`` (rows of
    nodes without such edges stay zero). Meant for tests and reading; training builds the same
    matrices for a whole batch with tensor operations.
    """
    adjacency = np.zeros((num_nodes, num_nodes), dtype=np.float64)
    adjacency[np.asarray(edge_src), np.asarray(edge_dst)] = 1.0
    out_degree = adjacency.sum(axis=1, keepdims=True)
    in_degree = adjacency.sum(axis=0, keepdims=True).T
    a_out = adjacency / np.where(out_degree == 0, 1.0, out_degree)
    a_in = adjacency.T / np.where(in_degree == 0, 1.0, in_degree)
    return np.concatenate([a_in, a_out], axis=1)
