"""Mini-batches of session graphs for SR-GNN: :func:`collate` and the two batch layouts.

:func:`collate` turns the graphs of ``B`` sessions (a :class:`srgnn.data.graph.SessionGraphs`,
i.e. flat arrays plus offsets, exactly what the Parquet columns hold) into a
:class:`GraphBatch` of torch tensors. Every step is a whole-array numpy operation: there is no
Python loop over sessions, and the adjacency is built from ``edge_src`` / ``edge_dst`` /
offsets with ``bincount`` and fancy indexing. :class:`srgnn.model.reader.GraphParquetReader`
streams such batches out of the session-graph Parquet.

Layout: block-diagonal, not padded
----------------------------------
A batch keeps the nodes of all its sessions in one flat list (``T`` nodes in total) and the
edges as global node indices with their normalisation weights: the sparse, block-diagonal
form of SR-GNN's ``[A_in | A_out]``. The gated graph cell then aggregates with
``index_add`` over the ``E`` edges instead of ``bmm`` over padded ``(B, n, n)`` matrices, and
its linear maps run over the ``T`` real nodes instead of ``B * n`` padded ones. Only the
click sequence used by the attention readout is padded, to ``(B, L)``.
:meth:`GraphBatch.to_padded` gives the padded dense form (``(B, n)`` items and ``(B, n, n)``
matrices) for tests, reading and comparison; the model accepts both.

A batch's longest session has several times the distinct items of the mean one, so the padded
form does several times the graph-cell work (``bench/bench_train_speed.py`` measures both; the
README has the figures). ``index_add`` is used rather than a sparse block-diagonal matrix
because it needs no sparse tensor to be built and coalesced per batch, and its transpose (the
backward) is the same gather and scatter with the routes swapped.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from srgnn.data.graph import SessionGraphs

__all__ = [
    "GraphBatch",
    "PaddedGraphBatch",
    "collate",
]


class _TensorBatch:
    """What both batch layouts share: the batch size and moving every tensor to a device."""

    @property
    def batch_size(self) -> int:
        return int(self.alias.shape[0])

    def to(self, device: torch.device | str):
        """The same batch with every tensor on ``device``."""
        return type(self)(**{f.name: _moved(getattr(self, f.name), device) for f in fields(self)})


def _moved(tensor: torch.Tensor | None, device):
    return None if tensor is None else tensor.to(device)


@dataclass
class GraphBatch(_TensorBatch):
    """A batch of ``B`` session graphs in block-diagonal form (``T`` nodes, ``E`` edges in all).

    Node ``t`` of the batch belongs to session ``s`` when
    ``node_offsets[s] <= t < node_offsets[s + 1]``. Edge ``e`` goes from node ``edge_src[e]``
    to node ``edge_dst[e]`` (global node indices). The normalised adjacency of SR-GNN is
    carried by the edge weights::

        A_in[dst, src]  = edge_weight_in[e]  = 1 / indeg(dst)
        A_out[src, dst] = edge_weight_out[e] = 1 / outdeg(src)

    Attributes:
        node_items: (T,) int64 item index (1..N) of every node.
        node_offsets: (B + 1,) int64 node range of every session.
        edge_src: (E,) int64 global source node of every edge.
        edge_dst: (E,) int64 global destination node of every edge.
        edge_weight_in: (E,) float32 ``1 / indeg(edge_dst)``.
        edge_weight_out: (E,) float32 ``1 / outdeg(edge_src)``.
        alias: (B, L) int64 global node index of every click; 0 at padded positions.
        mask: (B, L) bool, True at real clicks (positions ``0 .. prefix_length - 1``).
        last_position: (B,) int64 position of the last click (``prefix_length - 1``).
        prefix_lengths: (B,) int64 number of clicks of every prefix.
        targets: (B,) int64 item index (1..N) of the next click; 0 when unknown (scoring).
        click_nodes: (C,) int64 global node of every real click, session by session in click
            order (``alias[mask]``; ``C`` = sum of ``prefix_lengths``).
        click_sessions: (C,) int64 session of every real click.
        last_nodes: (B,) int64 global node of every session's last click.
        route_sources, route_targets, route_weights: the graph cell's message routes, see
            :meth:`message_routes`.
        edge_gap: (E,) float32 seconds between the two clicks of every edge (the graph
            Parquet's optional ``edge_gap``), or ``None`` when the graphs do not carry it.
        remaining: (B,) float32 clicks of the session after every example's target (the
            optional ``remaining`` column), or ``None``.
        returns: (B,) float32 whether the session's user came back (the optional ``returns``
            column: 1, 0, NaN where unknown), or ``None``.

    The last six are derived from the others in :func:`collate` (numpy, with the batch),
    so that a training step does not rebuild them with a dozen small tensor operations.
    """

    node_items: torch.Tensor
    node_offsets: torch.Tensor
    edge_src: torch.Tensor
    edge_dst: torch.Tensor
    edge_weight_in: torch.Tensor
    edge_weight_out: torch.Tensor
    alias: torch.Tensor
    mask: torch.Tensor
    last_position: torch.Tensor
    prefix_lengths: torch.Tensor
    targets: torch.Tensor
    click_nodes: torch.Tensor
    click_sessions: torch.Tensor
    last_nodes: torch.Tensor
    route_sources: torch.Tensor
    route_targets: torch.Tensor
    route_weights: torch.Tensor
    edge_gap: torch.Tensor | None = None
    remaining: torch.Tensor | None = None
    returns: torch.Tensor | None = None

    def message_routes(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Both directions' messages as one gather and one scatter over ``(2T, d)`` rows.

        With node ``t``'s in-message at row ``2t`` and its out-message at row ``2t + 1`` (a
        ``(T, 2d)`` tensor viewed as ``(2T, d)``), ``A_in`` moves row ``2 src`` to row
        ``2 dst`` with weight ``1 / indeg(dst)`` and ``A_out`` moves row ``2 dst + 1`` to row
        ``2 src + 1`` with weight ``1 / outdeg(src)``.

        Returns:
            ``(source_rows, target_rows, weights)``: (2E,) int64, (2E,) int64, (2E, 1) float32.
        """
        return self.route_sources, self.route_targets, self.route_weights

    def to_padded(self) -> "PaddedGraphBatch":
        """The same batch in padded dense form (what the reference implementation feeds)."""
        node_offsets = self.node_offsets
        device = node_offsets.device
        node_counts = node_offsets[1:] - node_offsets[:-1]  # (B,)
        batch_size = self.batch_size
        max_nodes = int(node_counts.max()) if batch_size else 0
        total_nodes = int(node_offsets[-1])
        sessions = torch.arange(batch_size, device=device)
        session_of_node = torch.repeat_interleave(sessions, node_counts)  # (T,)
        position_of_node = torch.arange(total_nodes, device=device) - node_offsets[session_of_node]

        items = torch.zeros(batch_size, max_nodes, dtype=torch.long, device=device)  # (B, n)
        items[session_of_node, position_of_node] = self.node_items

        session_of_edge = session_of_node[self.edge_src]  # (E,)
        local_src = position_of_node[self.edge_src]
        local_dst = position_of_node[self.edge_dst]
        shape = (batch_size, max_nodes, max_nodes)
        adjacency_in = torch.zeros(shape, dtype=self.edge_weight_in.dtype, device=device)
        adjacency_out = torch.zeros_like(adjacency_in)  # (B, n, n)
        adjacency_in[session_of_edge, local_dst, local_src] = self.edge_weight_in
        adjacency_out[session_of_edge, local_src, local_dst] = self.edge_weight_out

        local_alias = self.alias - node_offsets[:-1, None]  # (B, L)
        local_alias = torch.where(self.mask, local_alias, torch.zeros_like(local_alias))
        return PaddedGraphBatch(
            items=items,
            adjacency_in=adjacency_in,
            adjacency_out=adjacency_out,
            alias=local_alias,
            mask=self.mask,
            last_position=self.last_position,
            prefix_lengths=self.prefix_lengths,
            targets=self.targets,
        )


