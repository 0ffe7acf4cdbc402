"""The SR-GNN model's accuracy options (normalize, position embeddings, dropout, star node):
off they leave the reference model as it is; on, each computes what its equations say, trains,
scores and survives a save and reload."""

from __future__ import annotations

import math
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from srgnn import config
from srgnn.cli import cli
from srgnn.config import TrainConfig
from srgnn.data.graph import build_graphs
from srgnn.data.samples import clustered_sessions, expand_prefixes, sessions_to_arrays
from srgnn.model.batching import collate
from srgnn.model.network import SRGNN, ModelConfig
from srgnn.model.sampled import NegativeSampler, sampled_loss
from srgnn.serving.predict import Scorer
from srgnn.training.checkpoints import (BEST_MODEL_NAME, CHECKPOINT_NAME, RunState,
                                       load_checkpoint, save_best, save_checkpoint)
from srgnn.training.loop import model_config, train, training_step
from test_train import NUM_ITEMS as SPLIT_ITEMS
from test_train import SMALL, popularity_hit_rate, splits  # noqa: F401  (splits: a fixture)

NUM_ITEMS = 40
ALL_ON = dict(normalize=True, scale=16.0, position_embeddings=True, dropout=0.3, star_node=True)
EACH = {
    "normalize": dict(normalize=True),
    "position_embeddings": dict(position_embeddings=True),
    "dropout": dict(dropout=0.3),
    "star_node": dict(star_node=True),
    "all": ALL_ON,
}
# The reference SR-GNN's parameters (hybrid readout), written out.
REFERENCE_KEYS = [
    "embedding.weight",
    "gnn.bias_in", "gnn.bias_out", "gnn.edge_in.weight", "gnn.edge_in.bias",
    "gnn.edge_out.weight", "gnn.edge_out.bias", "gnn.input_gates.weight", "gnn.input_gates.bias",
    "gnn.state_gates.weight", "gnn.state_gates.bias",
    "readout.last_query.weight", "readout.last_query.bias", "readout.click_key.weight",
    "readout.click_key.bias", "readout.attention.weight", "readout.transform.weight",
    "readout.transform.bias",
]


def batch_of(sessions, targets=None):
    values, offsets = sessions_to_arrays(sessions)
    return collate(build_graphs(values, offsets), targets)


def training_batch(seed: int = 3, num_items: int = NUM_ITEMS, num_sessions: int = 30):
    values, offsets = sessions_to_arrays(
        clustered_sessions(num_items=num_items, num_sessions=num_sessions, seed=seed))
    prefix_values, prefix_offsets, targets, _ = expand_prefixes(values, offsets)
    return collate(build_graphs(prefix_values, prefix_offsets), targets)


def model_with(seed: int = 0, **options) -> SRGNN:
    torch.manual_seed(seed)
    return SRGNN(ModelConfig(num_items=NUM_ITEMS, hidden_size=8, **options))


# ------------------------------------------------------------------------------------------
# Every option off: the reference model
# ------------------------------------------------------------------------------------------
def test_the_model_config_is_the_reference_and_training_turns_three_options_on():
    shape = ModelConfig(num_items=NUM_ITEMS)
    assert (shape.normalize, shape.scale, shape.position_embeddings, shape.dropout,
            shape.star_node, shape.max_position) == (False, 12.0, False, 0.0, False, 50)
    assert shape.options == []
    # Training's defaults: the three options validation favoured (README), dropout off.
    train = TrainConfig()
    assert (train.normalize, train.scale, train.position_embeddings, train.dropout,
            train.star_node) == (True, 12.0, True, 0.0, True)
    paper = TrainConfig(normalize=False, position_embeddings=False, star_node=False)
    assert model_config(paper, NUM_ITEMS) == shape
    model = model_with()
    assert sorted(model.state_dict()) == sorted(REFERENCE_KEYS)
    d, n = 8, NUM_ITEMS
    expected_count = (n + 1) * d + 2 * (d * d + d) + 2 * d + (2 * d * 3 * d + 3 * d) \
        + (d * 3 * d + 3 * d) + 2 * (d * d + d) + d + (2 * d * d + d)
    assert sum(p.numel() for p in model.parameters()) == expected_count
    on = model_with(**ALL_ON)
    extra = sorted(set(on.state_dict()) - set(REFERENCE_KEYS))
    assert extra == ["readout.positions.weight", "star.highway.bias", "star.highway.weight",
                     "star.node_key.weight", "star.node_query.weight", "star.star_key.weight",
                     "star.star_query.weight"]
    assert on.readout.positions.weight.shape == (50, 8)


