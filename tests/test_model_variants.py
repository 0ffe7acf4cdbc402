"""The SR-GNN variants attention_edges, temporal_edges and multitask_weight: off they leave the
reference model as it is; on, their edge weights and auxiliary loss follow the equations, and
the optional graph columns they need (edge_gap, remaining) go from prepare to the batches."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from srgnn.config import SettingError, TrainConfig
from srgnn.data.graph import build_graphs, graphs_to_arrow
from srgnn.data.samples import clustered_sessions, expand_prefixes, sessions_to_arrays
from srgnn.model.batching import collate
from srgnn.model.network import SRGNN, ModelConfig
from srgnn.model.reader import GraphParquetReader
from srgnn.serving.predict import Scorer
from srgnn.training.loop import model_config, train

NUM_ITEMS = 40
VARIANTS = {"attention_edges": dict(attention_edges=True),
            "temporal_edges": dict(temporal_edges=True),
            "multitask_weight": dict(multitask_weight=0.5)}


def timed_batch(seed: int = 3, num_sessions: int = 30):
    """Prefix examples of clustered sessions with random click gaps and remaining counts."""
    values, offsets = sessions_to_arrays(
        clustered_sessions(num_items=NUM_ITEMS, num_sessions=num_sessions, seed=seed))
    prefix_values, prefix_offsets, targets, _ = expand_prefixes(values, offsets)
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(120.0, len(prefix_values))
    remaining = rng.integers(0, 6, len(targets))
    return collate(build_graphs(prefix_values, prefix_offsets, gaps), targets, remaining)


def model_with(seed: int = 0, **options) -> SRGNN:
    torch.manual_seed(seed)
    return SRGNN(ModelConfig(num_items=NUM_ITEMS, hidden_size=8, **options))


def baseline_twin(model: SRGNN) -> SRGNN:
    """The reference model holding ``model``'s shared parameters."""
    twin = SRGNN(ModelConfig(num_items=NUM_ITEMS, hidden_size=model.config.hidden_size,
                             steps=model.config.steps))
    twin.load_state_dict({k: v for k, v in model.state_dict().items()
                          if not k.startswith(("edges.", "remaining_head."))})
    return twin


# The session A, B, C, B (items 1, 2, 3): edges A->B, B->C, C->B; node B (index 1) has the
# in-neighbours A and C, node C the out-neighbour B, node B the out-neighbour C.
def abcb_batch(gaps=(0.0, 1.0, 100.0, 3.0)):
    graphs = build_graphs(np.array([1, 2, 3, 2]), np.array([0, 4]), np.array(gaps))
    return collate(graphs, np.array([1]), np.array([2]))


# ------------------------------------------------------------------------------------------
# Off by default
# ------------------------------------------------------------------------------------------
def test_the_variants_are_off_by_default_and_add_no_parameters():
    defaults = TrainConfig()
    assert (defaults.attention_edges, defaults.temporal_edges, defaults.multitask_weight) == (
        False, False, 0.0)
    config = model_config(defaults, NUM_ITEMS)
    assert config.options == ["normalize", "position_embeddings", "star_node"]  # none of these
    reference = model_with()
    assert reference.edges is None and reference.remaining_head is None
    assert not any(k.startswith(("edges.", "remaining_head.")) for k in reference.state_dict())
    for name, options in VARIANTS.items():
        assert model_with(**options).config.options == [name]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_variant_gives_finite_gradients_for_every_parameter(name):
    model = model_with(**VARIANTS[name], steps=2)
    model.loss(timed_batch()).backward()
    for key, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), key
    assert model(timed_batch()).shape == (timed_batch().batch_size, NUM_ITEMS)


def test_bad_multitask_weight_is_refused():
    with pytest.raises(ValueError, match="multitask_weight must be at least 0"):
        TrainConfig(multitask_weight=-1.0)
    with pytest.raises(ValueError, match="multitask_weight must be non-negative"):
        ModelConfig(num_items=3, multitask_weight=-0.5)


