"""Tests of srgnn.model.batching: batch tensors built by hand, Parquet streaming and shuffling."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from srgnn.data.samples import clustered_sessions, write_graph_parquet
from srgnn.model.batching import GraphBatch, collate
from srgnn.model.reader import GraphParquetReader
from srgnn.data.graph import build_graphs, normalized_adjacency

A, B, C = 11, 12, 13


def batch_of(sessions, targets=None) -> GraphBatch:
    lengths = [len(s) for s in sessions]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = np.array([item for s in sessions for item in s], dtype=np.int64)
    return collate(build_graphs(values, offsets), None if targets is None else np.array(targets))


# ------------------------------------------------------------------------------------------
# collate
# ------------------------------------------------------------------------------------------
def test_adjacency_of_a_b_c_b_matches_the_hand_written_matrices():
    # Session A -> B -> C -> B. Nodes in increasing item order: 0 = A, 1 = B, 2 = C.
    # Edges A->B, B->C, C->B. outdeg: A 1, B 1, C 1. indeg: A 0, B 2 (from A and C), C 1.
    expected_in = torch.tensor(
        [
            [0.0, 0.0, 0.0],  # A has no in-edge
            [0.5, 0.0, 0.5],  # B <- A, B <- C, each 1/2
            [0.0, 1.0, 0.0],  # C <- B
        ]
    )
    expected_out = torch.tensor(
        [
            [0.0, 1.0, 0.0],  # A -> B
            [0.0, 0.0, 1.0],  # B -> C
            [0.0, 1.0, 0.0],  # C -> B
        ]
    )
    padded = batch_of([[A, B, C, B]]).to_padded()
    assert padded.items.tolist() == [[A, B, C]]
    assert torch.equal(padded.adjacency_in[0], expected_in)
    assert torch.equal(padded.adjacency_out[0], expected_out)
    # The graph module's reference matrix [A_in | A_out] agrees as well.
    graph = build_graphs(np.array([A, B, C, B]), np.array([0, 4]))
    reference = normalized_adjacency(3, graph.edge_src, graph.edge_dst)
    assert np.allclose(reference, torch.cat([expected_in, expected_out], dim=1).numpy())


def test_message_routes_apply_both_normalised_adjacencies_in_one_scatter():
    # A -> B -> C -> B as above: row 2t of the (2T, d) messages is node t's in-message, 2t + 1
    # its out-message; routing them must give [A_in m_in ; A_out m_out] of the hand matrices.
    batch = batch_of([[A, B, C, B]])
    source_rows, target_rows, weights = batch.message_routes()
    assert batch.message_routes()[0] is source_rows  # built once, by collate
    m_in = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])  # one row per node A, B, C
    m_out = torch.tensor([[4.0, 40.0], [5.0, 50.0], [6.0, 60.0]])
    rows = torch.cat([m_in, m_out], dim=1).view(-1, 2)
    routed = torch.zeros_like(rows).index_add_(0, target_rows, rows[source_rows] * weights).view(3, 4)
    # A_in: B <- (A + C) / 2, C <- B;  A_out: A -> B, B -> C, C -> B.
    assert routed[:, :2].tolist() == [[0.0, 0.0], [2.0, 20.0], [2.0, 20.0]]
    assert routed[:, 2:].tolist() == [[5.0, 50.0], [6.0, 60.0], [5.0, 50.0]]


def test_two_session_batch_with_a_repeated_click_is_right():
    # Session 0: 7, 7, 3 (a repeated consecutive click gives the self-loop 7 -> 7).
    # Session 1: 4, 9.
    batch = batch_of([[7, 7, 3], [4, 9]], targets=[5, 2])

    # Nodes: session 0 -> [3, 7] (global 0, 1); session 1 -> [4, 9] (global 2, 3).
    assert batch.node_items.tolist() == [3, 7, 4, 9]
    assert batch.node_offsets.tolist() == [0, 2, 4]
    # Clicks as global node indices, padded with 0 to the longest prefix (3).
    assert batch.alias.tolist() == [[1, 1, 0], [2, 3, 0]]
    assert batch.mask.tolist() == [[True, True, True], [True, True, False]]
    assert batch.last_position.tolist() == [2, 1]
    assert batch.prefix_lengths.tolist() == [3, 2]
    assert batch.targets.tolist() == [5, 2]
    # The same clicks as flat lists (the attention readout's form): node and session of every
    # click, and the node of each session's last click (item 3 = node 0, item 9 = node 3).
    assert batch.click_nodes.tolist() == [1, 1, 0, 2, 3]
    assert batch.click_sessions.tolist() == [0, 0, 0, 1, 1]
    assert batch.last_nodes.tolist() == [0, 3]

    # Edges 7->3, 7->7 and 4->9 with weights 1/indeg(dst) and 1/outdeg(src):
    # node 7 has out-degree 2; every destination has in-degree 1.
    edges = {
        (s, d): (w_in, w_out)
        for s, d, w_in, w_out in zip(
            batch.edge_src.tolist(),
            batch.edge_dst.tolist(),
            batch.edge_weight_in.tolist(),
            batch.edge_weight_out.tolist(),
        )
    }
    assert edges == {(1, 0): (1.0, 0.5), (1, 1): (1.0, 0.5), (2, 3): (1.0, 1.0)}

    padded = batch.to_padded()
    assert padded.items.tolist() == [[3, 7], [4, 9]]
    assert padded.alias.tolist() == [[1, 1, 0], [0, 1, 0]]
    assert padded.adjacency_out.tolist() == [[[0.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.0, 0.0]]]
    assert padded.adjacency_in.tolist() == [[[0.0, 1.0], [0.0, 1.0]], [[0.0, 0.0], [1.0, 0.0]]]


def test_batch_dtypes_are_what_the_model_needs():
    batch = batch_of([[1, 2], [3]])
    for name in ("node_items", "node_offsets", "edge_src", "edge_dst", "alias", "targets"):
        assert getattr(batch, name).dtype == torch.int64, name
    assert batch.edge_weight_in.dtype == torch.float32
    assert batch.mask.dtype == torch.bool
    assert batch.targets.tolist() == [0, 0]  # unknown targets (scoring)


def test_collate_rejects_empty_sessions_and_wrong_targets():
    with pytest.raises(ValueError, match="at least one click"):
        batch_of([[1, 2], []])
    with pytest.raises(ValueError, match="targets"):
        batch_of([[1, 2]], targets=[1, 2])


def test_collate_rejects_alias_outside_the_session():
    graphs = build_graphs(np.array([1, 2]), np.array([0, 2]))
    broken = type(graphs)(**{**graphs.__dict__, "alias_values": np.array([0, 5])})
    with pytest.raises(ValueError, match="alias"):
        collate(broken)


# ------------------------------------------------------------------------------------------
# Streaming from Parquet
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def graph_folder(tmp_path_factory):
    sessions = clustered_sessions(num_items=60, num_sessions=300, seed=3)
    folder = tmp_path_factory.mktemp("graphs") / "train"
    # Several files and small row groups, so that shuffling crosses both.
    write_graph_parquet(folder, sessions, files=3, row_group_size=97)
    return folder


def examples_of(batches) -> list[tuple]:
    """Every example as (target, clicked items), from the batches' own tensors."""
    out = []
    for batch in batches:
        clicked = batch.node_items[batch.alias]  # (B, L)
        for row in range(batch.batch_size):
            length = int(batch.prefix_lengths[row])
            out.append((int(batch.targets[row]), tuple(clicked[row, :length].tolist())))
    return out


