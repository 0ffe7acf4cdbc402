"""Sampled softmax (srgnn.model.sampled), lazy Adam (srgnn.training.lazy_adam) and their use by
the training loop."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from srgnn.config import TrainConfig
from srgnn.data.graph import build_graphs
from srgnn.data.samples import clustered_sessions, expand_prefixes, sessions_to_arrays
from srgnn.model.batching import collate
from srgnn.model.network import SRGNN, ModelConfig
from srgnn.model.sampled import NegativeSampler, sampled_cross_entropy, sampled_loss, target_counts
from srgnn.training.checkpoints import CHECKPOINT_NAME
from srgnn.training.lazy_adam import LazyAdam
from srgnn.training.loop import _make_optimizer, train

from test_train import NUM_ITEMS, SMALL, splits  # noqa: F401  (splits: the shared fixture)



def _case(seed: int, num_items: int = 40):
    values, offsets = sessions_to_arrays(
        clustered_sessions(num_items=num_items, num_sessions=30, seed=seed))
    prefix_values, prefix_offsets, targets, _ = expand_prefixes(values, offsets)
    batch = collate(build_graphs(prefix_values, prefix_offsets), targets)
    torch.manual_seed(seed)
    return batch, SRGNN(ModelConfig(num_items=num_items, hidden_size=16))


def test_whole_catalogue_with_a_uniform_proposal_is_the_full_cross_entropy():
    batch, model = _case(3)
    # the reference: plain autograd through the scores of every item
    expected = F.cross_entropy(model(batch), batch.targets - 1)
    expected.backward()
    expected_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    # every item once as a negative (K = N, q = 1/N: log(K q) = 0); each target is among them
    # and must count once only (its accidental hit masked)
    sampler = NegativeSampler.uniform(40, num_negatives=40)
    loss = sampled_loss(model, batch, sampler, negatives=torch.arange(1, 41))
    loss.backward()
    torch.testing.assert_close(loss, expected)
    assert model.embedding.weight.grad.is_sparse
    for name, parameter in model.named_parameters():
        grad = parameter.grad.to_dense() if parameter.grad.is_sparse else parameter.grad
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-7)

    # A uniform proposal shifts every logit by the same log(K q): the same loss with K = 2N.
    twice = NegativeSampler.uniform(40, num_negatives=80)
    model.zero_grad(set_to_none=True)
    torch.testing.assert_close(
        sampled_loss(model, batch, twice, negatives=torch.arange(1, 41)), expected)


def test_the_table_gradient_names_only_the_rows_the_step_used():
    batch, model = _case(5)
    sampler = NegativeSampler.uniform(40, num_negatives=4)
    negatives = torch.tensor([7, 7, 30, 2])
    sampled_loss(model, batch, sampler, negatives=negatives).backward()
    used = set(batch.node_items.tolist()) | set(batch.targets.tolist()) | {7, 30, 2}
    grad = model.embedding.weight.grad.coalesce()
    assert set(grad.indices()[0].tolist()) == used
    assert len(used) < 41
    with pytest.raises(ValueError, match="sampler"):
        sampled_loss(model, batch, NegativeSampler.uniform(39, 4))


def test_log_q_correction_is_stationary_at_the_true_distribution_under_a_skewed_proposal():
    """One context with free logits (identity item embeddings) and targets drawn from P: at
    logits = log P, the full cross-entropy's expected gradient is 0. The sampled loss's
    expected gradient there must be about 0 too under a proposal Q that favours P's rare items,
    with the log-Q correction; without it (the same draws, a constant correction) training
    would move away from P, towards P's popular items."""
    n, k, draws, batch = 12, 6, 400, 512
    truth = torch.tensor([0.3, 0.2, 0.12, 0.1, 0.08, 0.06, 0.05, 0.04, 0.02, 0.015, 0.01, 0.005],
                         dtype=torch.float64)
    proposal = NegativeSampler(np.arange(1, n + 1, dtype=np.float64) ** 2, num_negatives=k)
    flat = NegativeSampler(np.ones(n), num_negatives=k)  # log(K q) the same for every item
    items = torch.eye(n + 1, dtype=torch.float64)[:, 1:]  # row j: the one-hot of item j
    mean_grads = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny operations: threads only cost here
    try:
        _mean_gradients(mean_grads, truth, proposal, flat, items, n, draws, batch)
    finally:
        torch.set_num_threads(threads)
    assert float(mean_grads["corrected"].norm()) < 0.03, mean_grads
    uncorrected = mean_grads["uncorrected"]
    assert float(uncorrected.norm()) > 0.1, mean_grads
    assert uncorrected[0] < -0.05 and uncorrected[-1] > 0.01  # pushes the popular items up