# ------------------------------------------------------------------------------------------
# attention_edges
# ------------------------------------------------------------------------------------------
def test_equal_attention_logits_give_the_degree_normalised_messages():
    batch = abcb_batch()
    model = model_with(attention_edges=True)
    with torch.no_grad():  # W = 0: every logit 0 whatever the attention vectors
        model.edges.attention_vectors.normal_()
        model.edges.attention_map.weight.zero_()
    hidden = model.embedding(batch.node_items)
    weights = model.edges(hidden, batch)
    # routes: in-messages of A->B, B->C, C->B, then out-messages of the same edges
    # in-degree of B is 2 (A, C), of C 1; out-degree of A 1, of B 1, of C 1
    assert weights.squeeze(1).tolist() == [0.5, 1.0, 0.5, 1.0, 1.0, 1.0]
    torch.testing.assert_close(model.gnn.messages(hidden, batch, weights),
                               model.gnn.messages(hidden, batch), rtol=0, atol=1e-7)
    torch.testing.assert_close(model(batch), baseline_twin(model)(batch), rtol=0, atol=1e-6)


def test_attention_weights_follow_the_formula_for_a_node_with_two_in_neighbours():
    batch = abcb_batch()
    model = model_with(attention_edges=True)
    with torch.no_grad():
        model.edges.attention_vectors.normal_(std=2.0)
    hidden = model.embedding(batch.node_items)  # nodes A, B, C
    weights = model.edges(hidden, batch).squeeze(1).detach()
    projected = (hidden @ model.edges.attention_map.weight.T).detach()
    a_target, a_source = model.edges.attention_vectors.detach()[:2]

    def logit(i, j):  # in-message j -> i
        return F.leaky_relu(a_target @ projected[i] + a_source @ projected[j], 0.2)

    from_a, from_c = logit(1, 0), logit(1, 2)
    expected = torch.softmax(torch.stack([from_a, from_c]), 0)
    torch.testing.assert_close(weights[[0, 2]], expected)
    assert not torch.allclose(weights[[0, 2]], torch.tensor([0.5, 0.5]))  # learned, not 1/deg


def test_attention_and_gap_weights_refuse_the_padded_layout():
    batch = timed_batch()
    for options in ({"attention_edges": True}, {"temporal_edges": True}):
        with pytest.raises(ValueError, match="block-diagonal"):
            model_with(**options)(batch.to_padded())


# ------------------------------------------------------------------------------------------
# temporal_edges
# ------------------------------------------------------------------------------------------
def test_the_graph_keeps_the_latest_transition_gap_of_every_edge():
    # A, B, C, B, C: B->C is taken twice (gaps 2 then 8): the latest, 8, is kept
    graphs = build_graphs(np.array([1, 2, 3, 2, 3]), np.array([0, 5]),
                          np.array([0.0, 1.0, 2.0, 4.0, 8.0]))
    edges = list(zip(graphs.edge_src.tolist(), graphs.edge_dst.tolist(), graphs.edge_gap.tolist()))
    assert edges == [(0, 1, 1.0), (1, 2, 8.0), (2, 1, 4.0)]
    assert build_graphs(np.array([1, 2]), np.array([0, 2])).edge_gap is None
    with pytest.raises(ValueError, match="one value per click"):
        build_graphs(np.array([1, 2]), np.array([0, 2]), np.array([0.0]))


def test_equal_bucket_weights_are_exactly_the_baseline():
    batch = timed_batch()
    model = model_with(temporal_edges=True)
    with torch.no_grad():
        model.edges.gap_weights.fill_(1.7)
    torch.testing.assert_close(model(batch), baseline_twin(model)(batch), rtol=0, atol=1e-6)