@dataclass
class PaddedGraphBatch(_TensorBatch):
    """A batch of ``B`` session graphs in padded dense form (``n`` = most nodes in the batch).

    This is the layout of the reference implementation: row ``s`` of ``adjacency_in`` /
    ``adjacency_out`` is session ``s``'s ``A_in`` / ``A_out`` padded with zeros, and padded
    node slots hold item 0.

    Attributes:
        items: (B, n) int64 item index of every node slot, 0 for padding.
        adjacency_in: (B, n, n) float32 ``A_in[i, j] = 1[j -> i] / indeg(i)``.
        adjacency_out: (B, n, n) float32 ``A_out[i, j] = 1[i -> j] / outdeg(i)``.
        alias: (B, L) int64 node slot (0..n-1) of every click; 0 at padded positions.
        mask, last_position, prefix_lengths, targets: as in :class:`GraphBatch`.
    """

    items: torch.Tensor
    adjacency_in: torch.Tensor
    adjacency_out: torch.Tensor
    alias: torch.Tensor
    mask: torch.Tensor
    last_position: torch.Tensor
    prefix_lengths: torch.Tensor
    targets: torch.Tensor



def collate(graphs: SessionGraphs, targets: np.ndarray | None = None,
            remaining: np.ndarray | None = None,
            returns: np.ndarray | None = None) -> GraphBatch:
    """Stack the graphs of ``B`` sessions into one block-diagonal :class:`GraphBatch`.

    Args:
        graphs: the sessions' graphs as built by :func:`srgnn.data.graph.build_graphs` (or read
            back from the session-graph Parquet). Every session needs at least one click.
        targets: (B,) item index of each session's next click; ``None`` (scoring) gives zeros.
        remaining: (B,) clicks after each target (``GraphBatch.remaining``), or ``None``.
        returns: (B,) return labels, NaN where unknown (``GraphBatch.returns``), or ``None``.

    Returns:
        The batch, every tensor on the CPU.

    Raises:
        ValueError: if a session is empty, ``targets`` has the wrong length, or the alias or
            edges point outside their session's nodes.
    """
    node_offsets = np.asarray(graphs.nodes_offsets, dtype=np.int64)
    alias_offsets = np.asarray(graphs.alias_offsets, dtype=np.int64)
    edge_offsets = np.asarray(graphs.edge_offsets, dtype=np.int64)
    batch_size = len(node_offsets) - 1
    if len(alias_offsets) != batch_size + 1 or len(edge_offsets) != batch_size + 1:
        raise ValueError("nodes, alias and edge offsets must describe the same number of sessions.")
    node_counts = np.diff(node_offsets)  # (B,)
    prefix_lengths = np.diff(alias_offsets)  # (B,)
    if batch_size and prefix_lengths.min() < 1:
        raise ValueError(
            "every session in a batch needs at least one click; filter out empty prefixes "
            "before batching (srgnn.serving.predict.Scorer reports them separately)."
        )
    if targets is None:
        targets = np.zeros(batch_size, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    if targets.shape != (batch_size,):
        raise ValueError(f"expected {batch_size} targets, got an array of shape {targets.shape}.")
    if remaining is not None and np.shape(remaining) != (batch_size,):
        raise ValueError(f"expected {batch_size} remaining counts, got shape {np.shape(remaining)}.")
    if returns is not None and np.shape(returns) != (batch_size,):
        raise ValueError(f"expected {batch_size} return labels, got shape {np.shape(returns)}.")

    node_base = node_offsets[:-1]  # (B,) first global node of each session
    alias_values = np.asarray(graphs.alias_values, dtype=np.int64)
    session_of_click = np.repeat(np.arange(batch_size), prefix_lengths)  # (C,)
    if len(alias_values) and (
        alias_values.min() < 0 or (alias_values >= node_counts[session_of_click]).any()
    ):
        raise ValueError("alias values must be node indices within their own session.")

    # Edges: local node indices -> global ones; degrees by counting edge ends.
    session_of_edge = np.repeat(np.arange(batch_size), np.diff(edge_offsets))  # (E,)
    edge_src = np.asarray(graphs.edge_src, dtype=np.int64)
    edge_dst = np.asarray(graphs.edge_dst, dtype=np.int64)
    if len(edge_src) and (
        min(edge_src.min(), edge_dst.min()) < 0
        or (np.maximum(edge_src, edge_dst) >= node_counts[session_of_edge]).any()
    ):
        raise ValueError("edge_src and edge_dst must be node indices within their own session.")
    edge_src = edge_src + node_base[session_of_edge]
    edge_dst = edge_dst + node_base[session_of_edge]
    total_nodes = int(node_offsets[-1])
    out_degree = np.bincount(edge_src, minlength=total_nodes)  # (T,)
    in_degree = np.bincount(edge_dst, minlength=total_nodes)  # (T,)
    edge_weight_out = (1.0 / out_degree[edge_src]).astype(np.float32)
    edge_weight_in = (1.0 / in_degree[edge_dst]).astype(np.float32)

    # Click sequence padded to the longest prefix of the batch.
    max_length = int(prefix_lengths.max()) if batch_size else 0
    position_of_click = np.arange(len(alias_values)) - alias_offsets[session_of_click]
    alias = np.zeros((batch_size, max_length), dtype=np.int64)  # (B, L)
    click_nodes = alias_values + node_base[session_of_click]  # (C,) global node of each click
    alias[session_of_click, position_of_click] = click_nodes
    mask = np.zeros((batch_size, max_length), dtype=bool)  # (B, L)
    mask[session_of_click, position_of_click] = True

    # The graph cell's message routes (GraphBatch.message_routes): in-messages sit at row
    # 2t, out-messages at row 2t + 1.
    src2, dst2 = 2 * edge_src, 2 * edge_dst

    return GraphBatch(
        node_items=torch.from_numpy(np.asarray(graphs.nodes_values, dtype=np.int64)),
        node_offsets=torch.from_numpy(node_offsets),
        edge_src=torch.from_numpy(edge_src),
        edge_dst=torch.from_numpy(edge_dst),
        edge_weight_in=torch.from_numpy(edge_weight_in),
        edge_weight_out=torch.from_numpy(edge_weight_out),
        alias=torch.from_numpy(alias),
        mask=torch.from_numpy(mask),
        last_position=torch.from_numpy(prefix_lengths - 1),
        prefix_lengths=torch.from_numpy(prefix_lengths),
        targets=torch.from_numpy(targets),
        click_nodes=torch.from_numpy(click_nodes),
        click_sessions=torch.from_numpy(session_of_click),
        last_nodes=torch.from_numpy(click_nodes[alias_offsets[1:] - 1]),
        route_sources=torch.from_numpy(np.concatenate([src2, dst2 + 1])),
        route_targets=torch.from_numpy(np.concatenate([dst2, src2 + 1])),
        route_weights=torch.from_numpy(np.concatenate([edge_weight_in, edge_weight_out])[:, None]),
        edge_gap=None if graphs.edge_gap is None else torch.from_numpy(
            np.array(graphs.edge_gap, dtype=np.float32)),  # a copy: Arrow's views are read-only
        remaining=None if remaining is None else torch.from_numpy(
            np.asarray(remaining, dtype=np.float32)),
        returns=None if returns is None else torch.from_numpy(
            np.array(returns, dtype=np.float32)),
    )
