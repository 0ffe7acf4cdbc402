"""Parity with the reference implementation's batching and forward pass (srgnn.model.reference).

The reference batch (built session by session, padded to a fixed length) and this package's
block-diagonal batch of the same prefixes give the model the same loss and gradients, and the
reference forward pass (Python loop over sessions, ``matmul`` + ``cross_entropy``) computes
what ``SRGNN.loss`` computes, in float64 (the batches' edge weights stay float32 numbers) so
that only a real difference can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from srgnn.data.graph import build_graphs
from srgnn.data.ragged import from_lists
from srgnn.model.batching import collate
from srgnn.model.network import SRGNN, ModelConfig
from srgnn.model.reference import per_session_batch, per_session_batches, reference_code_loss

PREFIXES = [[3, 1, 3, 2], [5], [2, 2, 4], [1, 6, 1, 6, 1], [4, 2]]
TARGETS = np.array([2, 6, 1, 3, 5])
NUM_ITEMS = 6


def loss_and_gradients(model, loss_of):
    model.zero_grad(set_to_none=True)
    loss = loss_of(model)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.fixture()
def model():
    torch.manual_seed(5)
    return SRGNN(ModelConfig(num_items=NUM_ITEMS, hidden_size=8, steps=2)).double()


def as_double(batch):
    for name in ("adjacency_in", "adjacency_out", "edge_weight_in", "edge_weight_out",
                 "route_weights"):
        if hasattr(batch, name):
            setattr(batch, name, getattr(batch, name).double())
    return batch


def test_reference_batch_matches_the_hand_made_graph():
    batch = per_session_batch([np.array(p) for p in PREFIXES[:1]], TARGETS[:1], pad_to=6)
    # session 3, 1, 3, 2 padded with zeros: nodes (sorted) 0 (padding, as the authors' np.unique
    # keeps it), 1, 2, 3; edges 3->1, 1->3, 3->2
    assert batch.items.tolist() == [[0, 1, 2, 3]]
    assert batch.alias.tolist() == [[3, 1, 3, 2, 0, 0]]
    assert batch.mask.tolist() == [[True] * 4 + [False] * 2]
    expected_out = np.array([[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0.5, 0.5, 0]])
    np.testing.assert_allclose(batch.adjacency_out[0].numpy(), expected_out)  # 1/outdeg(source)
    expected_in = np.array([[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 1, 0, 0]])
    np.testing.assert_allclose(batch.adjacency_in[0].numpy(), expected_in)  # 1[j -> i] / indeg(i)


@pytest.mark.parametrize("pad_to", [None, 7])
def test_reference_forward_pass_equals_the_model_loss(model, pad_to):
    reference = as_double(per_session_batch([np.array(p) for p in PREFIXES], TARGETS, pad_to))
    ours = as_double(collate(build_graphs(*from_lists(PREFIXES)), TARGETS))
    expected, expected_grads = loss_and_gradients(model, lambda m: reference_code_loss(m, reference))
    for batch in (ours, reference):  # block-diagonal and the reference's padded batch
        loss, grads = loss_and_gradients(model, lambda m: m.loss(batch))
        torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
        for name, grad in grads.items():
            # the batches' edge weights are float32 numbers (1/3 is not exact): 1e-7 relative
            torch.testing.assert_close(grad, expected_grads[name], rtol=1e-6, atol=1e-9, msg=name)


def test_a_different_model_is_told_apart(model):
    """The comparison can fail: another model's loss differs from the reference's."""
    reference = as_double(per_session_batch([np.array(p) for p in PREFIXES], TARGETS))
    torch.manual_seed(6)
    other = SRGNN(ModelConfig(num_items=NUM_ITEMS, hidden_size=8, steps=2)).double()
    assert not torch.isclose(other.loss(reference), reference_code_loss(model, reference))


def test_per_session_batches_serve_full_shuffled_batches():
    values, offsets = from_lists(PREFIXES)
    batches = list(per_session_batches(values, offsets, TARGETS, batch_size=2, seed=1))
    assert len(batches) == 2  # the last, incomplete batch is dropped
    served = sorted(t for b in batches for t in b.targets.tolist())
    assert len(set(served)) == 4 and set(served) <= set(TARGETS.tolist())