# ------------------------------------------------------------------------------------------
# Each option and all together: shapes, finite gradients, every parameter learning
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("name", list(EACH))
def test_each_option_gives_scores_and_finite_gradients_for_every_parameter(name, steps):
    batch = training_batch()
    model = model_with(steps=steps, **EACH[name]).train()
    scores = model(batch)
    assert scores.shape == (batch.batch_size, NUM_ITEMS) and torch.isfinite(scores).all()
    loss = model.loss(batch)
    assert torch.isfinite(loss)
    loss.backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name
        assert parameter.grad.abs().sum() > 0, parameter_name


@pytest.mark.parametrize("name", ["normalize", "position_embeddings", "star_node", "all"])
def test_the_training_loss_is_the_cross_entropy_of_the_scores_with_the_same_gradients(name):
    batch = training_batch(seed=4)
    options = dict(EACH[name], dropout=0.0)  # deterministic, to compare two passes
    model = model_with(seed=4, steps=2, **options)
    expected = F.cross_entropy(model(batch), batch.targets - 1)
    expected.backward()
    expected_grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    loss = model.loss(batch)
    loss.backward()
    torch.testing.assert_close(loss, expected)
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected_grads[k], rtol=1e-4, atol=1e-6)
    # bfloat16 operands for the catalogue products: the same loss up to their rounding
    torch.testing.assert_close(model.loss(batch, "bfloat16"), expected, rtol=0, atol=0.05)


# ------------------------------------------------------------------------------------------
# normalize
# ------------------------------------------------------------------------------------------
def test_normalize_scores_are_scale_times_the_cosine_computed_by_hand():
    torch.manual_seed(0)
    model = SRGNN(ModelConfig(num_items=3, hidden_size=2, normalize=True, scale=12.0))
    with torch.no_grad():
        model.embedding.weight[1:] = torch.tensor([[3.0, 4.0], [0.0, -2.0], [1.0, 0.0]])
    session = torch.tensor([[1.0, 1.0], [-2.0, 0.0]])
    scores = model.score_items(session)
    # cosines: (1,1).(3,4) = 7 over sqrt(2) * 5; (1,1).(0,-2) = -2 over sqrt(2) * 2; ...
    expected = torch.tensor([[12 * 7 / (5 * math.sqrt(2)), -12 / math.sqrt(2), 12 / math.sqrt(2)],
                             [12 * -6 / 10, 0.0, -12.0]])
    torch.testing.assert_close(scores, expected)
    torch.testing.assert_close(model.score_items(session, 1, 3), expected[:, 1:])
    # a model with normalize off multiplies the raw vectors
    plain = SRGNN(ModelConfig(num_items=3, hidden_size=2))
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(plain.score_items(session),
                               torch.tensor([[7.0, -2.0, 1.0], [-6.0, 0.0, -2.0]]))


def test_normalize_scores_stay_within_the_scale_and_ignore_the_vectors_length():
    batch = training_batch()
    model = model_with(normalize=True, scale=16.0).eval()
    with torch.no_grad():
        scores = model(batch)
        assert scores.abs().max() <= 16.0 + 1e-4
        assert scores.abs().max() > 8.0  # the scale is used, not a plain cosine
        model.embedding.weight.mul_(7.0)  # longer vectors, same directions: same scores
        torch.testing.assert_close(model(batch), scores, rtol=1e-4, atol=1e-4)


