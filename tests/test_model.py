"""Tests of srgnn.model.network (parity with the paper's equations) and srgnn.serving.predict (top-K)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from srgnn.data.samples import clustered_sessions, expand_prefixes, sessions_to_arrays
from srgnn.model.batching import collate
from srgnn.data.graph import build_graphs
from srgnn.model.network import SRGNN, ModelConfig
from srgnn.serving.predict import Scorer


def batch_of(sessions):
    values, offsets = sessions_to_arrays(sessions)
    return collate(build_graphs(values, offsets))


# ------------------------------------------------------------------------------------------
# The paper's equations, transcribed independently with dense matrices, one session at a time
# ------------------------------------------------------------------------------------------
def paper_scores(model: SRGNN, node_items, adjacency_in, adjacency_out, clicks, steps, hybrid):
    """SR-GNN scores of one session, written from Wu et al. (2019), eq. 1-8.

    node_items: (n,) item of each node; adjacency_in / adjacency_out: (n, n) hand-written
    A_in / A_out; clicks: (m,) node index of each click, the last one last.
    """
    p = dict(model.named_parameters())
    E = p["embedding.weight"]  # (N + 1, d)
    W_in, b_in = p["gnn.edge_in.weight"], p["gnn.edge_in.bias"]
    W_out, b_out = p["gnn.edge_out.weight"], p["gnn.edge_out.bias"]
    b_iah, b_oah = p["gnn.bias_in"], p["gnn.bias_out"]
    W_r, W_z, W_c = p["gnn.input_gates.weight"].chunk(3, dim=0)  # each (d, 2d)
    b_r, b_z, b_c = p["gnn.input_gates.bias"].chunk(3)
    U_r, U_z, U_c = p["gnn.state_gates.weight"].chunk(3, dim=0)  # each (d, d)
    c_r, c_z, c_c = p["gnn.state_gates.bias"].chunk(3)

    v = E[torch.as_tensor(node_items)]  # (n, d)
    for _ in range(steps):
        # eq. 1: a = [A_in (v W_in^T + b_in) + b_iah ; A_out (v W_out^T + b_out) + b_oah]
        a_in = adjacency_in @ (v @ W_in.T + b_in) + b_iah  # (n, d)
        a_out = adjacency_out @ (v @ W_out.T + b_out) + b_oah  # (n, d)
        a = torch.cat([a_in, a_out], dim=1)  # (n, 2d)
        z = torch.sigmoid(a @ W_z.T + b_z + v @ U_z.T + c_z)  # eq. 2
        r = torch.sigmoid(a @ W_r.T + b_r + v @ U_r.T + c_r)  # eq. 3
        candidate = torch.tanh(a @ W_c.T + b_c + r * (v @ U_c.T + c_c))  # eq. 4
        # eq. 5 with the authors' code's convention: z keeps the old state (the paper's 1 - z).
        v = (1 - z) * candidate + z * v

    x = v[torch.as_tensor(clicks)]  # (m, d) click sequence
    x_last = x[-1]  # (d,)
    W1, b1 = p["readout.last_query.weight"], p["readout.last_query.bias"]
    W2, b2 = p["readout.click_key.weight"], p["readout.click_key.bias"]
    q = p["readout.attention.weight"][0]  # (d,)
    alpha = torch.sigmoid(W1 @ x_last + b1 + x @ W2.T + b2) @ q  # eq. 6: (m,)
    s_g = (alpha[:, None] * x).sum(dim=0)
    if hybrid:
        W3, b3 = p["readout.transform.weight"], p["readout.transform.bias"]
        s_h = W3 @ torch.cat([s_g, x_last]) + b3  # eq. 7
    else:
        s_h = s_g
    return E[1:] @ s_h  # eq. 8: scores of items 1..N


# Items A=3, B=5, C=2, D=4 of a 6-item catalogue.
A, B, C, D = 3, 5, 2, 4
SESSIONS = [[A, B, C, B], [D, D, A], [C]]
HAND_GRAPHS = [
    # A -> B -> C -> B: nodes in item order [C, A, B]; edges A->B, B->C, C->B.
    dict(
        nodes=[C, A, B],
        adjacency_in=[[0, 0, 1], [0, 0, 0], [0.5, 0.5, 0]],  # C <- B; B <- A, C (1/2 each)
        adjacency_out=[[0, 0, 1], [0, 0, 1], [1, 0, 0]],  # C -> B; A -> B; B -> C
        clicks=[1, 2, 0, 2],
    ),
    # D -> D -> A: nodes [A, D]; edges D->D (self-loop), D->A; outdeg(D) = 2.
    dict(
        nodes=[A, D],
        adjacency_in=[[0, 1], [0, 1]],  # A <- D; D <- D
        adjacency_out=[[0, 0], [0.5, 0.5]],  # D -> A, D -> D
        clicks=[1, 1, 0],
    ),
    # One click, no edge.
    dict(nodes=[C], adjacency_in=[[0]], adjacency_out=[[0]], clicks=[0]),
]


@pytest.mark.parametrize("steps,nonhybrid", [(1, False), (2, False), (1, True)])
def test_forward_matches_the_paper_equations(steps, nonhybrid):
    torch.manual_seed(0)
    model = SRGNN(ModelConfig(num_items=6, hidden_size=8, steps=steps, nonhybrid=nonhybrid))
    batch = batch_of(SESSIONS)
    with torch.no_grad():
        scores = model(batch)  # (3, 6)
        padded_scores = model(batch.to_padded())
        for row, graph in enumerate(HAND_GRAPHS):
            expected = paper_scores(
                model,
                graph["nodes"],
                torch.tensor(graph["adjacency_in"], dtype=torch.float32),
                torch.tensor(graph["adjacency_out"], dtype=torch.float32),
                graph["clicks"],
                steps,
                hybrid=not nonhybrid,
            )
            torch.testing.assert_close(scores[row], expected, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(padded_scores[row], expected, rtol=1e-5, atol=1e-6)


def test_padding_positions_do_not_change_a_session_score():
    torch.manual_seed(1)
    model = SRGNN(ModelConfig(num_items=6, hidden_size=8))
    with torch.no_grad():
        alone = model(batch_of([[D, A]]))[0]
        with_longer_neighbour = model(batch_of([[D, A], [A, B, C, B, A, D]]))[0]
    torch.testing.assert_close(alone, with_longer_neighbour)


def test_block_diagonal_and_padded_layouts_agree_with_gradients():
    sessions = clustered_sessions(num_items=40, num_sessions=30, seed=2)
    values, offsets = sessions_to_arrays(sessions)
    prefix_values, prefix_offsets, targets, _ = expand_prefixes(values, offsets)
    batch = collate(build_graphs(prefix_values, prefix_offsets), targets)
    torch.manual_seed(2)
    model = SRGNN(ModelConfig(num_items=40, hidden_size=16, steps=2))
    grads = []
    for layout in (batch, batch.to_padded()):
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(layout), layout.targets - 1)
        loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6)


def test_graph_cell_hand_written_backward_equals_the_composed_operations():
    # On a block-diagonal batch the cell runs as one autograd node with its own backward; the
    # composed form (messages then gates, autograd through every operation) is the reference.
    sessions = clustered_sessions(num_items=30, num_sessions=25, seed=4) + SESSIONS
    values, offsets = sessions_to_arrays(sessions)
    batch = collate(build_graphs(values, offsets))
    torch.manual_seed(4)
    cell = SRGNN(ModelConfig(num_items=30, hidden_size=8)).gnn.double()
    hidden = torch.randn(batch.node_items.numel(), 8, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn_like(hidden)
    inputs = [hidden, *cell.parameters()]
    results = []
    for compute in (lambda: cell(hidden, batch), lambda: cell.gates(hidden, cell.messages(hidden, batch))):
        out = compute()
        results.append((out, torch.autograd.grad(out, inputs, upstream)))
    (fused, fused_grads), (composed, composed_grads) = results
    assert fused.grad_fn is not None and "GatedCellStep" in type(fused.grad_fn).__name__
    torch.testing.assert_close(fused, composed, rtol=1e-12, atol=1e-12)
    names = ["hidden"] + [name for name, _ in cell.named_parameters()]
    for name, got, expected in zip(names, fused_grads, composed_grads):
        assert expected.abs().max() > 0, name  # every input has a gradient to compare
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("nonhybrid", [False, True])
def test_readout_hand_written_backward_equals_the_composed_operations(nonhybrid):
    sessions = clustered_sessions(num_items=30, num_sessions=25, seed=5) + SESSIONS
    values, offsets = sessions_to_arrays(sessions)
    batch = collate(build_graphs(values, offsets))
    torch.manual_seed(5)
    readout = SRGNN(ModelConfig(num_items=30, hidden_size=8, nonhybrid=nonhybrid)).readout.double()
    nodes = torch.randn(batch.node_items.numel(), 8, dtype=torch.float64, requires_grad=True)
    flat = (batch.click_nodes, batch.click_sessions, batch.last_nodes)
    upstream = torch.randn(batch.batch_size, 8, dtype=torch.float64)
    inputs = [nodes, *readout.parameters()]
    results = []
    for compute in (
        lambda: readout(nodes, batch.alias, batch.mask, batch.last_position, flat),
        lambda: readout(nodes, batch.alias, batch.mask, batch.last_position),  # lists from the mask
        lambda: readout.composed(nodes, *flat),
    ):
        out = compute()
        results.append((out, torch.autograd.grad(out, inputs, upstream)))
    assert "AttentionStep" in type(results[0][0].grad_fn).__name__
    names = ["nodes"] + [name for name, _ in readout.named_parameters()]
    expected, expected_grads = results[-1]
    for out, grads in results[:-1]:
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
        for name, got, want in zip(names, grads, expected_grads):
            assert want.abs().max() > 0, name
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=name)


def test_parameters_are_uniform_in_the_reference_range_and_reset():
    torch.manual_seed(3)
    model = SRGNN(ModelConfig(num_items=50, hidden_size=25))
    bound = 1 / math.sqrt(25)
    for name, parameter in model.named_parameters():
        assert parameter.abs().max() <= bound, name
    spread = float(model.embedding.weight.detach().std())
    assert spread == pytest.approx(bound / math.sqrt(3), rel=0.1)  # std of U(-b, b)
    before = model.embedding.weight.detach().clone()
    model.reset_parameters()
    assert not torch.equal(before, model.embedding.weight)
    assert model.readout.transform is not None
    assert SRGNN(ModelConfig(num_items=5, nonhybrid=True)).readout.transform is None


def test_scores_have_one_column_per_item_and_chunks_agree():
    torch.manual_seed(4)
    model = SRGNN(ModelConfig(num_items=6, hidden_size=8))
    with torch.no_grad():
        session = model.session_embedding(batch_of(SESSIONS))
        full = model.score_items(session)
        assert full.shape == (3, 6)
        torch.testing.assert_close(torch.cat([model.score_items(session, 0, 4),
                                              model.score_items(session, 4, 6)], dim=1), full)
        # Column j is item j + 1: its score is the dot product with E[j + 1].
        torch.testing.assert_close(full[:, 0], session @ model.embedding.weight[1])


def test_bad_input_raises_value_errors():
    with pytest.raises(ValueError, match="num_items"):
        ModelConfig(num_items=0)
    with pytest.raises(ValueError, match="steps"):
        ModelConfig(num_items=5, steps=0)
    model = SRGNN(ModelConfig(num_items=4, hidden_size=4))
    with pytest.raises(ValueError, match="vocabulary"):
        model(batch_of([[1, 9]]))
    with pytest.raises(ValueError, match="GraphBatch"):
        model({"items": torch.tensor([[1]])})
    with pytest.raises(ValueError, match="column range"):
        model.score_items(torch.zeros(1, 4), 2, 9)


# ------------------------------------------------------------------------------------------
# Scorer
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scorer_model():
    torch.manual_seed(5)
    return SRGNN(ModelConfig(num_items=30, hidden_size=8)).eval()


def test_scorer_returns_the_model_ranking_and_flags_empty_prefixes(scorer_model):
    values = np.array([3, 4, 3, 7, 8, 9, 10, 1])
    offsets = np.array([0, 3, 3, 7, 7, 8])  # prefixes 0, 2 and 4 have clicks; 1 and 3 are empty
    top = Scorer(scorer_model, batch_size=2, item_chunk_size=7).top_k(values, offsets, k=5)
    assert top.empty.tolist() == [False, True, False, True, False]
    assert top.items.shape == (5, 5) and top.scores.shape == (5, 5)
    assert (top.items[[1, 3]] == 0).all() and np.isnan(top.scores[[1, 3]]).all()

    with torch.no_grad():
        scores = scorer_model(batch_of([[3, 4, 3], [7, 8, 9, 10], [1]])).numpy()  # (3, 30)
    for row, prefix in zip(range(3), [0, 2, 4]):
        best_columns = np.argsort(-scores[row], kind="stable")[:5]
        assert top.items[prefix].tolist() == (best_columns + 1).tolist()
        np.testing.assert_allclose(top.scores[prefix], scores[row][best_columns], rtol=1e-6)


def test_scorer_chunking_does_not_change_results(scorer_model):
    values = np.array([5, 6, 5, 2, 30, 11])
    offsets = np.array([0, 3, 5, 6])
    one_chunk = Scorer(scorer_model).top_k(values, offsets, k=10)
    many_chunks = Scorer(scorer_model, batch_size=1, item_chunk_size=4).top_k(values, offsets, k=10)
    assert np.array_equal(one_chunk.items, many_chunks.items)
    np.testing.assert_allclose(one_chunk.scores, many_chunks.scores, rtol=1e-6)
    assert Scorer(scorer_model).top_k(values, offsets, k=100).items.shape == (3, 30)


def _random_prefixes(rng, num_items, count, longest=6):
    lengths = rng.integers(1, longest + 1, size=count)
    return rng.integers(1, num_items + 1, size=lengths.sum()), np.concatenate([[0], np.cumsum(lengths)])


def test_bfloat16_candidates_give_the_float32_top_k():
    torch.manual_seed(11)
    model = SRGNN(ModelConfig(num_items=400, hidden_size=16)).eval()
    with torch.no_grad():  # trained embeddings are spread far wider than the initial ones
        model.embedding.weight.mul_(8.0)
    values, offsets = _random_prefixes(np.random.default_rng(3), 400, 300)
    exact = Scorer(model, precision="float32").top_k(values, offsets, k=10)
    fast = Scorer(model, precision="bfloat16", candidates=20, batch_size=64, item_chunk_size=150)
    top = fast.top_k(values, offsets, k=10)
    assert fast.certified > 250  # the bfloat16 path answered most prefixes itself
    distinct = {tuple(p) for p in np.split(values, offsets[1:-1])}
    assert fast.certified + fast.rescored == len(distinct)
    assert np.array_equal(top.items, exact.items)
    np.testing.assert_allclose(top.scores, exact.scores, rtol=1e-5, atol=1e-5)


def test_bfloat16_prefixes_without_a_certificate_are_scored_again_in_float32():
    # Items that bfloat16 cannot tell apart: a shared vector plus differences of 1e-4 of it,
    # far below bfloat16's resolution (2^-8). The bfloat16 candidates are then arbitrary, the
    # certificate must fail, and the float32 pass must give the true order.
    torch.manual_seed(12)
    num_items, d = 300, 16
    model = SRGNN(ModelConfig(num_items=num_items, hidden_size=d)).eval()
    base = torch.randn(d)
    with torch.no_grad():
        model.embedding.weight[1:] = base * (1 + 1e-4 * torch.randn(num_items, d))
    values, offsets = _random_prefixes(np.random.default_rng(4), num_items, 40)
    exact = Scorer(model, precision="float32").top_k(values, offsets, k=5)
    fast = Scorer(model, precision="bfloat16", candidates=10)
    top = fast.top_k(values, offsets, k=5)
    # bfloat16 cannot order items this close: no prefix is certified, all 40 are rescored
    assert (fast.certified, fast.rescored) == (0, 40)
    assert np.array_equal(top.items, exact.items)
    np.testing.assert_allclose(top.scores, exact.scores, rtol=1e-6)


def test_scorer_precision_option(scorer_model):
    from srgnn.cpu import native_bfloat16

    assert Scorer(scorer_model).precision == ("bfloat16" if native_bfloat16() else "float32")
    assert Scorer(scorer_model, precision="float32").precision == "float32"
    with pytest.raises(ValueError, match="precision"):
        Scorer(scorer_model, precision="half")
    with pytest.raises(ValueError, match="candidates"):
        Scorer(scorer_model, candidates=0)


def test_scorer_from_state_dict_and_bad_input(scorer_model):
    scorer = Scorer.from_state_dict(scorer_model.state_dict(), {"num_items": 30, "hidden_size": 8})
    all_empty = scorer.top_k(np.array([], dtype=np.int64), np.array([0, 0]), k=3)
    assert all_empty.empty.tolist() == [True]
    with pytest.raises(ValueError, match="1..30"):
        scorer.top_k(np.array([0, 4]), np.array([0, 2]))
    with pytest.raises(ValueError, match="1..30"):
        scorer.top_k(np.array([31]), np.array([0, 1]))
    with pytest.raises(ValueError, match="offsets"):
        scorer.top_k(np.array([1, 2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="k must"):
        scorer.top_k(np.array([1]), np.array([0, 1]), k=0)


def _loss_case(seed: int):
    """A batch of every prefix of 30 generated sessions over 40 items, and a fresh model."""
    values, offsets = sessions_to_arrays(clustered_sessions(num_items=40, num_sessions=30, seed=seed))
    prefix_values, prefix_offsets, targets, _ = expand_prefixes(values, offsets)
    batch = collate(build_graphs(prefix_values, prefix_offsets), targets)
    torch.manual_seed(seed)
    return batch, SRGNN(ModelConfig(num_items=40, hidden_size=16))


def _reference_loss_and_gradients(model, batch):
    """Cross-entropy of the plain scores and its gradients (the model's grads are then cleared)."""
    expected = torch.nn.functional.cross_entropy(model(batch), batch.targets - 1)
    expected.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return expected, grads


def test_training_loss_equals_cross_entropy_of_the_scores_with_the_same_gradients():
    batch, model = _loss_case(6)
    expected, expected_grads = _reference_loss_and_gradients(model, batch)
    loss = model.loss(batch)
    loss.backward()
    torch.testing.assert_close(loss, expected)
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, expected_grads[name], rtol=1e-4, atol=1e-7)
    assert torch.count_nonzero(model.embedding.weight.grad[0]) == 0  # padding row
    with pytest.raises(ValueError, match="targets"):
        model.loss(collate(build_graphs(np.array([1, 2]), np.array([0, 2])), np.array([41])))