def _mean_gradients(mean_grads, truth, proposal, flat, items, n, draws, batch):
    for name, correction in (("corrected", proposal), ("uncorrected", flat)):
        generator = torch.Generator().manual_seed(0)
        proposal.generator.manual_seed(1)
        logits = torch.log(truth).requires_grad_(True)
        total = torch.zeros(n, dtype=torch.float64)
        for _ in range(draws):
            targets = torch.multinomial(truth, batch, replacement=True, generator=generator) + 1
            negatives = proposal.sample()  # drawn from Q in both cases
            loss = sampled_cross_entropy(logits.expand(batch, n), items[targets], items[negatives],
                                         targets, negatives, correction)
            total += torch.autograd.grad(loss, logits)[0]
        mean_grads[name] = total / draws


def test_negatives_follow_the_proposal_and_repeat_per_seed_and_epoch():
    counts = np.array([0, 9, 0, 99, 0])  # items 1..4; entry 0 is padding
    sampler = NegativeSampler.from_counts(counts, num_negatives=20000, power=0.5)
    sampler.reseed(7, 1)
    drawn = sampler.sample()
    assert drawn.min() >= 1 and drawn.max() <= 4
    shares = np.bincount(drawn.numpy(), minlength=5)[1:] / 20000
    expected = np.sqrt([10, 1, 100, 1]) / np.sqrt([10, 1, 100, 1]).sum()
    np.testing.assert_allclose(shares, expected, atol=0.01)
    np.testing.assert_allclose(sampler.log_expected_count(torch.tensor([3])).numpy(),
                               np.log(20000 * expected[2]), rtol=1e-5)
    sampler.reseed(7, 1)
    assert torch.equal(sampler.sample(), drawn)
    sampler.reseed(7, 2)
    assert not torch.equal(sampler.sample(), drawn)


def test_lazy_adam_leaves_unused_rows_bit_identical_where_adam_decays_them():
    torch.manual_seed(0)
    table = torch.randn(10, 4)
    rows = torch.tensor([2, 5, 5, 8])  # row 5 twice: its gradients add up
    values = torch.randn(4, 4)
    sparse = torch.sparse_coo_tensor(rows.unsqueeze(0), values, table.shape,
                                     check_invariants=True)
    dense_grad = sparse.to_dense()

    lazy_table = torch.nn.Parameter(table.clone())
    lazy = LazyAdam([lazy_table], lr=0.1, weight_decay=0.5)
    adam_table = torch.nn.Parameter(table.clone())
    adam = torch.optim.Adam([adam_table], lr=0.1, weight_decay=0.5)
    for step in range(2):
        lazy_table.grad = sparse.clone()
        lazy.step()
        adam_table.grad = dense_grad.clone()
        adam.step()
        if step == 0:  # the rows a step used: exactly dense Adam's update
            assert torch.equal(lazy_table[[2, 5, 8]], adam_table[[2, 5, 8]])
    untouched = [0, 1, 3, 4, 6, 7, 9]
    assert torch.equal(lazy_table.detach()[untouched], table[untouched])  # not even decayed
    assert torch.equal(lazy.state[lazy_table]["exp_avg"][untouched], torch.zeros(7, 4))
    assert not torch.equal(adam_table.detach()[untouched], table[untouched])  # L2 moves them
    assert not torch.equal(lazy_table.detach()[[2, 5, 8]], table[[2, 5, 8]])
    assert lazy.state[lazy_table]["step"] == 2


def test_lazy_adam_on_dense_gradients_is_adam():
    torch.manual_seed(1)
    weights = torch.randn(6, 3)
    ours, theirs = torch.nn.Parameter(weights.clone()), torch.nn.Parameter(weights.clone())
    lazy = LazyAdam([ours], lr=0.01, weight_decay=1e-3)
    adam = torch.optim.Adam([theirs], lr=0.01, weight_decay=1e-3)
    for _ in range(5):
        grad = torch.randn(6, 3)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        lazy.step()
        adam.step()
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)


def test_auto_picks_sampled_softmax_above_the_threshold():
    config = TrainConfig(sampled_softmax_above=100)
    assert config.softmax_for(100) == "full" and config.softmax_for(101) == "sampled"
    assert TrainConfig().softmax_for(43_097) == "full"
    assert TrainConfig().softmax_for(1_000_000) == "sampled"
    assert replace(config, softmax="full").softmax_for(10**7) == "full"
    assert replace(config, softmax="sampled").softmax_for(2) == "sampled"
    model = SRGNN(ModelConfig(num_items=5, hidden_size=4))
    assert isinstance(_make_optimizer(model, config, "sampled"), LazyAdam)
    assert isinstance(_make_optimizer(model, config, "full"), torch.optim.Adam)
    with pytest.raises(ValueError, match="softmax"):
        TrainConfig(softmax="partial")