def test_normalize_sampled_softmax_over_the_whole_catalogue_is_the_full_loss():
    batch = training_batch(seed=5)
    model = model_with(seed=5, normalize=True, scale=12.0)
    expected = model.loss(batch)
    sampler = NegativeSampler.uniform(NUM_ITEMS, num_negatives=NUM_ITEMS)
    loss = sampled_loss(model, batch, sampler, negatives=torch.arange(1, NUM_ITEMS + 1))
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_the_scorer_ranks_by_the_normalised_scores(precision):
    batch_sessions = clustered_sessions(num_items=NUM_ITEMS, num_sessions=20, seed=6)
    values, offsets = sessions_to_arrays(batch_sessions)
    model = model_with(seed=6, normalize=True, scale=12.0, position_embeddings=True,
                       star_node=True).eval()
    with torch.no_grad():
        # long vectors for unpopular directions: a dot-product ranking would differ
        model.embedding.weight[1::2] *= 10.0
        expected_scores, expected_columns = torch.topk(model(collate(build_graphs(values, offsets))), 5)
        raw = F.linear(model.session_embedding(collate(build_graphs(values, offsets))),
                       model.embedding.weight[1:])
    assert not torch.equal(torch.topk(raw, 5).indices, expected_columns)
    top = Scorer(model, precision=precision, candidates=10).top_k(values, offsets, k=5)
    np.testing.assert_array_equal(top.items, expected_columns.numpy() + 1)
    np.testing.assert_allclose(top.scores, expected_scores.numpy(), rtol=1e-5, atol=1e-5)


def test_the_approximate_index_searches_the_normalised_vectors():
    num_items = 400
    torch.manual_seed(7)
    model = SRGNN(ModelConfig(num_items=num_items, hidden_size=8, normalize=True)).eval()
    with torch.no_grad():
        model.embedding.weight[1::2] *= 10.0
    values, offsets = sessions_to_arrays(clustered_sessions(num_items=num_items, num_sessions=50,
                                                            seed=7))
    exact = Scorer(model, topk_index="exact").top_k(values, offsets, k=10)
    approximate = Scorer(model, topk_index="ivf", nprobe=10_000, recall_sample=0)
    found = approximate.top_k(values, offsets, k=10)
    assert approximate.approximate and approximate.topk_report()["nlist"] > 1
    np.testing.assert_array_equal(found.items, exact.items)  # every list probed: exact
    np.testing.assert_allclose(found.scores, exact.scores, rtol=1e-5, atol=1e-5)
    assert np.abs(found.scores).max() <= 12.0 + 1e-4


# ------------------------------------------------------------------------------------------
# position embeddings
# ------------------------------------------------------------------------------------------
def test_reversed_positions_count_from_the_last_click_and_share_the_last_one():
    model = SRGNN(ModelConfig(num_items=6, hidden_size=4, position_embeddings=True,
                              max_position=3))
    batch = batch_of([[3, 5, 2, 5], [4, 4, 3], [2]])
    positions = model.readout.reversed_positions(batch.click_sessions, batch.batch_size)
    assert positions.tolist() == [2, 2, 1, 0, 2, 1, 0, 0]


def test_zero_position_table_gives_the_baseline_output():
    batch = training_batch()
    baseline = model_with(seed=1, steps=2)
    positioned = model_with(seed=1, steps=2, position_embeddings=True)
    missing = positioned.load_state_dict(baseline.state_dict(), strict=False).missing_keys
    assert missing == ["readout.positions.weight"]
    with torch.no_grad():
        positioned.readout.positions.weight.zero_()
        torch.testing.assert_close(positioned(batch), baseline(batch))
        positioned.readout.positions.weight.normal_()
        assert not torch.allclose(positioned(batch), baseline(batch), atol=1e-3)