def test_training_loss_gradients_accumulate_and_survive_vanishing_probabilities():
    batch, model = _loss_case(7)
    with torch.no_grad():  # scores hundreds apart: many target probabilities underflow to 0
        model.embedding.weight.mul_(60.0)
    expected, expected_grads = _reference_loss_and_gradients(model, batch)
    assert torch.isfinite(expected) and expected > 100
    loss = model.loss(batch)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    model.loss(batch).backward()  # a second pass adds to the gradients already there
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, 2 * expected_grads[name], rtol=1e-4, atol=1e-5)


def test_bfloat16_catalogue_products_keep_the_loss_and_gradients_within_bfloat16_rounding():
    batch, model = _loss_case(9)
    expected, expected_grads = _reference_loss_and_gradients(model, batch)
    loss = model.loss(batch, "bfloat16")
    loss.backward()
    assert loss.dtype == torch.float32 and loss != expected  # the products did run in bfloat16
    # bfloat16 keeps 8 significant bits (relative rounding <= 2^-9 per operand and per score).
    torch.testing.assert_close(loss, expected, rtol=1e-2, atol=0)
    for name, parameter in model.named_parameters():
        grad, reference = parameter.grad.flatten(), expected_grads[name].flatten()
        assert parameter.grad.dtype == torch.float32
        assert torch.linalg.vector_norm(grad - reference) <= 0.02 * torch.linalg.vector_norm(reference), name
    assert torch.count_nonzero(model.embedding.weight.grad[0]) == 0  # padding row
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16"):
        model.loss(batch, "half")


def test_item_lookup_alone_gives_the_embedding_gradient():
    from srgnn.model.network import _ItemLookup

    torch.manual_seed(8)
    table = torch.randn(9, 4, requires_grad=True)
    items = torch.tensor([[1, 3, 3], [0, 8, 1]])
    weights = torch.randn(2, 3, 4)
    (torch.nn.functional.embedding(items, table) * weights).sum().backward()
    expected = table.grad.clone()
    table.grad = None
    (_ItemLookup.apply(table, items, None) * weights).sum().backward()
    torch.testing.assert_close(table.grad, expected)