def test_target_counts_read_the_training_targets(splits):
    train_dir, _ = splits
    counts = target_counts(train_dir, NUM_ITEMS)
    targets = pq.read_table(train_dir, columns=["target"]).column("target").to_numpy()
    assert counts.shape == (NUM_ITEMS + 1,) and counts.sum() == len(targets) and counts[0] == 0
    assert counts[targets[0]] == np.sum(targets == targets[0])


@pytest.mark.slow
def test_sampled_softmax_training_learns_and_auto_switches(splits):
    train_dir, valid_dir = splits
    config = replace(SMALL, hidden_size=32, epochs=4, softmax="sampled", negatives=30)
    result = train(train_dir, valid_dir, NUM_ITEMS, config)
    losses = [epoch.train_loss for epoch in result.history]
    assert losses[-1] < 0.7 * losses[0]
    targets = pq.read_table(train_dir, columns=["target"]).column("target").to_numpy()
    valid_targets = pq.read_table(valid_dir, columns=["target"]).column("target").to_numpy()
    top = np.argsort(-np.bincount(targets, minlength=NUM_ITEMS + 1)[1:], kind="stable")[:20] + 1
    popularity = float(np.isin(valid_targets, top).mean())
    # validation ranks every item exactly, as with the full loss
    assert result.best_valid_hit_rate > popularity + 0.3, (result.best_valid_hit_rate, popularity)

    quick = replace(SMALL, epochs=1, max_examples_per_epoch=500, max_valid_examples=200,
                    negatives=30)
    auto = train(train_dir, valid_dir, NUM_ITEMS, replace(quick, sampled_softmax_above=NUM_ITEMS - 1))
    sampled = train(train_dir, valid_dir, NUM_ITEMS, replace(quick, softmax="sampled"))
    full = train(train_dir, valid_dir, NUM_ITEMS, replace(quick, softmax="full"))
    default = train(train_dir, valid_dir, NUM_ITEMS, quick)  # 120 items: the full loss
    assert auto.history[0].train_loss == sampled.history[0].train_loss
    assert default.history[0].train_loss == full.history[0].train_loss
    assert sampled.history[0].train_loss != full.history[0].train_loss
    for name, tensor in default.best_state_dict.items():
        assert torch.equal(tensor, full.best_state_dict[name]), name


def test_sampled_training_resumes_exactly_and_guards_its_settings(splits, tmp_path):
    train_dir, valid_dir = splits
    config = replace(SMALL, softmax="sampled", negatives=20, max_examples_per_epoch=600,
                     max_valid_examples=200)
    whole = train(train_dir, valid_dir, NUM_ITEMS, config, output_dir=tmp_path / "a")

    class Crash(RuntimeError):
        pass

    def crash(stats):
        if stats.epoch == 2:
            raise Crash

    with pytest.raises(Crash):
        train(train_dir, valid_dir, NUM_ITEMS, config, output_dir=tmp_path / "b", on_epoch_end=crash)
    resumed = train(train_dir, valid_dir, NUM_ITEMS, config, output_dir=tmp_path / "b", resume=True)
    assert [s.train_loss for s in resumed.history] == [s.train_loss for s in whole.history]
    final_a = torch.load(tmp_path / "a" / CHECKPOINT_NAME, weights_only=True)
    final_b = torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=True)
    for name, tensor in final_a["model"].items():
        assert torch.equal(tensor, final_b["model"][name]), name
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(final_a["optimizer"]["state"][0][key], final_b["optimizer"]["state"][0][key])

    for other in (replace(config, negatives=21), replace(config, softmax="full")):
        with pytest.raises(ValueError, match=r"\(softmax differ\)"):
            train(train_dir, valid_dir, NUM_ITEMS, other, output_dir=tmp_path / "a", resume=True)
    # "auto" that chooses sampled softmax for this catalogue resumes the same run
    same = replace(config, softmax="auto", sampled_softmax_above=NUM_ITEMS - 1)
    train(train_dir, valid_dir, NUM_ITEMS, same, output_dir=tmp_path / "a", resume=True,
          on_epoch_end=lambda stats: pytest.fail("no epoch should run"))