def test_bucket_weights_reweigh_a_node_s_in_edges_by_their_gap():
    # node B's in-edges: A->B 1 s ago (bucket floor(log2 2) = 1), C->B 100 s (bucket 6)
    batch = abcb_batch(gaps=(0.0, 1.0, 5.0, 100.0))
    model = model_with(temporal_edges=True)
    with torch.no_grad():
        model.edges.gap_weights[0, 1] = 2.0
        model.edges.gap_weights[0, 6] = -1.0
    weights = model.edges(model.embedding(batch.node_items), batch).squeeze(1).detach()
    recent, old = math.log1p(math.exp(2.0)), math.log1p(math.exp(-1.0))
    expected = [recent / (recent + old), 1.0, old / (recent + old)]
    assert weights[:3].tolist() == pytest.approx(expected, rel=1e-6)
    assert weights[3:].tolist() == pytest.approx([1.0, 1.0, 1.0])  # one out-edge each


def test_a_temporal_batch_without_gaps_is_refused_naming_prepare():
    values, offsets = sessions_to_arrays([[1, 2, 3]])
    batch = collate(build_graphs(values, offsets))
    with pytest.raises(ValueError, match="run srgnn prepare again"):
        model_with(temporal_edges=True)(batch)


def test_the_scorer_of_a_temporal_model_takes_every_gap_as_zero():
    model = model_with(temporal_edges=True).eval()
    with torch.no_grad():
        model.edges.gap_weights.normal_()
    sessions = [[1, 2, 3, 2], [4, 5], [6]]
    values, offsets = sessions_to_arrays(sessions)
    top = Scorer(model).top_k(values, offsets, k=5)
    zero_gaps = collate(build_graphs(values, offsets, np.zeros(len(values))))
    expected = torch.topk(model(zero_gaps), 5).indices.numpy() + 1
    np.testing.assert_array_equal(top.items, expected)


# ------------------------------------------------------------------------------------------
# multitask_weight
# ------------------------------------------------------------------------------------------
def test_the_auxiliary_loss_is_w_times_the_poisson_likelihood_of_the_remaining_clicks():
    batch = timed_batch()
    model = model_with(multitask_weight=0.5)
    session = model.session_embedding(batch)
    log_rate = (session @ model.remaining_head.weight.T + model.remaining_head.bias).squeeze(1)
    poisson = (torch.exp(log_rate) - batch.remaining * log_rate).mean()  # by hand
    torch.testing.assert_close(model.loss(batch), baseline_twin(model).loss(batch) + 0.5 * poisson)


def test_the_head_gets_a_gradient_only_with_a_positive_weight():
    batch = timed_batch()
    on = model_with(multitask_weight=0.5)
    on.loss(batch).backward()
    assert on.remaining_head.weight.grad.abs().sum() > 0
    off = model_with(multitask_weight=0.0)
    assert off.remaining_head is None
    reference = model_with()
    off.loss(batch).backward()
    reference.loss(batch).backward()
    for (key, a), (_, b) in zip(off.named_parameters(), reference.named_parameters()):
        assert torch.equal(a.grad, b.grad), key


def test_scores_do_not_use_the_head():
    batch = timed_batch()
    model = model_with(multitask_weight=2.0)
    before = model(batch)
    with torch.no_grad():
        model.remaining_head.weight.normal_()
    assert torch.equal(model(batch), before)
    assert torch.equal(before, baseline_twin(model)(batch))


# ------------------------------------------------------------------------------------------
# The optional columns: reader, training refusal, reload
# ------------------------------------------------------------------------------------------
def write_graphs(path, timed: bool) -> None:
    values, offsets = sessions_to_arrays(
        clustered_sessions(num_items=NUM_ITEMS, num_sessions=200, seed=5))
    prefix_values, prefix_offsets, targets, _ = expand_prefixes(values, offsets)
    gaps = np.random.default_rng(1).exponential(60.0, len(prefix_values)) if timed else None
    columns = graphs_to_arrow(build_graphs(prefix_values, prefix_offsets, gaps))
    columns["target"] = pa.array(targets.astype(np.int32))
    if timed:
        columns["remaining"] = pa.array((np.arange(len(targets)) % 4).astype(np.int32))
    path.mkdir(parents=True)
    pq.write_table(pa.table(columns), path / "part-0.parquet")


