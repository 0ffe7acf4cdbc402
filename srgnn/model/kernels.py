"""The hand-written autograd nodes behind :mod:`srgnn.model.network`.

Each class computes exactly what the composed form of ordinary torch operations computes (the
parity tests compare values and every gradient in float64), as one autograd node whose
backward writes each gradient once instead of recording a dozen small operations:

* :class:`_GatedCellStep`: one gated-graph-cell step on a block-diagonal batch;
* :class:`_AttentionStep`: the attention readout over the batch's real clicks;
* :class:`_CatalogueCrossEntropy`: the loss over the whole catalogue (optionally with
  bfloat16 operands for its three matrix products);
* :class:`_ItemLookup`: the item-embedding lookup whose gradient joins the loss's.

The model uses them; nothing else should.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["_GatedCellStep", "_AttentionStep", "_CatalogueCrossEntropy", "_ItemLookup"]


class _GatedCellStep(torch.autograd.Function):
    """:meth:`GatedGraphCell.gates` of :meth:`GatedGraphCell.messages` on a block-diagonal
    batch, as one autograd node with a hand-written backward.

    Composed of ordinary operations the step records ~25 autograd nodes (three linear maps, the
    weight concatenations, the gather and scatter, the gate arithmetic), each with its own
    temporaries and bookkeeping. Here the forward keeps what the backward needs
    (``h``, ``a``, ``[r ; z]``, ``c``, ``U_c h + c_c``), and the backward writes the
    pre-activation gradients of all three gates into one ``(T, 3d)`` tensor::

        g_c   = dh' * (1 - z) * (1 - c^2)                 # through tanh
        g_r   = g_c * (U_c h + c_c) * r (1 - r)
        g_z   = dh' * (h - c) * z (1 - z)
        G_in  = [g_r ; g_z ; g_c]    G_state = [g_r ; g_z ; g_c * r]
        da    = G_in W,  dh = dh' * z + G_state U + dm [W_in ; W_out]

    with ``dm`` the messages' gradient routed back along the edges (the transpose of the
    forward's gather and scatter). The parity test compares values and every gradient with
    the composed form in float64.

    Shapes: ``hidden`` (T, d); the routes of :meth:`~srgnn.model.batching.GraphBatch.message_routes`
    -> (T, d).
    """

    @staticmethod
    def forward(ctx, hidden, in_weight, in_bias, out_weight, out_bias, bias_in, bias_out,
                input_weight, input_bias, state_weight, state_bias, source_rows, target_rows,
                route_weights):
        nodes, d = hidden.shape
        edge_weight = torch.cat([in_weight, out_weight])  # (2d, d)
        messages = torch.addmm(torch.cat([in_bias, out_bias]), hidden, edge_weight.t())  # (T, 2d)
        rows = messages.view(-1, d)  # (2T, d), see message_routes
        routed = rows.index_select(0, source_rows).mul_(route_weights)
        inputs = torch.zeros_like(rows).index_add_(0, target_rows, routed).view(nodes, 2 * d)
        inputs.add_(torch.cat([bias_in, bias_out]))  # a = [a_in ; a_out]
        input_gates = torch.addmm(input_bias, inputs, input_weight.t())  # (T, 3d): W a + b
        state_gates = torch.addmm(state_bias, hidden, state_weight.t())  # (T, 3d): U h + c
        reset_update = torch.sigmoid(input_gates[:, : 2 * d].add_(state_gates[:, : 2 * d]))
        reset, update = reset_update[:, :d], reset_update[:, d:]
        state_candidate = state_gates[:, 2 * d :]
        candidate = torch.tanh(torch.addcmul(input_gates[:, 2 * d :], reset, state_candidate))
        ctx.save_for_backward(hidden, inputs, reset_update, candidate, state_candidate,
                              edge_weight, input_weight, state_weight, source_rows, target_rows,
                              route_weights)
        return torch.lerp(candidate, hidden, update)  # (1 - z) c + z h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        (hidden, inputs, reset_update, candidate, state_candidate, edge_weight, input_weight,
         state_weight, source_rows, target_rows, route_weights) = ctx.saved_tensors
        nodes, d = hidden.shape
        reset, update = reset_update[:, :d], reset_update[:, d:]
        grad_out = grad_out.contiguous()
        grad_input_gates = hidden.new_empty(nodes, 3 * d)  # [g_r ; g_z ; g_c]
        grad_candidate = torch.ops.aten.tanh_backward(
            torch.addcmul(grad_out, grad_out, update, value=-1), candidate
        )  # g_c
        grad_input_gates[:, 2 * d :] = grad_candidate
        grad_reset_update = torch.cat(
            [grad_candidate * state_candidate, (hidden - candidate).mul_(grad_out)], dim=1
        )
        grad_input_gates[:, : 2 * d] = torch.ops.aten.sigmoid_backward(grad_reset_update, reset_update)
        grad_state_gates = grad_input_gates.clone()
        grad_state_gates[:, 2 * d :].mul_(reset)
        grad_inputs = grad_input_gates.mm(input_weight)  # (T, 2d)
        grad_hidden = torch.addmm(grad_out * update, grad_state_gates, state_weight)
        # the messages' gradient: the forward's routes reversed
        rows = grad_inputs.view(-1, d)
        routed = rows.index_select(0, target_rows).mul_(route_weights)
        grad_messages = torch.zeros_like(rows).index_add_(0, source_rows, routed).view(nodes, 2 * d)
        grad_hidden.addmm_(grad_messages, edge_weight)
        grad_edge_weight = grad_messages.t().mm(hidden)  # (2d, d)
        grad_edge_bias = grad_messages.sum(0)
        grad_io_bias = grad_inputs.sum(0)
        return (
            grad_hidden,
            grad_edge_weight[:d], grad_edge_bias[:d], grad_edge_weight[d:], grad_edge_bias[d:],
            grad_io_bias[:d], grad_io_bias[d:],
            grad_input_gates.t().mm(inputs), grad_input_gates.sum(0),
            grad_state_gates.t().mm(hidden), grad_state_gates.sum(0),
            None, None, None,
        )


class _AttentionStep(torch.autograd.Function):
    """:meth:`AttentionReadout.composed` as one autograd node with a hand-written backward.

    Over the batch's ``C`` real clicks (node ``click_nodes[k]`` of session
    ``click_sessions[k]``) and the ``B`` last clicks (``last_nodes``)::

        k_t = W_2 x_t + b_2,  q_b = W_1 x_last + b_1,  sigma = sigmoid(k_t + q_b)
        alpha_t = w . sigma,  s_g = sum_t alpha_t x_t,  s_h = W_3 [s_g ; x_last] + b_3

    ``W_2 x + b_2`` is computed once per node (a session has fewer nodes than clicks). The
    backward routes each gradient with one gather or one ``index_add`` per index list; the
    biases ``b_1`` and ``b_2`` share one gradient (both are added to every click's
    pre-activation). The parity test compares values and every gradient with the composed
    form in float64.

    Shapes: ``nodes`` (T, d); ``click_nodes``, ``click_sessions`` (C,); ``last_nodes`` (B,)
    -> (B, d). ``transform_weight`` and ``transform_bias`` are ``None`` for the non-hybrid
    readout (``s_g`` alone).
    """

    @staticmethod
    def forward(ctx, nodes, click_nodes, click_sessions, last_nodes, query_weight, query_bias,
                key_weight, key_bias, attention_weight, transform_weight, transform_bias):
        keys = torch.addmm(key_bias, nodes, key_weight.t())  # (T, d): W_2 x + b_2 per node
        last = nodes.index_select(0, last_nodes)  # (B, d): x_last
        query = torch.addmm(query_bias, last, query_weight.t())  # (B, d): W_1 x_last + b_1
        gates = keys.index_select(0, click_nodes)
        gates.add_(query.index_select(0, click_sessions)).sigmoid_()  # (C, d): sigma
        alpha = gates.mv(attention_weight[0])  # (C,)
        sequence = nodes.index_select(0, click_nodes)  # (C, d): x_t
        pooled = torch.zeros_like(last).index_add_(
            0, click_sessions, sequence * alpha.unsqueeze(1)
        )  # (B, d): s_g
        ctx.hybrid = transform_weight is not None
        if not ctx.hybrid:
            ctx.save_for_backward(nodes, click_nodes, click_sessions, last_nodes, query_weight,
                                  key_weight, attention_weight, last, gates, alpha, sequence)
            return pooled
        joined = torch.cat([pooled, last], dim=1)  # (B, 2d)
        ctx.save_for_backward(nodes, click_nodes, click_sessions, last_nodes, query_weight,
                              key_weight, attention_weight, last, gates, alpha, sequence,
                              transform_weight, joined)
        return torch.addmm(transform_bias, joined, transform_weight.t())  # (B, d): s_h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        (nodes, click_nodes, click_sessions, last_nodes, query_weight, key_weight,
         attention_weight, last, gates, alpha, sequence, *hybrid) = ctx.saved_tensors
        d = nodes.shape[1]
        grad_out = grad_out.contiguous()
        grad_transform_weight = grad_transform_bias = None
        if ctx.hybrid:
            transform_weight, joined = hybrid
            grad_transform_weight = grad_out.t().mm(joined)
            grad_transform_bias = grad_out.sum(0)
            grad_joined = grad_out.mm(transform_weight)  # (B, 2d)
            grad_pooled, grad_last = grad_joined[:, :d], grad_joined[:, d:]
        else:
            grad_pooled, grad_last = grad_out, torch.zeros_like(last)
        grad_weighted = grad_pooled.index_select(0, click_sessions)  # (C, d)
        grad_alpha = (grad_weighted * sequence).sum(1)  # (C,)
        grad_sequence = grad_weighted.mul_(alpha.unsqueeze(1))  # (C, d)
        grad_attention = gates.t().mv(grad_alpha).unsqueeze(0)  # (1, d)
        grad_gates = torch.ops.aten.sigmoid_backward(
            torch.outer(grad_alpha, attention_weight[0]), gates
        )  # (C, d): the pre-activation's gradient
        grad_bias = grad_gates.sum(0)  # b_1 and b_2 alike
        grad_query = torch.zeros_like(last).index_add_(0, click_sessions, grad_gates)  # (B, d)
        grad_keys = torch.zeros_like(nodes).index_add_(0, click_nodes, grad_gates)  # (T, d)
        grad_query_weight = grad_query.t().mm(last)
        grad_key_weight = grad_keys.t().mm(nodes)
        grad_last = torch.addmm(grad_last, grad_query, query_weight)  # (B, d)
        grad_nodes = grad_keys.mm(key_weight)  # (T, d)
        grad_nodes.index_add_(0, click_nodes, grad_sequence).index_add_(0, last_nodes, grad_last)
        return (grad_nodes, None, None, None, grad_query_weight, grad_bias, grad_key_weight,
                grad_bias.clone(), grad_attention, grad_transform_weight, grad_transform_bias)


class _CatalogueCrossEntropy(torch.autograd.Function):
    """``mean_b -log softmax(s_b E[1:]^T)[c_b]`` with a hand-written backward.

    The scores ``(B, N)`` dominate a training step on a large catalogue. Composed from
    ``F.linear`` on ``E[1:]`` and ``F.cross_entropy``, autograd zero-fills a ``(B, N)`` gradient
    for the NLL, runs a separate log-softmax backward, and zero-fills then copies an
    ``(N + 1, d)`` gradient for the slice ``E[1:]``. Here ``d loss / d scores =
    (softmax - onehot) / B`` is computed in place over the saved log-probabilities and the
    table's gradient is written by one matrix product.

    With ``dtype=torch.bfloat16`` the three products take bfloat16 operands (the scores come
    back rounded to bfloat16, then softmax and loss are float32) and the gradients are float32.

    With ``normalize`` the scores are ``s_b . u_j`` with the unit rows ``u_j = E_j / ||E_j||``
    (the cosine models' loss; ``s_b`` comes scaled already), and the backward turns the rows'
    gradient ``g_j`` into the table's, ``(g_j - (g_j . u_j) u_j) / ||E_j||``, in place.

    Against popularity bias (:mod:`srgnn.model.popularity`; both off by default, and then none
    of this runs): ``weights`` (B,) turn the mean into ``mean_b w_b ce_b``, and ``penalty``
    ``lambda > 0`` with ``log_popularity`` ``a`` (N,) adds ``lambda * mean_b sum_j p_bj a_j``,
    whose score gradient ``lambda / B * p_bj (a_j - sum_i p_bi a_i)`` joins the cross-entropy's
    in the same backward.

    Shapes: ``session`` (B, d), ``table`` (N + 1, d), ``columns`` (B,) in ``0..N-1`` -> ().
    """

    @staticmethod
    def forward(ctx, session, table, columns, shared=None, dtype=torch.float32, normalize=False,
                weights=None, penalty=0.0, log_popularity=None):
        ctx.normalize = normalize
        norms = units = None
        if normalize:
            norms = table.norm(dim=1, keepdim=True).clamp_min_(1e-12)  # (N + 1, 1)
            units = table / norms
            items = units[1:]  # (N, d)
        else:
            items = table[1:]  # (N, d)
        if dtype != torch.float32:  # low-precision operands, float32 accumulation and softmax
            items = items.to(dtype)  # one conversion a step, kept for the backward products
            scores = F.linear(session.to(dtype), items).float()  # (B, N)
        else:
            scores = F.linear(session, items)  # (B, N)
        probs = torch.softmax(scores, dim=1)
        target_probs = probs.gather(1, columns.unsqueeze(1)).squeeze(1)  # (B,)
        losses = -torch.log(target_probs)
        tiny = target_probs < 1e-30  # log would lose precision (or be inf): exact log-softmax
        if bool(tiny.any()):
            rows = torch.nonzero(tiny).squeeze(1)
            losses[rows] = -torch.log_softmax(scores[rows], dim=1).gather(1, columns[rows].unsqueeze(1)).squeeze(1)
        del scores
        ctx.save_for_backward(session, table, columns, probs, items, norms, units)
        ctx.shared = shared
        ctx.consumed = False
        ctx.weights, ctx.penalty = weights, None
        if weights is None and not penalty:
            return losses.mean()
        loss = losses.mean() if weights is None else (losses * weights).mean()
        if penalty:
            expected = probs @ log_popularity  # (B,): sum_j p_bj a_j
            ctx.penalty = (penalty, log_popularity, expected)
            loss = loss + penalty * expected.mean()
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        if ctx.consumed:
            raise RuntimeError("SRGNN.loss() cannot be backpropagated twice; compute it again.")
        ctx.consumed = True
        session, table, columns, grad_scores, items, norms, units = ctx.saved_tensors
        rows = torch.arange(len(columns), device=columns.device)
        popularity_grad = None
        if ctx.penalty is not None:  # lambda p_bj (a_j - sum_i p_bi a_i), before p is overwritten
            penalty, log_popularity, expected = ctx.penalty
            popularity_grad = (log_popularity - expected.unsqueeze(1)).mul_(grad_scores).mul_(penalty)
        grad_scores[rows, columns] -= 1.0  # (B, N) softmax - onehot, over the saved softmax
        if ctx.weights is not None:
            grad_scores.mul_(ctx.weights.unsqueeze(1))
        if popularity_grad is not None:
            grad_scores.add_(popularity_grad)
            del popularity_grad
        scale = grad_loss / len(columns)  # the mean's 1/B, applied to the small factors
        low = items.dtype != torch.float32
        if low:
            grad_scores = grad_scores.to(items.dtype)
        grad_session = grad_table = None
        if ctx.needs_input_grad[0]:
            grad_session = torch.mm(grad_scores, items).float() * scale  # (B, d)
        if ctx.needs_input_grad[1]:
            grad_table = torch.empty_like(table)  # (N + 1, d); row 0 (padding) gets no gradient
            grad_table[0] = 0.0
            if low:
                grad_table[1:] = torch.mm(grad_scores.T, (session * scale).to(items.dtype))
            else:
                torch.mm(grad_scores.T, session * scale, out=grad_table[1:])
            if ctx.normalize:  # through u = E / ||E||: (g - (g . u) u) / ||E||
                rows, unit_rows = grad_table[1:], units[1:]
                along = (rows * unit_rows).sum(1, keepdim=True)
                rows.addcmul_(unit_rows, along, value=-1).div_(norms[1:])
            if ctx.shared is not None:  # the item lookup adds its rows here (_ItemLookup)
                ctx.shared["grad_table"] = grad_table
        return grad_session, grad_table, None, None, None, None, None, None, None


class _ItemLookup(torch.autograd.Function):
    """``table[items]`` (an embedding lookup) whose gradient goes into the loss's table gradient.

    nn.Embedding's backward zero-fills an ``(N + 1, d)`` gradient, adds the looked-up rows, and
    autograd then adds that whole table to the catalogue loss's one. When the same forward
    passes a ``shared`` dict to :class:`_CatalogueCrossEntropy`, whose backward runs first and
    leaves its table gradient there, this backward adds the rows into it in place and returns
    none of its own (the engine applies the table's gradient only after both backwards ran);
    otherwise it returns the usual dense gradient.

    Shapes: ``table`` (N + 1, d), ``items`` (...) -> (..., d).
    """

    @staticmethod
    def forward(ctx, table, items, shared=None):
        ctx.save_for_backward(items)
        ctx.table_shape = table.shape
        ctx.shared = shared
        return F.embedding(items, table)

    @staticmethod
    def backward(ctx, grad_rows):
        (items,) = ctx.saved_tensors
        flat_items = items.reshape(-1)
        flat_grad = grad_rows.reshape(-1, grad_rows.shape[-1])
        grad_table = ctx.shared.pop("grad_table", None) if ctx.shared is not None else None
        if grad_table is not None:
            grad_table.index_add_(0, flat_items, flat_grad)
            del grad_table  # autograd may reuse the tensor as .grad only if nothing else holds it
            return None, None, None
        grad_table = grad_rows.new_zeros(ctx.table_shape)
        grad_table.index_add_(0, flat_items, flat_grad)
        return grad_table, None, None