def test_position_embeddings_follow_the_readout_equations_session_by_session():
    sessions = [[3, 5, 2, 5, 1, 6], [4, 4, 3], [2]]
    torch.manual_seed(2)
    model = SRGNN(ModelConfig(num_items=6, hidden_size=5, position_embeddings=True,
                              max_position=4))
    batch = batch_of(sessions)
    with torch.no_grad():
        nodes = model.propagate(model.embedding(batch.node_items), batch)
        got = model.session_embedding(batch)
        r = model.readout
        P = r.positions.weight
        for row, clicks in enumerate(sessions):
            m = len(clicks)
            click_nodes = batch.alias[row, :m]
            x = torch.stack([nodes[click_nodes[t]] + P[min(m - 1 - t, 3)] for t in range(m)])
            x_last = x[-1]
            alpha = torch.sigmoid(r.last_query(x_last) + r.click_key(x)) @ r.attention.weight[0]
            s_g = (alpha[:, None] * x).sum(0)
            expected = r.transform(torch.cat([s_g, x_last]))
            torch.testing.assert_close(got[row], expected, rtol=1e-5, atol=1e-6)
        # the padded layout computes the same
        torch.testing.assert_close(model.session_embedding(batch.to_padded()), got)


# ------------------------------------------------------------------------------------------
# dropout
# ------------------------------------------------------------------------------------------
def test_dropout_is_off_in_eval_mode_and_on_in_training_mode():
    batch = training_batch()
    plain = model_with(seed=2)
    dropped = model_with(seed=2, dropout=0.5)
    dropped.load_state_dict(plain.state_dict())
    plain.eval(), dropped.eval()
    with torch.no_grad():
        first = dropped(batch)
        torch.testing.assert_close(dropped(batch), first, rtol=0, atol=0)  # deterministic
        torch.testing.assert_close(first, plain(batch), rtol=0, atol=0)  # = dropout 0
        dropped.train()
        torch.manual_seed(0)
        one = dropped.session_embedding(batch)
        two = dropped.session_embedding(batch)
        assert not torch.allclose(one, two)  # a new mask each pass
        # the session vector's dropout zeroes about half its entries, the kept ones doubled
        zero_share = float((one == 0).float().mean())
        assert 0.35 < zero_share < 0.65
        plain.train()
        assert not torch.allclose(dropped.loss(batch), plain.loss(batch))


def test_bad_option_values_are_refused_in_one_line():
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        ModelConfig(num_items=5, dropout=1.0)
    with pytest.raises(ValueError, match="scale must be positive"):
        ModelConfig(num_items=5, scale=0.0)
    with pytest.raises(config.SettingError, match=r"SRGNN_DROPOUT must be in \[0, 1\), not 1.5"):
        config.from_env(TrainConfig, {"SRGNN_DROPOUT": "1.5"})
    with pytest.raises(config.SettingError, match="SRGNN_SCALE must be positive, not 0.0"):
        config.from_env(TrainConfig, {"SRGNN_SCALE": "0"})
    with pytest.raises(config.SettingError, match="SRGNN_STAR_NODE must be true or false"):
        config.from_env(TrainConfig, {"SRGNN_STAR_NODE": "sometimes"})


# ------------------------------------------------------------------------------------------
# star node
# ------------------------------------------------------------------------------------------
def star_reference(model: SRGNN, batch, initial: torch.Tensor) -> torch.Tensor:
    """The star node's equations, one session at a time with dense tensors."""
    star = model.star
    d = model.config.hidden_size
    offsets = batch.node_offsets.tolist()
    ranges = [slice(offsets[b], offsets[b + 1]) for b in range(batch.batch_size)]
    stars = [initial[r].mean(0) for r in ranges]
    hidden = initial
    for _ in range(model.config.steps):
        for b, r in enumerate(ranges):
            beta = torch.softmax(star.node_key(hidden[r]) @ star.star_query(stars[b]) / math.sqrt(d),
                                 dim=0)
            stars[b] = beta @ hidden[r]
        hidden = model.gnn(hidden, batch)
        parts = []
        for b, r in enumerate(ranges):
            h, s = hidden[r], stars[b]
            a = torch.sigmoid(star.node_query(h) @ star.star_key(s) / math.sqrt(d))  # (n,)
            parts.append((1 - a)[:, None] * h + a[:, None] * s)
        hidden = torch.cat(parts)
    g = torch.sigmoid(star.highway(torch.cat([initial, hidden], dim=1)))
    return g * initial + (1 - g) * hidden


