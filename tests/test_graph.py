"""The one session -> graph implementation, on hand-made sessions."""

import numpy as np
import pytest

from srgnn.data.graph import build_graphs, normalized_adjacency

A, B, C, D = 11, 12, 13, 14


def one(session):
    g = build_graphs(np.array(session), np.array([0, len(session)]))
    edges = list(zip(g.edge_src.tolist(), g.edge_dst.tolist()))
    return g.nodes_values.tolist(), g.alias_values.tolist(), edges


def test_seed_example_keeps_both_directions_between_b_and_c():
    nodes, alias, edges = one([A, B, C, B])
    assert nodes == [A, B, C]
    assert alias == [0, 1, 2, 1]
    assert edges == [(0, 1), (1, 2), (2, 1)]


def test_repeated_consecutive_clicks_give_a_self_loop_once():
    nodes, alias, edges = one([B, B, B, A])
    assert nodes == [A, B]
    assert alias == [1, 1, 1, 0]
    assert edges == [(1, 0), (1, 1)]


def test_batch_with_empty_and_single_click_sessions():
    values = np.array([A, B, C, B, D, C, D, D])
    offsets = np.array([0, 4, 4, 5, 8])  # [A B C B], [], [D], [C D D]
    g = build_graphs(values, offsets)
    assert g.num_sessions == 4
    assert g.nodes_offsets.tolist() == [0, 3, 3, 4, 6]
    assert g.nodes_values.tolist() == [A, B, C, D, C, D]
    assert g.alias_values.tolist() == [0, 1, 2, 1, 0, 0, 1, 1]
    assert g.edge_offsets.tolist() == [0, 3, 3, 3, 5]
    assert list(zip(g.edge_src.tolist(), g.edge_dst.tolist())) == [(0, 1), (1, 2), (2, 1), (0, 1), (1, 1)]


def test_edges_never_cross_sessions():
    g = build_graphs(np.array([A, B, C, D]), np.array([0, 2, 4]))
    assert list(zip(g.edge_src.tolist(), g.edge_dst.tolist())) == [(0, 1), (0, 1)]
    assert g.edge_offsets.tolist() == [0, 1, 2]


@pytest.mark.parametrize("offsets", [[1, 4], [0, 3], [0, 3, 2, 4], []])
def test_bad_offsets_are_rejected(offsets):
    with pytest.raises(ValueError):
        build_graphs(np.array([A, B, C, D]), np.array(offsets))


def test_negative_items_are_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        build_graphs(np.array([1, -2]), np.array([0, 2]))


def test_normalized_adjacency_of_seed_example():
    # A->B, B->C, C->B over nodes (A, B, C); written out by hand.
    expected_in = np.array([[0, 0, 0], [0.5, 0, 0.5], [0, 1, 0]])
    expected_out = np.array([[0, 1, 0], [0, 0, 1], [0, 1, 0]])
    matrix = normalized_adjacency(3, np.array([0, 1, 2]), np.array([1, 2, 1]))
    np.testing.assert_allclose(matrix, np.concatenate([expected_in, expected_out], axis=1))
