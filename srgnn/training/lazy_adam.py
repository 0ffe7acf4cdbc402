"""Adam that updates only the rows a sparse gradient names (lazy Adam), with L2 on those rows.

Sampled-softmax training (:mod:`srgnn.model.sampled`) gives the ``(N + 1, d)`` item table a
sparse gradient: the few thousand rows a step used. Dense Adam would still read and write the
whole table and both moment tables every step (with ``weight_decay`` every row has a gradient,
so every row moves); at ``N = 10^6`` that alone costs more than the rest of the step.

:class:`LazyAdam` does, for a parameter with a sparse gradient over rows ``R``::

    g_R  = grad_R + weight_decay * w_R            # L2 on the rows the step uses, only
    m_R  = beta1 m_R + (1 - beta1) g_R
    v_R  = beta2 v_R + (1 - beta2) g_R^2
    w_R -= lr / (1 - beta1^t) * m_R / (sqrt(v_R) / sqrt(1 - beta2^t) + eps)

and leaves every other row, and its moments, as they are (bit for bit). ``t`` counts the
parameter's steps (as ``torch.optim.SparseAdam`` and TensorFlow's ``LazyAdamOptimizer`` do),
not the row's. So weight decay is applied to the rows used in a step, as lazy Adam does: a row
is decayed once per step whose batch holds it (as a node item, a target or a sampled negative),
and rarely used items are decayed less than dense Adam's L2 would decay them. In the step that
uses a row, the update is the one dense Adam makes (same expressions, same order), so on the
first step the touched rows agree with ``torch.optim.Adam`` exactly.

A parameter with a dense gradient gets ordinary Adam (L2 added to the gradient, as
``torch.optim.Adam(weight_decay=...)``). ``state_dict`` / ``load_state_dict`` are those of
``torch.optim.Optimizer`` (per parameter: ``step``, ``exp_avg``, ``exp_avg_sq``), so
checkpoints resume it like Adam.
"""

from __future__ import annotations

import torch

__all__ = ["LazyAdam"]


class LazyAdam(torch.optim.Optimizer):
    """Adam for a mix of dense and sparse gradients; sparse ones update their rows only.

    Args:
        params: parameters or parameter groups.
        lr, betas, eps: as ``torch.optim.Adam``.
        weight_decay: L2 penalty added to the gradient (of the rows used, for sparse ones).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        if not lr > 0 or not eps >= 0 or not weight_decay >= 0:
            raise ValueError("lr must be positive; eps and weight_decay non-negative.")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas must lie in [0, 1), got {betas}.")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps, decay = (group["lr"], group["betas"], group["eps"],
                                              group["weight_decay"])
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1
                step = state["step"]
                step_size = lr / (1 - beta1**step)
                correction_sqrt = (1 - beta2**step) ** 0.5
                if param.grad.is_sparse:
                    _sparse_step(param, param.grad, state, beta1, beta2, eps, decay, step_size,
                                 correction_sqrt)
                else:
                    _dense_step(param, param.grad, state, beta1, beta2, eps, decay, step_size,
                                correction_sqrt)
        return loss


def _dense_step(param, grad, state, beta1, beta2, eps, decay, step_size, correction_sqrt):
    if decay:
        grad = grad.add(param, alpha=decay)
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (exp_avg_sq.sqrt() / correction_sqrt).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-step_size)


def _sparse_step(param, grad, state, beta1, beta2, eps, decay, step_size, correction_sqrt):
    grad = grad.coalesce()  # one entry per row, duplicates summed
    rows = grad.indices()[0]
    values = grad.values()
    if not len(rows):
        return
    weights = param.index_select(0, rows)  # (R, d)
    if decay:
        values = values.add(weights, alpha=decay)
    exp_avg = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - beta1)
    exp_avg_sq = state["exp_avg_sq"].index_select(0, rows).mul_(beta2)
    exp_avg_sq.addcmul_(values, values, value=1 - beta2)
    state["exp_avg"].index_copy_(0, rows, exp_avg)
    state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
    denom = (exp_avg_sq.sqrt() / correction_sqrt).add_(eps)
    param.index_copy_(0, rows, weights.addcdiv_(exp_avg, denom, value=-step_size))