@pytest.mark.parametrize("steps", [1, 2])
def test_star_node_follows_its_equations_session_by_session(steps):
    batch = batch_of([[3, 5, 2, 5, 1], [4, 4, 3], [2], [6, 1, 6, 2, 3, 4, 5]])
    torch.manual_seed(3)
    model = SRGNN(ModelConfig(num_items=6, hidden_size=5, steps=steps, star_node=True))
    with torch.no_grad():
        initial = model.embedding(batch.node_items)
        torch.testing.assert_close(model.propagate(initial, batch),
                                   star_reference(model, batch, initial), rtol=1e-5, atol=1e-6)


def test_star_node_with_the_highway_gate_forced_open_keeps_the_embeddings():
    batch = training_batch()
    model = model_with(steps=2, star_node=True)
    with torch.no_grad():
        model.star.highway.weight.zero_()
        model.star.highway.bias.fill_(100.0)  # g = sigmoid(100) = 1 in float32
        initial = model.embedding(batch.node_items)
        torch.testing.assert_close(model.propagate(initial, batch), initial, rtol=0, atol=1e-6)
        model.star.highway.bias.fill_(-100.0)  # g = 0: the propagated states alone
        assert not torch.allclose(model.propagate(initial, batch), initial, atol=1e-3)


def test_star_node_refuses_the_padded_layout_with_a_clear_error():
    batch = batch_of([[3, 5, 2], [4, 4]])
    model = model_with(star_node=True)
    with pytest.raises(ValueError, match="star node needs a block-diagonal GraphBatch"):
        model(batch.to_padded())


# ------------------------------------------------------------------------------------------
# Config, save and reload, training
# ------------------------------------------------------------------------------------------
def test_training_settings_reach_the_model_config_and_the_command_line(tmp_path):
    train = config.from_env(TrainConfig, {"SRGNN_NORMALIZE": "true", "SRGNN_SCALE": "16",
                                          "SRGNN_POSITION_EMBEDDINGS": "yes",
                                          "SRGNN_DROPOUT": "0.25", "SRGNN_STAR_NODE": "1"})
    shape = model_config(train, 77)
    assert (shape.normalize, shape.scale, shape.position_embeddings, shape.dropout,
            shape.star_node) == (True, 16.0, True, 0.25, True)
    assert shape.options == ["normalize", "position_embeddings", "dropout", "star_node"]
    assert model_config(TrainConfig(), 77) == ModelConfig(num_items=77, normalize=True,
                                                          position_embeddings=True, star_node=True)
    help_text = CliRunner().invoke(cli, ["train", "--help"], terminal_width=200).output
    for flag in ("--normalize", "--scale", "--position-embeddings", "--dropout", "--star-node",
                 "SRGNN_DROPOUT", "SRGNN_STAR_NODE"):
        assert flag in help_text, flag
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "train", "--clicks", str(tmp_path),
                                      "--dropout", "1.5"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "dropout must be in [0, 1)" in result.output


