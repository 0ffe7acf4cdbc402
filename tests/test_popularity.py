"""Popularity bias: the list measures, the loss's popularity penalty and inverse-propensity
weights, each against values worked out by hand, and a training run that the penalty moves
towards rarer items."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from srgnn.config import SettingError, TrainConfig, from_env
from srgnn.evaluation import metrics
from srgnn.evaluation.evaluate import evaluate_graphs, evaluate_ranked
from srgnn.evaluation.report import format_table
from srgnn.model.kernels import _CatalogueCrossEntropy
from srgnn.model.popularity import (PopularityLoss, normalised_log_popularity,
                                    propensity_weights)

# items 1..5 with 50, 30, 10, 6, 4 training clicks (100 in all): items 1 and 2 make 80 clicks,
# the 80% head; items 3, 4 and 5 are the long tail
POPULARITY = np.array([0, 50, 30, 10, 6, 4])


# -- metrics ------------------------------------------------------------------------------------
def test_long_tail_cut_by_hand():
    assert metrics.long_tail_items(POPULARITY).tolist() == [False, False, False, True, True, True]
    # 40 + 40 reaches 80% exactly at item 2
    assert metrics.long_tail_items([0, 40, 40, 10, 6, 4]).tolist() == [False, False, False, True,
                                                                       True, True]
    # equal clicks: lower index first; 10 + 10 + 10 + 10 = 40 = 80% of 50
    assert metrics.long_tail_items([0, 10, 10, 10, 10, 10]).tolist() == [False] * 5 + [True]
    # 50 + 29 = 79 falls short of 80: item 3 joins the head
    assert metrics.long_tail_items([0, 50, 29, 11, 6, 4]).tolist() == [False] * 4 + [True, True]
    assert not metrics.long_tail_items([0, 0, 0]).any()
    with pytest.raises(ValueError):
        metrics.long_tail_items(POPULARITY, head_share=0)


def test_list_measures_by_hand():
    top_items = np.array([[1, 2], [1, 3], [4, 1], [0, 0]])  # 0: nothing recommended
    assert metrics.coverage_at_k(top_items, 5, k=2) == pytest.approx(4 / 5)  # items 1..4
    # entries 1, 2, 1, 3, 4, 1: clicks 50 + 30 + 50 + 10 + 6 + 50
    assert metrics.average_popularity_at_k(top_items, POPULARITY, k=2) == pytest.approx(196 / 6)
    assert metrics.average_popularity_at_k(top_items, POPULARITY, k=1) == pytest.approx(106 / 3)  # 1, 1, 4
    assert metrics.long_tail_share_at_k(top_items, POPULARITY, k=2) == pytest.approx(2 / 6)  # 3, 4
    assert metrics.long_tail_share_at_k(top_items, POPULARITY, k=1) == pytest.approx(1 / 3)  # 4
    assert math.isnan(metrics.average_popularity_at_k(np.zeros((2, 2)), POPULARITY, k=2))


def test_long_tail_hit_rate_by_hand():
    ranks = np.array([2, 2, 0, 1])
    targets = np.array([2, 3, 5, 4])  # 3, 5 and 4 are long tail: hit, miss, hit
    assert metrics.long_tail_hit_rate_at_k(ranks, targets, POPULARITY, k=2) == pytest.approx(2 / 3)
    assert metrics.long_tail_hit_rate_at_k(ranks, targets, POPULARITY, k=1) == pytest.approx(1 / 3)
    assert math.isnan(metrics.long_tail_hit_rate_at_k(ranks[:1], targets[:1], POPULARITY, k=2))
    assert math.isnan(metrics.long_tail_hit_rate_at_k(ranks[:1], [0], POPULARITY, k=2))


def test_metric_table_and_report_carry_the_popularity_figures():
    top_items = np.array([[1, 2], [3, 1], [4, 5]])
    targets = np.array([2, 3, 2])  # ranks 2, 1, 0; long-tail target 3 hit
    result = evaluate_ranked(top_items, targets, np.array([1, 2, 3]), POPULARITY, k=2)
    assert result["HR@2"] == pytest.approx(2 / 3)
    assert result["coverage@2"] == pytest.approx(1.0)
    assert result["avg_popularity@2"] == pytest.approx((50 + 30 + 10 + 50 + 6 + 4) / 6)
    assert result["long_tail@2"] == pytest.approx(3 / 6)
    assert result["long_tail_HR@2"] == pytest.approx(1.0)
    table = format_table({"model_a": result})
    header = table.splitlines()[1]
    for key in ("HR@2 %", "MRR@2 %", "coverage@2 %", "long_tail@2 %", "long_tail_HR@2 %",
                "avg_popularity@2"):
        assert key in header
    assert "25.000" in table.splitlines()[3]  # 150 clicks / 6 entries


# -- the penalty --------------------------------------------------------------------------------
def identity_scores(scores: torch.Tensor):
    """Session and table whose catalogue scores are ``scores`` itself (item rows = unit vectors),
    so the session's gradient is the scores' gradient."""
    batch, items = scores.shape
    table = torch.cat([torch.zeros(1, items), torch.eye(items)]).double()
    return scores.clone().double().requires_grad_(True), table


def test_normalised_log_popularity_by_hand():
    a = normalised_log_popularity([0, 3, 1, 0])  # log 4, log 2, log 1 over log 4
    assert a.tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert normalised_log_popularity([0, 0, 0]).tolist() == [0.0, 0.0]


def test_penalty_value_and_gradient_by_hand():
    # row 0: equal scores, p = 1/3 each, E[a] = 0.5; row 1: p = (3/5, 1/5, 1/5), E[a] = 0.3
    scores = torch.tensor([[0.0, 0.0, 0.0], [math.log(3), 0.0, 0.0]])
    a = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    columns = torch.tensor([1, 0])
    lam = 0.3

    def loss_and_grad(penalty):
        session, table = identity_scores(scores)
        loss = _CatalogueCrossEntropy.apply(session, table, columns, None, torch.float32, False,
                                            None, penalty, a)
        loss.backward()
        return float(loss.detach()), session.grad

    plain_loss, plain_grad = loss_and_grad(0.0)
    assert plain_loss == pytest.approx((math.log(3) - math.log(0.6)) / 2)  # ce of each row
    assert plain_grad.tolist()[0] == pytest.approx([1 / 6, -1 / 3, 1 / 6])  # (p - onehot) / 2
    loss, grad = loss_and_grad(lam)
    assert loss - plain_loss == pytest.approx(lam * (0.5 + 0.3) / 2)
    # lam / B * p_j (a_j - E[a]): row 0 1/6 * (-0.5, 0, 0.5), row 1 1/2 * (0.6 * -0.3, 0.2 * 0.2, 0.2 * 0.7)
    expected = lam * torch.tensor([[-1 / 12, 0.0, 1 / 12], [-0.09, 0.02, 0.07]], dtype=torch.float64)
    assert torch.allclose(grad - plain_grad, expected, atol=1e-12)


def test_weighted_cross_entropy_by_hand():
    scores = torch.tensor([[0.0, 0.0, 0.0], [math.log(3), 0.0, 0.0]])
    weights = torch.tensor([0.5, 1.5], dtype=torch.float64)
    session, table = identity_scores(scores)
    loss = _CatalogueCrossEntropy.apply(session, table, torch.tensor([1, 0]), None,
                                        torch.float32, False, weights)
    loss.backward()
    assert float(loss.detach()) == pytest.approx((0.5 * math.log(3) + 1.5 * -math.log(0.6)) / 2)
    # row 1: 1.5 * (0.6 - 1, 0.2, 0.2) / 2
    assert session.grad.tolist()[1] == pytest.approx([-0.3, 0.15, 0.15])


def tiny_model_and_batch():
    from srgnn.data.graph import build_graphs
    from srgnn.data.samples import expand_prefixes, sessions_to_arrays
    from srgnn.model.batching import collate
    from srgnn.model.network import SRGNN, ModelConfig

    torch.manual_seed(0)
    values, offsets = sessions_to_arrays([[1, 2, 3], [4, 5], [2, 6]])
    prefix_values, prefix_offsets, targets, _ = expand_prefixes(values, offsets)
    batch = collate(build_graphs(prefix_values, prefix_offsets), targets)
    return SRGNN(ModelConfig(num_items=6, hidden_size=8)), batch


def gradients(model):
    return [p.grad.clone() for p in model.parameters()]


def test_lambda_zero_and_weights_one_leave_the_loss_alone():
    model, batch = tiny_model_and_batch()
    plain = model.loss(batch)
    plain.backward()
    plain_grads = gradients(model)
    counts = np.array([0, 9, 5, 3, 2, 1, 0])
    neutral = PopularityLoss(0.0, torch.from_numpy(normalised_log_popularity(counts)),
                             torch.ones(7))
    model.zero_grad()
    loss = model.loss(batch, popularity=neutral)
    loss.backward()
    assert float(loss) == pytest.approx(float(plain), abs=1e-6)
    for got, want in zip(gradients(model), plain_grads):
        assert torch.allclose(got, want, atol=1e-6)
    assert PopularityLoss.from_counts(counts, 0.0, 0.0) is None  # both off: the plain loss runs


def test_model_loss_with_penalty_matches_the_composed_form():
    model, batch = tiny_model_and_batch()
    counts = np.array([0, 9, 5, 3, 2, 1, 0])
    terms = PopularityLoss.from_counts(counts, penalty=0.7, power=0.5, clip=2.0)
    loss = model.loss(batch, popularity=terms)
    loss.backward()
    fused = gradients(model)
    model.zero_grad()
    scores = model(batch)  # the same loss from ordinary operations
    weights = terms.weights(batch.targets)
    ce = F.cross_entropy(scores, batch.targets - 1, reduction="none")
    expected = torch.softmax(scores, 1) @ terms.log_popularity
    composed = (ce * weights).mean() + 0.7 * expected.mean()
    composed.backward()
    assert float(loss) == pytest.approx(float(composed), rel=1e-5)
    for got, want in zip(fused, gradients(model)):
        assert torch.allclose(got, want, atol=1e-5)


# -- inverse-propensity weights -----------------------------------------------------------------
def test_propensity_weights_by_hand():
    counts = np.array([0, 99, 3, 0, 8])  # (count + 1)^-0.5: 0.1, 0.5, 1, 1/3
    unclipped = propensity_weights(counts, 0.5, clip=100.0)
    assert unclipped.tolist() == pytest.approx([0.0, 0.1, 0.5, 1.0, 1 / 3])
    # median over the 110 training examples: 99 of them weigh 0.1; clip 2 -> at most 0.2
    clipped = propensity_weights(counts, 0.5, clip=2.0)
    assert clipped.tolist() == pytest.approx([0.0, 0.1, 0.2, 0.2, 0.2])
    terms = PopularityLoss.from_counts(counts, power=0.5, clip=2.0)
    # batch targets 1, 2, 3: 0.1, 0.2, 0.2 over their mean 1/6
    assert terms.weights(torch.tensor([1, 2, 3])).tolist() == pytest.approx([0.6, 1.2, 1.2])
    assert terms.log_popularity is None and terms.penalty == 0.0
    assert propensity_weights(counts, 0.0, 10.0).tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError):
        propensity_weights(counts, 1.5, 10.0)


def test_sampled_loss_takes_the_weights():
    from srgnn.model.sampled import NegativeSampler, sampled_loss

    model, batch = tiny_model_and_batch()
    # a uniform proposal with the whole catalogue as negatives is the full cross-entropy
    sampler, negatives = NegativeSampler.uniform(6, 6), torch.arange(1, 7)
    weights = torch.linspace(0.5, 1.5, len(batch.targets))
    weighted = sampled_loss(model, batch, sampler, negatives, weights=weights)
    each = F.cross_entropy(model(batch), batch.targets - 1, reduction="none")
    assert float(weighted) == pytest.approx(float((each * weights).mean()), rel=1e-5)
    assert float(weighted) != pytest.approx(float(each.mean()), rel=1e-3)


# -- settings -----------------------------------------------------------------------------------
def test_settings_and_their_refusals():
    config = from_env(TrainConfig, {"SRGNN_POPULARITY_PENALTY": "0.3",
                                    "SRGNN_PROPENSITY_WEIGHTING": "0.25"})
    assert (config.popularity_penalty, config.propensity_weighting) == (0.3, 0.25)
    assert TrainConfig().popularity_penalty == 0.0 and TrainConfig().propensity_weighting == 0.0
    with pytest.raises(SettingError, match="full softmax"):
        from_env(TrainConfig, {}, popularity_penalty=0.1, softmax="sampled")
    with pytest.raises(SettingError, match=r"\[0, 1\]"):
        from_env(TrainConfig, {"SRGNN_PROPENSITY_WEIGHTING": "1.5"})
    with pytest.raises(SettingError, match="at least 0"):
        from_env(TrainConfig, {"SRGNN_POPULARITY_PENALTY": "-1"})
    TrainConfig(propensity_weighting=0.5, softmax="sampled")  # weights work with both losses


def test_a_penalty_on_a_catalogue_that_auto_trains_sampled_is_refused_in_one_line():
    from srgnn.training.loop import refuse_popularity_penalty

    config = TrainConfig(popularity_penalty=0.1, sampled_softmax_above=100)  # softmax auto
    refuse_popularity_penalty(config, 100)  # full softmax: fine
    with pytest.raises(SettingError, match="needs the full softmax.*101 items"):
        refuse_popularity_penalty(config, 101)


# -- behaviour ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def skewed_splits(tmp_path_factory):
    from srgnn.data.samples import clustered_sessions, split_sessions, write_graph_parquet

    root = tmp_path_factory.mktemp("popularity")
    sessions = clustered_sessions(num_items=300, num_sessions=1200, cluster_size=6,
                                  follow_probability=0.5, seed=3)
    train_sessions, valid_sessions = split_sessions(sessions, valid_share=0.25)
    write_graph_parquet(root / "train", train_sessions)
    write_graph_parquet(root / "valid", valid_sessions)
    return root / "train", root / "valid"


def test_the_penalty_widens_the_lists_and_lowers_their_popularity(skewed_splits):
    from srgnn.model.sampled import target_counts
    from srgnn.training.loop import train

    train_dir, valid_dir = skewed_splits
    counts = target_counts(train_dir, 300)
    figures = {}
    for penalty in (0.0, 1.0):
        config = TrainConfig(hidden_size=16, batch_size=50, epochs=1, progress=False, seed=4,
                             num_threads=1, precision="float32", popularity_penalty=penalty)
        model = train(train_dir, None, 300, config).best_model()
        figures[penalty] = evaluate_graphs(model, valid_dir, counts, 20)
    assert figures[1.0]["coverage@20"] > figures[0.0]["coverage@20"]
    assert figures[1.0]["avg_popularity@20"] < figures[0.0]["avg_popularity@20"]
    assert figures[1.0]["long_tail@20"] > figures[0.0]["long_tail@20"]