def file_examples(folder) -> list[tuple]:
    table = pq.read_table(folder, columns=["target", "prefix"])
    prefixes = map(tuple, table.column("prefix").to_pylist())
    return list(zip(table.column("target").to_pylist(), prefixes))


def test_reader_serves_every_example_once_per_epoch(graph_folder):
    reader = GraphParquetReader(
        graph_folder, batch_size=32, shuffle=True, seed=1, shuffle_buffer=150
    )
    served = examples_of(reader.batches(epoch=0))
    expected = file_examples(graph_folder)
    assert len(served) == reader.num_examples == len(expected)
    assert Counter(served) == Counter(expected)
    assert len(list(reader.batches(epoch=0))) == len(reader)


def test_reader_order_depends_only_on_seed_and_epoch(graph_folder):
    def order(seed, epoch):
        reader = GraphParquetReader(
            graph_folder, batch_size=50, shuffle=True, seed=seed, shuffle_buffer=200
        )
        return examples_of(reader.batches(epoch))

    assert order(5, 2) == order(5, 2)
    assert order(5, 2) != order(5, 3)
    assert order(5, 2) != order(6, 2)
    # Shuffling actually moves rows away from the file order.
    assert order(5, 2) != file_examples(graph_folder)


def test_reader_without_shuffle_keeps_file_order(graph_folder):
    reader = GraphParquetReader(graph_folder, batch_size=64, shuffle=False)
    assert examples_of(reader.batches()) == file_examples(graph_folder)


def test_reader_caps_examples_and_drops_last(graph_folder):
    capped = GraphParquetReader(graph_folder, batch_size=40, shuffle=True, seed=0, max_examples=130)
    sizes = [batch.batch_size for batch in capped.batches(1)]
    assert sizes == [40, 40, 40, 10]
    assert len(capped) == 4
    dropped = GraphParquetReader(graph_folder, batch_size=40, max_examples=130, drop_last=True)
    assert [batch.batch_size for batch in dropped.batches()] == [40, 40, 40]
    assert len(dropped) == 3


def test_reader_reports_missing_data(tmp_path):
    with pytest.raises(FileNotFoundError):
        GraphParquetReader(tmp_path / "nowhere")
    pq.write_table(pa.table({"target": [1, 2]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="columns"):
        GraphParquetReader(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="batch_size"):
        GraphParquetReader(tmp_path / "bad.parquet", batch_size=0)


def test_reader_holds_a_bounded_number_of_rows(graph_folder, monkeypatch):
    import srgnn.model.reader as batching

    held = []
    original = batching._Rows.from_table.__func__

    def recording(cls, table):
        held.append(table.num_rows)
        return original(cls, table)

    monkeypatch.setattr(batching._Rows, "from_table", classmethod(recording))
    reader = GraphParquetReader(
        graph_folder, batch_size=16, shuffle=True, seed=2, shuffle_buffer=100, read_rows=40
    )
    served = sum(batch.batch_size for batch in reader.batches(0))
    assert served == reader.num_examples > 1000
    assert len(held) > 10  # many small buffers, never the whole dataset
    assert max(held) < 100 + 40