def test_a_saved_model_with_every_option_reloads_with_the_same_scores(tmp_path):
    batch = training_batch()
    model = model_with(seed=8, steps=2, **ALL_ON)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):  # weights away from their initial values
        training_step(model, optimizer, batch)
    model.eval()
    state = RunState(best_epoch=1, best_hit_rate=0.5, best_mrr=0.2,
                     best_state_dict={k: v.clone() for k, v in model.state_dict().items()})
    save_best(tmp_path, state, TrainConfig(**{k: v for k, v in ALL_ON.items()}), model.config)
    saved = torch.load(tmp_path / BEST_MODEL_NAME, weights_only=True)
    assert saved["model_config"] == asdict(model.config)
    values, offsets = sessions_to_arrays(clustered_sessions(num_items=NUM_ITEMS, num_sessions=20,
                                                            seed=9))
    reloaded = Scorer.from_checkpoint(tmp_path / BEST_MODEL_NAME, precision="float32")
    assert reloaded.model.config == model.config
    original = Scorer(model, precision="float32")
    a, b = original.top_k(values, offsets, k=10), reloaded.top_k(values, offsets, k=10)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_a_short_training_with_every_option_lowers_the_loss():
    batch = training_batch(seed=10, num_sessions=60)
    model = model_with(seed=10, steps=2, **ALL_ON)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.eval()
    with torch.no_grad():
        before = float(model.loss(batch))
    model.train()
    losses = [training_step(model, optimizer, batch) for _ in range(25)]
    model.eval()
    with torch.no_grad():
        after = float(model.loss(batch))
    assert all(math.isfinite(x) for x in losses)
    assert after < 0.8 * before, (before, after)
    assert after < math.log(NUM_ITEMS)  # better than a uniform guess over the catalogue


def test_a_checkpoint_from_before_the_options_resumes_with_them_off(tmp_path):
    shape = ModelConfig(num_items=NUM_ITEMS, hidden_size=8)
    model = SRGNN(shape)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3)
    paper = TrainConfig(normalize=False, position_embeddings=False, star_node=False)
    save_checkpoint(tmp_path, RunState(epoch=1), paper, shape, model, optimizer, scheduler)
    checkpoint = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    for name in ("normalize", "scale", "position_embeddings", "dropout", "star_node",
                 "popularity_penalty", "propensity_weighting", "propensity_clip", "search",
                 "search_trials", "candidates", "short_augment"):
        del checkpoint["config"][name]  # as a checkpoint written before these settings has it
    for name in ("normalize", "scale", "position_embeddings", "max_position", "dropout",
                 "star_node"):
        del checkpoint["model_config"][name]
    torch.save(checkpoint, tmp_path / CHECKPOINT_NAME)
    state = load_checkpoint(tmp_path, paper, shape, model, optimizer, scheduler)
    assert state.epoch == 1
    with pytest.raises(ValueError, match=r"\(dropout differ\)"):
        load_checkpoint(tmp_path, replace(paper, dropout=0.1), replace(shape, dropout=0.1), model,
                        optimizer, scheduler)
    with pytest.raises(ValueError, match="other settings"):  # the model's shape differs
        load_checkpoint(tmp_path, paper, replace(shape, normalize=True), model, optimizer,
                        scheduler)
    # Today's defaults turn three options on: such a checkpoint resumes only with them off,
    # and the refusal names them.
    with pytest.raises(ValueError, match=r"\(normalize, position_embeddings, star_node differ\)"):
        load_checkpoint(tmp_path, TrainConfig(), shape, model, optimizer, scheduler)


@pytest.mark.parametrize("softmax", ["full", "sampled"])
def test_training_runs_with_every_option_and_saves_a_model_that_reloads(splits, softmax, tmp_path):
    train_dir, valid_dir = splits
    settings = replace(SMALL, epochs=2, softmax=softmax, negatives=30, steps=2, **ALL_ON)
    result = train(train_dir, valid_dir, SPLIT_ITEMS, settings, output_dir=tmp_path)
    assert result.model_config.options == ["normalize", "position_embeddings", "dropout",
                                           "star_node"]
    losses = [epoch.train_loss for epoch in result.history]
    assert losses[1] < losses[0]
    assert result.best_valid_hit_rate > popularity_hit_rate(train_dir, valid_dir)
    values, offsets = sessions_to_arrays(clustered_sessions(num_items=SPLIT_ITEMS, num_sessions=30,
                                                            seed=12))
    saved = Scorer.from_checkpoint(tmp_path / BEST_MODEL_NAME, precision="float32")
    trained = Scorer(result.best_model(), precision="float32")
    np.testing.assert_array_equal(saved.top_k(values, offsets).items,
                                  trained.top_k(values, offsets).items)
