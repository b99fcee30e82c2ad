"""The paired baseline: the loss at w* on the draw's own minibatch, without copying the weights.

With ``baseline: init`` a chain's λ̂ is nβ·(mean_t L_{B_t}(w_t) − L̄(w*)), where L̄(w*) averages a few other
batches: the minibatch noise of every L_{B_t}(w_t), and the error of L̄(w*), both enter λ̂. With ``baseline:
paired``::

    λ̂_c = nβ · mean_t ( L_{B_t}(w_t) − L_{B_t}(w*) )

Each draw is compared with w* on the same minibatch, so the part of the minibatch loss that does not depend on w
(which batch was drawn) cancels. The estimator is unbiased for the same quantity: B_t has not influenced w_t
(the step that uses B_t comes after the draw), so E[L_{B_t}(w*) | w_t] = L_n(w*). The cost is one forward per
draw at w*, without a backward, and no copy of the weights: ``torch.func.functional_call`` runs the working model
with views into the stored anchor w* in place of its parameters.
"""

from __future__ import annotations

from typing import Any

import torch

from llc_service.estimate import batches


def anchor_views(flat, prefix: str = "model.") -> dict[str, torch.Tensor]:
    """Parameter name → a view of w* (``flat.anchor``) shaped like that parameter; no copy."""
    views, offset = {}, 0
    for name, p in zip(flat.names, flat.params):
        n = p.numel()
        views[prefix + name] = flat.anchor[offset:offset + n].view(p.shape)
        offset += n
    return views


class AnchorLoss:
    """``anchor_loss(batch)`` → the (detached, fp32 scalar) loss at w* on ``batch`` for a Workspace's model."""

    def __init__(self, ws):
        self.ws = ws
        self.module = batches.LossModule(ws.model, ws.loss_fn)
        self.params = anchor_views(ws.flat)

    def __call__(self, batch: Any) -> torch.Tensor:
        from torch.func import functional_call

        with torch.no_grad(), self.ws.autocast():
            return functional_call(self.module, self.params, (batch,)).detach().float()


def is_draw_step(t: int, cfg) -> bool:
    """Whether step t records a draw (after burn-in, every ``num_steps_bw_draws`` steps)."""
    return t >= cfg.num_burnin and (t - cfg.num_burnin) % cfg.num_steps_bw_draws == 0


def paired_step(t: int, cfg) -> bool:
    """Steps that evaluate w*: every step after burn-in (the draws, and with thinning the steps between them, so the
    MALA energies of consecutive steps are both paired)."""
    return cfg.baseline == "paired" and t >= cfg.num_burnin
