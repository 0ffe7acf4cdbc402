"""The reference implementation's way of doing SR-GNN, for parity tests and benchmarks.

The authors' code (CRIPAC-DIG/SR-GNN) builds every batch session by session in a numpy loop
(:func:`per_session_batch`: padded dense ``(B, n, n)`` adjacency matrices, every prefix padded
to the longest prefix of the dataset) and computes the loss with a Python loop over sessions to
gather the click states, attention over every padded position, and autograd's ``matmul`` and
``cross_entropy`` (:func:`reference_code_loss`). This module re-implements both with this
package's parameters, so that a test can check that :meth:`srgnn.model.network.SRGNN.loss` on
this package's batches computes the same loss and gradients, and ``bench/bench_train_speed.py``
can time the reference way against this package's. Nothing in the pipeline uses it.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from srgnn.model.batching import PaddedGraphBatch
from srgnn.model.network import SRGNN

__all__ = ["per_session_batch", "per_session_batches", "reference_code_loss"]


def per_session_batch(
    prefixes: list[np.ndarray], targets: np.ndarray, pad_to: int | None = None
) -> PaddedGraphBatch:
    """Padded dense batch built session by session, as the authors' ``Data.get_slice`` does.

    The reference pads every prefix to the longest prefix of the whole dataset (``pad_to``);
    ``None`` pads to the longest of the batch instead, which is cheaper.
    """
    lengths = [len(p) for p in prefixes]
    max_length = pad_to or max(lengths)
    padded = [np.concatenate([p, np.zeros(max_length - len(p), dtype=np.int64)]) for p in prefixes]
    max_nodes = max(len(np.unique(u)) for u in padded)
    items, adjacency_in, adjacency_out, alias = [], [], [], []
    for u in padded:
        node = np.unique(u)
        items.append(node.tolist() + [0] * (max_nodes - len(node)))
        adjacency = np.zeros((max_nodes, max_nodes))
        for i in range(len(u) - 1):
            if u[i + 1] == 0:
                break
            source = np.where(node == u[i])[0][0]
            target = np.where(node == u[i + 1])[0][0]
            adjacency[source][target] = 1
        in_degree = adjacency.sum(0)
        in_degree[in_degree == 0] = 1
        out_degree = adjacency.sum(1)
        out_degree[out_degree == 0] = 1
        adjacency_in.append((adjacency / in_degree).T)
        adjacency_out.append((adjacency.T / out_degree).T)
        alias.append([np.where(node == i)[0][0] for i in u])
    mask = np.array([[1] * n + [0] * (max_length - n) for n in lengths], dtype=bool)
    return PaddedGraphBatch(
        items=torch.tensor(np.array(items), dtype=torch.long),
        adjacency_in=torch.tensor(np.array(adjacency_in), dtype=torch.float32),
        adjacency_out=torch.tensor(np.array(adjacency_out), dtype=torch.float32),
        alias=torch.tensor(np.array(alias), dtype=torch.long),
        mask=torch.from_numpy(mask),
        last_position=torch.tensor(lengths, dtype=torch.long) - 1,
        prefix_lengths=torch.tensor(lengths, dtype=torch.long),
        targets=torch.from_numpy(targets.astype(np.int64)),
    )


def per_session_batches(prefix_values, prefix_offsets, targets, batch_size: int, seed: int,
                        pad_to: int | None = None) -> Iterator[PaddedGraphBatch]:
    """Shuffled full batches of the prefixes ``(prefix_values, prefix_offsets)``, each built by
    :func:`per_session_batch`."""
    order = np.random.default_rng(seed).permutation(len(targets))
    for start in range(0, len(order) - batch_size + 1, batch_size):
        rows = order[start : start + batch_size]
        prefixes = [prefix_values[prefix_offsets[r] : prefix_offsets[r + 1]] for r in rows]
        yield per_session_batch(prefixes, targets[rows], pad_to)


def reference_code_loss(model: SRGNN, batch: PaddedGraphBatch) -> torch.Tensor:
    """The loss as the authors' forward pass computes it, with ``model``'s parameters.

    Same model and arithmetic as ``model.loss`` (``tests/test_reference.py`` compares the two), but the
    way the reference code goes about it: the click states are gathered session by session in
    a Python loop and stacked, the attention runs over every padded position, and the scores go
    through autograd's ``matmul`` and ``cross_entropy``.
    """
    readout = model.readout
    nodes = model.embedding(batch.items)  # (B, n, d)
    for _ in range(model.config.steps):
        nodes = model.gnn(nodes, batch)  # dense adjacency bmm
    sequence = torch.stack([nodes[row][batch.alias[row]] for row in range(nodes.shape[0])])  # (B, L, d)
    last = sequence[torch.arange(sequence.shape[0]), batch.mask.sum(1) - 1]  # (B, d)
    weights = readout.attention(torch.sigmoid(readout.last_query(last).unsqueeze(1)
                                              + readout.click_key(sequence)))  # (B, L, 1)
    pooled = (weights * sequence * batch.mask.unsqueeze(-1).float()).sum(1)  # (B, d)
    session = readout.transform(torch.cat([pooled, last], 1))
    scores = torch.matmul(session, model.embedding.weight[1:].transpose(1, 0))  # (B, N)
    return torch.nn.functional.cross_entropy(scores, batch.targets - 1)