def test_the_reader_supplies_the_optional_columns_only_when_present(tmp_path):
    write_graphs(tmp_path / "new", timed=True)
    write_graphs(tmp_path / "old", timed=False)
    new = next(iter(GraphParquetReader(tmp_path / "new", batch_size=7)))
    old = next(iter(GraphParquetReader(tmp_path / "old", batch_size=7)))
    assert new.remaining.tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert new.edge_gap is not None and len(new.edge_gap) == len(new.edge_src)
    assert old.edge_gap is None and old.remaining is None
    assert torch.equal(old.node_items, new.node_items)


@pytest.mark.parametrize("options, column", [({"temporal_edges": True}, "edge_gap"),
                                             ({"multitask_weight": 0.3}, "remaining")])
def test_training_refuses_graphs_prepared_before_the_column(tmp_path, options, column):
    write_graphs(tmp_path / "old", timed=False)
    config = TrainConfig(hidden_size=8, epochs=1, progress=False, num_threads=1, **options)
    with pytest.raises(SettingError, match=f"{column} column.*run srgnn prepare again"):
        train(tmp_path / "old", None, NUM_ITEMS, config)


def test_every_variant_trains_and_its_saved_model_reloads(tmp_path):
    write_graphs(tmp_path / "new", timed=True)
    config = TrainConfig(hidden_size=8, epochs=1, progress=False, num_threads=1, batch_size=50,
                         attention_edges=True, temporal_edges=True, multitask_weight=0.2)
    result = train(tmp_path / "new", tmp_path / "new", NUM_ITEMS, config)
    assert result.model_config.options == ["normalize", "position_embeddings", "star_node",
                                           "attention_edges", "temporal_edges",
                                           "multitask_weight"]
    rebuilt = SRGNN(ModelConfig(**asdict(result.model_config)))
    rebuilt.load_state_dict(result.best_state_dict)
    batch = next(iter(GraphParquetReader(tmp_path / "new", batch_size=20)))
    torch.testing.assert_close(rebuilt.eval()(batch), result.best_model()(batch))


def test_prepare_s_functions_write_the_gaps_and_remaining_clicks(spark):
    from srgnn.data import etl

    sessions = spark.createDataFrame(
        [("s", "train", [1, 2, 3, 2], [0.0, 1.0, 100.0, 3.0])],
        "session_id string, split string, items array<int>, gaps array<float>")
    rows = sorted(etl.add_graph_columns(etl.prefix_examples(sessions)).collect(),
                  key=lambda r: r["prefix_length"])
    assert [r["remaining"] for r in rows] == [2, 1, 0]
    last = rows[-1]  # prefix 1, 2, 3: edges A->B (1 s), B->C (100 s)
    assert list(zip(last["edge_src"], last["edge_dst"], last["edge_gap"])) == [
        (0, 1, 1.0), (1, 2, 100.0)]
    untimed = etl.prefix_examples(sessions.drop("gaps"))
    assert "prefix_gaps" not in untimed.columns
    assert "edge_gap" not in etl.add_graph_columns(untimed).columns


def test_indexed_sessions_carry_the_seconds_between_kept_clicks(spark):
    import datetime as dt

    from srgnn.data import etl

    t0 = dt.datetime(2024, 1, 1)
    clicks = [(t0, "a"), (t0 + dt.timedelta(seconds=30), "z"), (t0 + dt.timedelta(seconds=90), "b"),
              (t0 + dt.timedelta(seconds=91), "a")]
    sessions = spark.createDataFrame(
        [("s", "train", clicks), ("r", "train", [(t0, "b"), (t0 + dt.timedelta(hours=1), "a")])],
        "session_id string, split string, events array<struct<ts timestamp, item_id string>>")
    vocab = spark.createDataFrame([("a", 1, 2), ("b", 2, 2)],
                                  "item_id string, item_index int, train_clicks long")
    rows = {r["session_id"]: (list(r["items"]), list(r["gaps"]))
            for r in etl.index_sessions(sessions, vocab).collect()}
    # z is unknown: b's gap runs from a, the previous kept click
    assert rows == {"s": ([1, 2, 1], [0.0, 90.0, 1.0]), "r": ([2, 1], [0.0, 3600.0])}
