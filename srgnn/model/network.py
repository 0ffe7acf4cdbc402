"""SR-GNN: Session-based Recommendation with Graph Neural Networks (Wu et al., AAAI 2019).

The whole forward pass lives in this file. It follows the paper and the behaviour of the
authors' PyTorch code (CRIPAC-DIG/SR-GNN): the same parameters, the same initialisation
(every parameter uniform in ``[-1/sqrt(d), 1/sqrt(d)]``), the same gate arrangement.

Notation: ``N`` items (indices ``1..N``, 0 is padding), hidden size ``d``, ``B`` sessions per
batch, ``L`` clicks in the longest prefix of the batch; for one session, ``n`` nodes (its
distinct items) with embeddings ``v_1 .. v_n``.

1. Item embeddings ``E`` of shape ``(N + 1, d)``; node ``i`` starts from ``v_i = E[item_i]``.
2. :class:`GatedGraphCell`, repeated ``steps`` times (paper eq. 1-5)::

       a_in  = A_in  (v W_in^T  + b_in)  + b_iah          # (n, d)
       a_out = A_out (v W_out^T + b_out) + b_oah          # (n, d)
       a     = [a_in ; a_out]                              # (n, 2d)
       r     = sigmoid(W_r a + b_r + U_r v + c_r)          # reset gate
       z     = sigmoid(W_z a + b_z + U_z v + c_z)          # update gate
       c     = tanh(W_c a + b_c + r * (U_c v + c_c))       # candidate state
       v'    = (1 - z) * c + z * v

   with ``A_in[i, j] = 1[j -> i] / indeg(i)`` and ``A_out[i, j] = 1[i -> j] / outdeg(i)``
   (:func:`srgnn.data.graph.normalized_adjacency`). As in the authors' code, ``z`` weighs the
   previous state; the paper writes the same gate as ``1 - z``.
3. :class:`AttentionReadout` over the click sequence ``x_1 .. x_m`` (``x_t`` is the state of
   the node clicked at position ``t``, ``x_m`` the last click; paper eq. 6-7)::

       alpha_t = q^T sigmoid(W_1 x_m + W_2 x_t + c)        # no softmax, as in the paper
       s_g     = sum_t alpha_t x_t                         # over real clicks only
       s_h     = W_3 [s_g ; x_m] + b_3                     # hybrid; s_h = s_g if nonhybrid

   (the paper writes ``[s_l ; s_g]`` with ``s_l = x_m``; the authors' code, followed here,
   concatenates ``s_g`` first).

4. Scores over the whole catalogue: ``z_j = s_h . E[j]`` for ``j = 1..N``; score column
   ``k`` is item ``k + 1``. Training minimises the cross-entropy of ``softmax(z)``.

Options, all off by default (with every one off the model is the reference SR-GNN above, with
the same parameters, state-dict keys and outputs):

* ``normalize`` (NISER, Gupta et al. 2019): item embeddings are L2-normalised, both as the
  graph cell's input and for scoring, and the session vector is normalised for scoring:
  ``z_j = scale * cos(s_h, E[j])``, every score in ``[-scale, scale]``.
* ``position_embeddings`` (NISER+, GCE-GNN): a learned vector ``p_r`` per reversed position
  ``r`` (0 for the last click, positions from ``max_position - 1`` on sharing the last
  vector) is added to every click state in the readout: ``x_t <- x_t + p_{m - t}``, before the
  attention weights and everything after them.
* ``dropout``: dropout on the item embeddings fed to the graph cell and on ``s_h``, in training
  mode only.
* ``star_node`` (SGNN-HN, Pan et al. 2020, simplified): a star node per session, starting at
  the mean of its node states. Each step the star becomes the attention-weighted mean of the
  nodes (``s <- sum_i beta_i h_i``, ``beta = softmax_i((W_q' s) . (W_k' h_i) / sqrt(d))``),
  the gated cell runs, and every node takes a gated share of the star
  (``h_i <- (1 - a_i) h_i + a_i s``, ``a_i = sigmoid((W_q h_i) . (W_k s) / sqrt(d))``); after
  the last step a highway gate mixes in the embeddings: ``h = g * h0 + (1 - g) * h``,
  ``g = sigmoid(W_g [h0 ; h] + b_g)`` (:class:`StarNode`). Block-diagonal batches only.
* ``attention_edges`` (a graph-attention variant of the gated cell, after GAT, Velickovic et
  al. 2018): the fixed ``1 / indeg(i)`` and ``1 / outdeg(i)`` of ``A_in`` / ``A_out`` become
  learned attention over node ``i``'s in- (out-) neighbours ``j``::

      e_ij = LeakyReLU(a^T [W h_i ; W h_j])     (a_in for in-messages, a_out for out-messages)
      A_in[i, j] = softmax_j(e_ij)              (over i's in-neighbours; out: out-neighbours)

  recomputed from the node states at every step; the gated update is unchanged. With equal
  logits (``a = 0``, its initial value) the weights are the degree normalisation
  (:class:`EdgeWeights`). Block-diagonal batches only.
* ``temporal_edges``: every edge's weight is the degree normalisation times
  ``softplus(w[bucket(gap)])``, renormalised over the node's in- (out-) edges, where ``gap``
  is the seconds between the edge's two clicks (its latest transition; the graph Parquet's
  ``edge_gap``), ``bucket = min(floor(log2(1 + gap)), 23)`` and ``w`` a learned value per
  bucket and direction (initially all equal: the baseline weights). With
  ``attention_edges`` too, the two multiply before the renormalisation. Block-diagonal
  batches with ``edge_gap`` only; scoring builds it from the clicks' times with the function
  prepare uses (:func:`srgnn.data.graph.click_gaps`), or 0 everywhere without times.
* ``multitask_weight`` ``w > 0``: a linear head predicts the log-rate of the session's clicks
  after the target (``remaining``) from ``s_h``; the training loss adds ``w`` times its Poisson
  negative log-likelihood (:meth:`SRGNN.remaining_loss`). Scores do not use the head.
* ``return_weight`` ``w > 0``: a linear head predicts from ``s_h`` the logit of whether the
  session's user comes back (the graph Parquet's ``returns``, known only for sessions with a
  ``user_id``); the loss adds ``w`` times the binary cross-entropy over the batch's examples
  with a known label (:meth:`SRGNN.return_loss`). Scores do not use the head.

The options use ordinary torch operations where the fused kernels of
:mod:`srgnn.model.kernels` do not cover them (positions: the composed readout; the star node);
the catalogue loss normalises the item rows itself (:class:`_CatalogueCrossEntropy`).

Batches come from :mod:`srgnn.model.batching`, where graphs are built with whole-array operations
(never inside ``forward``): the block-diagonal :class:`~srgnn.model.batching.GraphBatch` used for
training and scoring, or the padded dense :class:`~srgnn.model.batching.PaddedGraphBatch` of the
reference implementation. Both give the same scores.

Why this module is long: it is the whole forward pass, the paper's model and its options, in
one place; split, the equations above would be spread over several files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from srgnn.model.batching import GraphBatch, PaddedGraphBatch
from srgnn.model.kernels import _AttentionStep, _CatalogueCrossEntropy, _GatedCellStep, _ItemLookup

__all__ = ["ModelConfig", "GatedGraphCell", "AttentionReadout", "StarNode", "EdgeWeights",
           "SRGNN", "CATALOGUE_PRECISIONS", "GAP_BUCKETS"]

# Time-gap buckets of temporal_edges: floor(log2(1 + seconds)), the last one shared (2^23 s
# is about 97 days).
GAP_BUCKETS = 24

# Operand type of the training loss's catalogue products (SRGNN.loss's ``precision``).
CATALOGUE_PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class ModelConfig:
    """Shape of an SR-GNN model (everything needed to rebuild it from a state dict)."""

    num_items: int  # N: catalogue size; item indices are 1..N and 0 is padding
    hidden_size: int = 100  # d: width of item embeddings and node states
    steps: int = 1  # propagation steps of the gated graph cell (the paper's t)
    nonhybrid: bool = False  # True: session embedding s_g only; False: W_3 [s_g ; x_last]
    normalize: bool = False  # NISER: scores are scale * cosine of s_h and E[j]
    scale: float = 12.0  # the cosine's factor when normalize
    position_embeddings: bool = False  # learned reversed-position vectors added in the readout
    max_position: int = 50  # reversed positions 0..max_position - 1 (the last one shared)
    dropout: float = 0.0  # on the graph cell's input embeddings and on s_h, training only
    star_node: bool = False  # SGNN-HN star node and highway gate
    attention_edges: bool = False  # learned attention over neighbours instead of 1 / degree
    temporal_edges: bool = False  # edge weights also by the bucketed time gap of the edge
    multitask_weight: float = 0.0  # weight of the remaining-length loss (0: no head)
    return_weight: float = 0.0  # weight of the user-returns loss (0: no head)

    def __post_init__(self) -> None:
        if self.num_items < 1:
            raise ValueError(f"num_items must be a positive integer, got {self.num_items}.")
        if self.hidden_size < 1:
            raise ValueError(f"hidden_size must be a positive integer, got {self.hidden_size}.")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}.")
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale}.")
        if self.max_position < 1:
            raise ValueError(f"max_position must be a positive integer, got {self.max_position}.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if not self.multitask_weight >= 0:
            raise ValueError(f"multitask_weight must be non-negative, got {self.multitask_weight}.")
        if not self.return_weight >= 0:
            raise ValueError(f"return_weight must be non-negative, got {self.return_weight}.")

    @property
    def options(self) -> list[str]:
        """The names of the options that are on (empty for the reference SR-GNN)."""
        flags = {"normalize": self.normalize, "position_embeddings": self.position_embeddings,
                 "dropout": self.dropout > 0, "star_node": self.star_node,
                 "attention_edges": self.attention_edges, "temporal_edges": self.temporal_edges,
                 "multitask_weight": self.multitask_weight > 0,
                 "return_weight": self.return_weight > 0}
        return [name for name, on in flags.items() if on]


def _uniform_(module: nn.Module, hidden_size: int) -> None:
    bound = 1.0 / math.sqrt(hidden_size)
    for parameter in module.parameters():
        nn.init.uniform_(parameter, -bound, bound)


class GatedGraphCell(nn.Module):
    r"""One propagation step of SR-GNN's gated graph network over session graphs.

    From "Session-based Recommendation with Graph Neural Networks" (Wu et al., AAAI 2019),
    a gated graph layer (Li et al., 2016) whose messages travel along in- and out-edges with
    separate linear maps::

        a_in  = A_in  (h W_in^T  + b_in)  + b_iah
        a_out = A_out (h W_out^T + b_out) + b_oah
        [r, z, c] gates of a GRU cell with input [a_in ; a_out] and state h
        h'    = (1 - z) * c + z * h

    Args:
        hidden_size: ``d``, the node state width.

    Shapes:
        - block-diagonal batch: ``hidden`` (T, d) for the T nodes of the batch -> (T, d)
        - padded batch: ``hidden`` (B, n, d) -> (B, n, d)
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.edge_in = nn.Linear(hidden_size, hidden_size)  # W_in, b_in
        self.edge_out = nn.Linear(hidden_size, hidden_size)  # W_out, b_out
        self.bias_in = nn.Parameter(torch.empty(hidden_size))  # b_iah
        self.bias_out = nn.Parameter(torch.empty(hidden_size))  # b_oah
        self.input_gates = nn.Linear(2 * hidden_size, 3 * hidden_size)  # [W_r; W_z; W_c], b
        self.state_gates = nn.Linear(hidden_size, 3 * hidden_size)  # [U_r; U_z; U_c], c
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _uniform_(self, self.hidden_size)

    def forward(self, hidden: torch.Tensor, batch: GraphBatch | PaddedGraphBatch,
                weights: torch.Tensor | None = None) -> torch.Tensor:
        """``weights``: (2E, 1) learned route weights in place of the batch's degree
        normalisation (:class:`EdgeWeights`; block-diagonal batches), or ``None``."""
        if weights is not None:
            return self.gates(hidden, self.messages(hidden, batch, weights))
        if isinstance(batch, GraphBatch) and hidden.dim() == 2:
            # the same arithmetic as gates(messages(...)) in one autograd node (_GatedCellStep)
            source_rows, target_rows, weights = batch.message_routes()
            return _GatedCellStep.apply(
                hidden, self.edge_in.weight, self.edge_in.bias, self.edge_out.weight,
                self.edge_out.bias, self.bias_in, self.bias_out, self.input_gates.weight,
                self.input_gates.bias, self.state_gates.weight, self.state_gates.bias,
                source_rows, target_rows, weights,
            )
        return self.gates(hidden, self.messages(hidden, batch))

    def messages(self, hidden: torch.Tensor, batch: GraphBatch | PaddedGraphBatch,
                 weights: torch.Tensor | None = None) -> torch.Tensor:
        """``[A_in (h W_in^T + b_in) ; A_out (h W_out^T + b_out)]``: (T, 2d) or (B, n, 2d).

        Both edge maps are one product with the stacked weights ``[W_in ; W_out]``. On a
        block-diagonal batch its ``(T, 2d)`` result is viewed as ``(2T, d)`` rows, so that both
        directions take one gather, one weighting and one scatter
        (:meth:`~srgnn.model.batching.GraphBatch.message_routes`) and the scatter's output is
        already the concatenation the gates read. ``weights`` (2E, 1) replace the routes' degree
        normalisation (block-diagonal batches).
        """
        d = self.hidden_size
        weight = torch.cat([self.edge_in.weight, self.edge_out.weight])  # (2d, d)
        bias = torch.cat([self.edge_in.bias, self.edge_out.bias])  # (2d,)
        messages = F.linear(hidden, weight, bias)  # (T, 2d) or (B, n, 2d)
        if isinstance(batch, GraphBatch):
            source_rows, target_rows, degree_weights = batch.message_routes()
            weights = degree_weights if weights is None else weights
            rows = messages.view(-1, d)  # (2T, d): row 2t in-message, 2t + 1 out-message
            gathered = rows.index_select(0, source_rows) * weights  # (2E, d)
            return torch.zeros_like(rows).index_add_(0, target_rows, gathered).view(messages.shape)
        to_in, to_out = messages.split(d, dim=-1)
        incoming = torch.bmm(batch.adjacency_in, to_in)  # (B, n, d)
        outgoing = torch.bmm(batch.adjacency_out, to_out)
        return torch.cat([incoming, outgoing], dim=-1)

    def aggregate(
        self, hidden: torch.Tensor, batch: GraphBatch | PaddedGraphBatch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Messages along in- and out-edges.

        Returns ``A_in (h W_in^T + b_in)`` and ``A_out (h W_out^T + b_out)``, shaped like ``h``.
        """
        return self.messages(hidden, batch).split(self.hidden_size, dim=-1)

    def update(
        self, hidden: torch.Tensor, incoming: torch.Tensor, outgoing: torch.Tensor
    ) -> torch.Tensor:
        """The GRU-style gated update of every node state from its aggregated messages."""
        return self.gates(hidden, torch.cat([incoming, outgoing], dim=-1))

    def gates(self, hidden: torch.Tensor, messages: torch.Tensor) -> torch.Tensor:
        """The gated update from ``messages = [A_in (...) ; A_out (...)]`` (without ``b_iah``,
        ``b_oah``, which are added here)."""
        d = self.hidden_size
        inputs = messages + torch.cat([self.bias_in, self.bias_out])  # (.., 2d): [a_in ; a_out]
        # split, not slicing: the backward of a split is one cat, that of each slice a
        # zero-filled full-size gradient
        input_gates, input_candidate = self.input_gates(inputs).split([2 * d, d], dim=-1)  # W a + b
        state_gates, state_candidate = self.state_gates(hidden).split([2 * d, d], dim=-1)  # U h + c
        reset, update = torch.sigmoid(input_gates + state_gates).chunk(2, dim=-1)  # r, z
        candidate = torch.tanh(torch.addcmul(input_candidate, reset, state_candidate))  # c
        return torch.lerp(candidate, hidden, update)  # (1 - z) c + z h


class AttentionReadout(nn.Module):
    r"""SR-GNN's soft-attention session embedding (Wu et al., 2019, eq. 6-7).

    ::

        alpha_t = q^T sigmoid(W_1 x_last + W_2 x_t + c)
        s_g     = sum_t mask_t * alpha_t * x_t
        s_h     = W_3 [s_g ; x_last] + b_3        (hybrid; s_h = s_g when nonhybrid)

    ``c`` is the sum of the biases of ``W_1`` and ``W_2``.

    Args:
        hidden_size: ``d``.
        nonhybrid: drop the last-click term and return ``s_g``.
        max_position: with ``max_position > 0``, a learned vector per reversed position (0 for
            the last click; positions from ``max_position - 1`` on share the last vector) is
            added to every click state before the attention: ``x_t <- x_t + p_{m - t}``.

    The click sequence is given as node states plus the node of every click:
    ``x_t = nodes[clicks[b, t]]``. The real clicks of the batch are processed as one flat list
    of ``C`` rows (the sum over a session's clicks is an ``index_add`` by session), so padded
    positions cost nothing; ``W_2 x`` is computed once per node and then gathered per click,
    since a session has fewer nodes than clicks.

    Shapes:
        ``nodes`` (T, d), ``clicks`` (B, L) indices into ``nodes``, ``mask`` (B, L) bool,
        ``last_position`` (B,) -> (B, d)
    """

    def __init__(self, hidden_size: int, nonhybrid: bool = False, max_position: int = 0) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.nonhybrid = nonhybrid
        self.last_query = nn.Linear(hidden_size, hidden_size)  # W_1 (bias: part of c)
        self.click_key = nn.Linear(hidden_size, hidden_size)  # W_2 (bias: part of c)
        self.attention = nn.Linear(hidden_size, 1, bias=False)  # q
        self.transform = None if nonhybrid else nn.Linear(2 * hidden_size, hidden_size)  # W_3, b_3
        self.positions = nn.Embedding(max_position, hidden_size) if max_position > 0 else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _uniform_(self, self.hidden_size)

    def forward(
        self,
        nodes: torch.Tensor,
        clicks: torch.Tensor,
        mask: torch.Tensor,
        last_position: torch.Tensor,
        flat_clicks: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``flat_clicks``: ``(click_nodes, click_sessions, last_nodes)`` when the batch has
        them already (:class:`~srgnn.model.batching.GraphBatch`); otherwise they are taken from
        ``clicks`` and ``mask``."""
        # The C real clicks of the batch as one flat list (padded positions never enter):
        # node and session of every click, and the node of every session's last click.
        if flat_clicks is None:
            rows = torch.arange(clicks.shape[0], device=clicks.device)
            flat_clicks = (
                clicks.masked_select(mask),  # (C,)
                rows.unsqueeze(1).expand_as(clicks).masked_select(mask),  # (C,)
                clicks[rows, last_position],  # (B,)
            )
        if self.positions is not None:  # per-click states: the composed operations
            return self.composed(nodes, *flat_clicks)
        transform = self.transform
        return _AttentionStep.apply(
            nodes, *flat_clicks, self.last_query.weight, self.last_query.bias,
            self.click_key.weight, self.click_key.bias, self.attention.weight,
            None if transform is None else transform.weight,
            None if transform is None else transform.bias,
        )

    def composed(
        self, nodes: torch.Tensor, click_nodes: torch.Tensor, click_sessions: torch.Tensor,
        last_nodes: torch.Tensor,
    ) -> torch.Tensor:
        """The readout composed of ordinary operations (autograd through each): what
        :meth:`forward` computes in one autograd node (:class:`_AttentionStep`); the tests'
        reference for it, and the readout with position embeddings."""
        # index_select rather than nodes[...]: its backward is an index_add, not the sorting
        # accumulate of advanced indexing (slower on the CPU).
        sequence = nodes.index_select(0, click_nodes)  # (C, d): x_t
        last = nodes.index_select(0, last_nodes)  # (B, d): x_last
        if self.positions is None:
            keys = self.click_key(nodes).index_select(0, click_nodes)  # (C, d): W_2 x_t + b_2
        else:  # x_t + p_{m - t}; the last click is at reversed position 0
            sequence = sequence + self.positions(self.reversed_positions(click_sessions, len(last)))
            last = last + self.positions.weight[0]
            keys = self.click_key(sequence)  # (C, d)
        query = self.last_query(last).index_select(0, click_sessions)  # (C, d): W_1 x_last + b_1
        alpha = self.attention(torch.sigmoid(query + keys))  # (C, 1)
        global_embedding = torch.zeros_like(last).index_add_(
            0, click_sessions, alpha * sequence
        )  # (B, d): s_g, the sum over each session's clicks
        if self.transform is None:
            return global_embedding
        return self.transform(torch.cat([global_embedding, last], dim=-1))  # (B, d): s_h

    def reversed_positions(self, click_sessions: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Position of every click counted from its session's last click (0 for the last),
        capped at ``max_position - 1``: (C,). The clicks are listed session by session in
        click order, as :class:`~srgnn.model.batching.GraphBatch` keeps them."""
        ends = torch.cumsum(torch.bincount(click_sessions, minlength=batch_size), 0) - 1  # (B,)
        order = torch.arange(len(click_sessions), device=click_sessions.device)
        positions = ends.index_select(0, click_sessions) - order
        return positions.clamp_(max=self.positions.num_embeddings - 1)


class StarNode(nn.Module):
    r"""A star node per session with a highway gate (SGNN-HN, Pan et al., CIKM 2020; simplified).

    The star ``s`` of a session starts as the mean of its node states ``h0``. Each of the
    ``steps`` propagation steps updates the star by attention over the session's nodes, runs
    the gated graph cell over the item-to-item edges, and passes the star to every node::

        beta = softmax_i((W_q' s) . (W_k' h_i) / sqrt(d))      # over the session's nodes
        s   = sum_i beta_i h_i
        h   = GatedGraphCell(h)
        a_i = sigmoid((W_q h_i) . (W_k s) / sqrt(d))          # how much of the star node i takes
        h_i = (1 - a_i) h_i + a_i s

    and after the last step ``h = g * h0 + (1 - g) * h`` with ``g = sigmoid(W_g [h0 ; h] + b_g)``.
    (SGNN-HN updates the star after the nodes, and reads the last star out with the session;
    here the star is updated before the nodes read it, so that it needs no readout of its own
    and every parameter is used with one step too.)

    Shapes: ``hidden`` (T, d) node states of a block-diagonal batch -> (T, d).
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.node_query = nn.Linear(hidden_size, hidden_size, bias=False)  # W_q
        self.star_key = nn.Linear(hidden_size, hidden_size, bias=False)  # W_k
        self.star_query = nn.Linear(hidden_size, hidden_size, bias=False)  # W_q'
        self.node_key = nn.Linear(hidden_size, hidden_size, bias=False)  # W_k'
        self.highway = nn.Linear(2 * hidden_size, hidden_size)  # W_g, b_g
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _uniform_(self, self.hidden_size)

    def forward(self, hidden: torch.Tensor, batch: GraphBatch, cell: GatedGraphCell,
                steps: int) -> torch.Tensor:
        counts = batch.node_offsets[1:] - batch.node_offsets[:-1]  # (B,)
        sessions = torch.repeat_interleave(
            torch.arange(len(counts), device=hidden.device), counts)  # (T,): session of node
        scale = 1.0 / math.sqrt(self.hidden_size)
        initial = hidden
        star = hidden.new_zeros(len(counts), self.hidden_size).index_add_(0, sessions, hidden)
        star = star / counts.clamp(min=1).unsqueeze(1).to(hidden.dtype)  # (B, d): mean of h0
        for _ in range(steps):
            logits = (self.star_query(star).index_select(0, sessions)
                      * self.node_key(hidden)).sum(1) * scale  # (T,)
            weights = segment_softmax(logits, sessions, len(counts))  # within each session
            star = torch.zeros_like(star).index_add_(0, sessions, weights.unsqueeze(1) * hidden)
            hidden = cell(hidden, batch)
            star_rows = star.index_select(0, sessions)  # (T, d)
            share = torch.sigmoid(
                (self.node_query(hidden) * self.star_key(star_rows)).sum(1, keepdim=True) * scale)
            hidden = torch.lerp(hidden, star_rows, share)  # (1 - a) h + a s
        gate = torch.sigmoid(self.highway(torch.cat([initial, hidden], dim=1)))  # g
        return torch.lerp(hidden, initial, gate)  # g h0 + (1 - g) h


def segment_softmax(logits: torch.Tensor, groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """The softmax of ``logits`` (n,) within each group (``groups`` (n,) in ``0..num_groups-1``)."""
    largest = logits.detach().new_full((num_groups,), -math.inf).scatter_reduce_(
        0, groups, logits.detach(), "amax")
    weights = torch.exp(logits - largest.index_select(0, groups))
    totals = weights.new_zeros(num_groups).index_add_(0, groups, weights)
    return weights / totals.index_select(0, groups)


class EdgeWeights(nn.Module):
    r"""Learned weights of the gated cell's message routes: attention over the neighbours
    (``attention_edges``) and/or a weight per time-gap bucket (``temporal_edges``).

    For the in-message of edge ``j -> i`` (and the out-message of ``i -> j``) the route's
    logit is::

        e = LeakyReLU(a_1 . W h_i + a_2 . W h_j)          # attention (a = [a_1; a_2], per direction)
          + log softplus(w[bucket(gap_ij)])               # temporal (w per direction)

    and the weights are the softmax of the logits over the routes into the same node and
    direction, so equal logits give exactly ``1 / indeg(i)`` (``1 / outdeg(i)``): the
    reference normalisation. ``a`` and ``w`` start at zero, which gives equal logits.

    Shapes: ``hidden`` (T, d) of a block-diagonal batch -> (2E, 1), ordered as
    :meth:`~srgnn.model.batching.GraphBatch.message_routes`.
    """

    def __init__(self, hidden_size: int, attention: bool, temporal: bool) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        # W and the rows [a_in target; a_in source; a_out target; a_out source]
        self.attention_map = nn.Linear(hidden_size, hidden_size, bias=False) if attention else None
        self.attention_vectors = nn.Parameter(torch.empty(4, hidden_size)) if attention else None
        self.gap_weights = nn.Parameter(torch.empty(2, GAP_BUCKETS)) if temporal else None  # in, out
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _uniform_(self, self.hidden_size)
        for parameter in (self.attention_vectors, self.gap_weights):
            if parameter is not None:
                nn.init.zeros_(parameter)

    def logits(self, hidden: torch.Tensor, batch: GraphBatch) -> torch.Tensor:
        """The routes' logits before the softmax: (2E,)."""
        src, dst = batch.edge_src, batch.edge_dst
        logits = hidden.new_zeros(2 * len(src))
        if self.attention_map is not None:
            parts = F.linear(self.attention_map(hidden), self.attention_vectors)  # (T, 4)
            incoming = parts[:, 0].index_select(0, dst) + parts[:, 1].index_select(0, src)
            outgoing = parts[:, 2].index_select(0, src) + parts[:, 3].index_select(0, dst)
            logits = logits + F.leaky_relu(torch.cat([incoming, outgoing]), 0.2)
        if self.gap_weights is not None:
            if batch.edge_gap is None:
                raise ValueError(
                    "temporal_edges needs the graphs' edge_gap column, which this batch lacks: "
                    "run srgnn prepare again to write it.")
            buckets = torch.log2(1.0 + batch.edge_gap.clamp(min=0)).floor().long().clamp_(
                max=GAP_BUCKETS - 1)  # (E,)
            weights = F.softplus(self.gap_weights)  # (2, buckets)
            logits = logits + torch.log(torch.cat([weights[0].index_select(0, buckets),
                                                   weights[1].index_select(0, buckets)]))
        return logits

    def forward(self, hidden: torch.Tensor, batch: GraphBatch) -> torch.Tensor:
        targets = batch.route_targets
        return segment_softmax(self.logits(hidden, batch), targets, 2 * len(hidden)).unsqueeze(1)


def _within(indices: torch.Tensor, low: int, high: int) -> bool:
    """Whether every index lies in ``low..high`` (one pass, one synchronisation)."""
    smallest, largest = torch.aminmax(indices)
    return low <= int(smallest) and int(largest) <= high


class SRGNN(nn.Module):
    """The SR-GNN next-item model: item embeddings, gated graph cell, attention readout.

    ``model(batch)`` returns ``(B, N)`` scores over items ``1..N`` (column ``k`` is item
    ``k + 1``) for ``torch.topk``; ``model.loss(batch)`` is the training loss, the mean
    cross-entropy of ``batch.targets`` over all items (:func:`srgnn.model.sampled.sampled_loss`
    samples the catalogue instead). See the module docstring for the equations.

    Args:
        config: the model's :class:`ModelConfig`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.num_items + 1, config.hidden_size)  # E: (N + 1, d)
        self.gnn = GatedGraphCell(config.hidden_size)
        self.readout = AttentionReadout(
            config.hidden_size, nonhybrid=config.nonhybrid,
            max_position=config.max_position if config.position_embeddings else 0)
        self.star = StarNode(config.hidden_size) if config.star_node else None
        self.edges = (EdgeWeights(config.hidden_size, config.attention_edges,
                                  config.temporal_edges)
                      if config.attention_edges or config.temporal_edges else None)
        self.remaining_head = (nn.Linear(config.hidden_size, 1) if config.multitask_weight > 0
                               else None)
        self.return_head = nn.Linear(config.hidden_size, 1) if config.return_weight > 0 else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every parameter uniform in ``[-1/sqrt(d), 1/sqrt(d)]``, as the reference code does
        (the edge weights' attention vectors and gap weights: zero)."""
        _uniform_(self, self.config.hidden_size)
        if self.edges is not None:
            self.edges.reset_parameters()

    def session_embedding(self, batch: GraphBatch | PaddedGraphBatch, _shared: dict | None = None,
                          _lookup=None) -> torch.Tensor:
        """The session representation ``s_h`` of every session in ``batch``: (B, d).

        ``_lookup``: a function from the node items to their embeddings that replaces the table
        lookup (the sampled loss of :mod:`srgnn.model.sampled` reads the rows it uses once).

        Raises:
            ValueError: if the batch holds an item index outside ``0..N`` or is not a batch, or
                when a padded batch meets the star node (block-diagonal batches only).
        """
        if isinstance(batch, GraphBatch):
            items = batch.node_items  # (T,)
        elif isinstance(batch, PaddedGraphBatch):
            if self.star is not None:
                raise ValueError("the star node needs a block-diagonal GraphBatch, not a "
                                 "PaddedGraphBatch.")
            if self.edges is not None:
                raise ValueError("learned edge weights need a block-diagonal GraphBatch, not a "
                                 "PaddedGraphBatch.")
            items = batch.items  # (B, n)
        else:
            raise ValueError(
                f"SRGNN expects a GraphBatch or a PaddedGraphBatch, got {type(batch).__name__}."
            )
        if items.numel() and not _within(items, 0, self.config.num_items):
            raise ValueError(
                f"the batch holds item index {int(items.max())} (or a negative one) but the "
                f"model knows items 1..{self.config.num_items}; map ids through the model's "
                "vocabulary first."
            )
        if _lookup is not None:
            hidden = _lookup(items)
        elif _shared is None:
            hidden = self.embedding(items)  # (T, d) or (B, n, d)
        else:  # training loss: the lookup's gradient joins the loss's (see _ItemLookup)
            hidden = _ItemLookup.apply(self.embedding.weight, items, _shared)
        if self.config.normalize:
            hidden = F.normalize(hidden, dim=-1)
        hidden = self._dropout(hidden)
        hidden = self.propagate(hidden, batch)
        if isinstance(batch, GraphBatch):
            flat_clicks = (batch.click_nodes, batch.click_sessions, batch.last_nodes)
            session = self.readout(hidden, batch.alias, batch.mask, batch.last_position, flat_clicks)
        else:  # padded: flatten the node slots, slot i of session b becomes node b * n + i
            batch_size, max_nodes, _ = hidden.shape
            nodes = hidden.reshape(batch_size * max_nodes, -1)  # (B * n, d)
            first_slot = torch.arange(batch_size, device=hidden.device).unsqueeze(1) * max_nodes
            clicks = batch.alias + first_slot  # (B, L)
            session = self.readout(nodes, clicks, batch.mask, batch.last_position)  # (B, d)
        return self._dropout(session)

    def _dropout(self, states: torch.Tensor) -> torch.Tensor:
        """``states`` with the model's dropout in training mode; unchanged otherwise."""
        if self.config.dropout > 0 and self.training:
            return F.dropout(states, self.config.dropout, training=True)
        return states

    def propagate(self, hidden: torch.Tensor, batch: GraphBatch | PaddedGraphBatch) -> torch.Tensor:
        """The node states after the ``steps`` propagation steps (with the star node and its
        highway gate when ``star_node``), from the input states ``hidden``: (T, d) or (B, n, d)."""
        cell = self.gnn
        if self.edges is not None:  # the cell with the learned weights of each step's states
            def cell(states, graphs):
                return self.gnn(states, graphs, self.edges(states, graphs))
        if self.star is not None:
            return self.star(hidden, batch, cell, self.config.steps)
        for _ in range(self.config.steps):
            hidden = cell(hidden, batch)
        return hidden

    def remaining_loss(self, session_embedding: torch.Tensor, batch: GraphBatch) -> torch.Tensor:
        """Mean Poisson negative log-likelihood of ``batch.remaining`` (the clicks after each
        target) with log-rate ``head(s_h)``, the auxiliary loss of ``multitask_weight``.

        Raises:
            ValueError: without the head (``multitask_weight`` 0) or without ``remaining``.
        """
        if self.remaining_head is None:
            raise ValueError("this model has no remaining-length head (multitask_weight is 0).")
        if batch.remaining is None:
            raise ValueError("multitask_weight needs the graphs' remaining column, which this "
                             "batch lacks: run srgnn prepare again to write it.")
        log_rate = self.remaining_head(session_embedding).squeeze(1)  # (B,)
        return F.poisson_nll_loss(log_rate, batch.remaining, log_input=True, full=False)

    def return_loss(self, session_embedding: torch.Tensor, batch: GraphBatch) -> torch.Tensor:
        """Mean binary cross-entropy of ``batch.returns`` (1: the user came back) with logit
        ``head(s_h)``, over the examples whose label is known (not NaN); 0 (still joined to
        the graph) when none is. The auxiliary loss of ``return_weight``.

        Raises:
            ValueError: without the head (``return_weight`` 0) or without ``returns``.
        """
        if self.return_head is None:
            raise ValueError("this model has no user-returns head (return_weight is 0).")
        if batch.returns is None:
            raise ValueError("return_weight needs the graphs' returns column, which this batch "
                             "lacks: run srgnn prepare again to write it.")
        logits = self.return_head(session_embedding).squeeze(1)  # (B,)
        known = ~torch.isnan(batch.returns)
        if not bool(known.any()):
            return logits.sum() * 0.0
        return F.binary_cross_entropy_with_logits(logits[known], batch.returns[known])

    def with_auxiliary(self, loss: torch.Tensor, session_embedding: torch.Tensor,
                       batch: GraphBatch) -> torch.Tensor:
        """``loss + multitask_weight * remaining_loss + return_weight * return_loss`` (the
        terms of the heads the model has); ``loss`` itself without heads."""
        if self.remaining_head is not None:
            loss = loss + self.config.multitask_weight * self.remaining_loss(session_embedding, batch)
        if self.return_head is not None:
            loss = loss + self.config.return_weight * self.return_loss(session_embedding, batch)
        return loss

    def query_vectors(self, session_embedding: torch.Tensor) -> torch.Tensor:
        """What the item vectors are multiplied with: ``s_h``, or ``scale * s_h / ||s_h||`` when
        ``normalize``. Applying it twice changes nothing."""
        if self.config.normalize:
            return self.config.scale * F.normalize(session_embedding, dim=-1)
        return session_embedding

    def scored_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows of the embedding table as they are scored: unchanged, or of unit length when
        ``normalize``."""
        return F.normalize(rows, dim=-1) if self.config.normalize else rows

    def item_vectors(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """The scored vectors of items ``start + 1 .. stop`` (the whole catalogue by default):
        ``score_items(s)[:, j] = query_vectors(s) . item_vectors()[j]``; (stop - start, d)."""
        stop = self.config.num_items if stop is None else stop
        return self.scored_rows(self.embedding.weight[start + 1 : stop + 1])

    def score_items(
        self, session_embedding: torch.Tensor, start: int = 0, stop: int | None = None
    ) -> torch.Tensor:
        """Scores of items ``start + 1 .. stop`` (score columns ``start:stop``).

        Args:
            session_embedding: (B, d) from :meth:`session_embedding`.
            start, stop: column range; the default is the whole catalogue. Scoring in chunks
                bounds memory for large catalogues.

        Returns:
            (B, stop - start) scores.
        """
        stop = self.config.num_items if stop is None else stop
        if not 0 <= start <= stop <= self.config.num_items:
            raise ValueError(
                f"the column range [{start}, {stop}) must lie within [0, {self.config.num_items}]."
            )
        item_embeddings = self.item_vectors(start, stop)  # (stop - start, d)
        return F.linear(self.query_vectors(session_embedding), item_embeddings)  # (B, stop - start)

    def forward(self, batch: GraphBatch | PaddedGraphBatch) -> torch.Tensor:
        """Scores of every item for every session: (B, N)."""
        return self.score_items(self.session_embedding(batch))

    def loss(self, batch: GraphBatch | PaddedGraphBatch, precision: str = "float32",
             popularity=None) -> torch.Tensor:
        """Mean cross-entropy of the next items over the whole catalogue (the training loss).

        Equal to ``F.cross_entropy(self(batch), batch.targets - 1)`` (a test checks values and
        gradients) but computed by :class:`_CatalogueCrossEntropy`, which writes each
        gradient once; call it again rather than backpropagating through it twice.

        Args:
            batch: a training batch (with targets).
            precision: ``"float32"``, or ``"bfloat16"`` for the three catalogue products (scores
                and their two gradients) with bfloat16 operands and float32 accumulation, as
                mixed-precision training does; the softmax, the loss, the graph network and
                every parameter stay float32. Where the CPU multiplies bfloat16 natively
                (:func:`srgnn.cpu.native_bfloat16`) the products run faster (the README has the
                figures).
            popularity: a :class:`srgnn.model.popularity.PopularityLoss` (penalty and example
                weights against popularity bias), or ``None`` for the plain cross-entropy.
        """
        if precision not in CATALOGUE_PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(CATALOGUE_PRECISIONS)}, got {precision!r}."
            )
        targets = batch.targets
        num_items = self.config.num_items
        if targets.numel() and not _within(targets, 1, num_items):
            raise ValueError(f"targets must be item indices in 1..{num_items}.")
        shared: dict = {}
        extra = () if popularity is None else (popularity.weights(targets), popularity.penalty,
                                               popularity.log_popularity)
        session = self.session_embedding(batch, shared)
        if self.config.normalize:  # unit item rows, normalised inside the loss's own node
            loss = _CatalogueCrossEntropy.apply(
                self.query_vectors(session), self.embedding.weight,
                targets - 1, shared, CATALOGUE_PRECISIONS[precision], True, *extra,
            )
        else:
            loss = _CatalogueCrossEntropy.apply(
                session, self.embedding.weight, targets - 1, shared,
                CATALOGUE_PRECISIONS[precision], *((False, *extra) if extra else ()),
            )
        return self.with_auxiliary(loss, session, batch)
