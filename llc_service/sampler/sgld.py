"""Stochastic gradient Langevin dynamics on a localized, tempered posterior.

Target (Lau et al. 2023, arXiv 2308.12108)::

    p(w) ∝ exp( -nβ·L_n(w) - (γ/2)·‖w - w*‖² )

Step, in the convention of the paper and of ``devinterp`` (so numbers are comparable)::

    w ← w - (ε/2)·( nβ·∇L_m(w) + γ·(w - w*) + λ_wd·w ) + N(0, ε·I)

with ``L_m`` the *mean* loss of a minibatch. The localization term is not multiplied by nβ. With a diagonal
preconditioner ``G`` (see :mod:`.rmsprop_sgld`) the drift is multiplied by ``G`` and the noise by ``√G``.
Optionally each weight is clamped to ``[w* - box, w* + box]`` after the step.

All state is flat fp32 tensors; ``update`` writes into them in place and returns the same state object, so a
step allocates nothing. The noise comes from the generator passed in: one per chain, never the global RNG (or a
:class:`~llc_service.sampler.noise.NoiseSlices`: the same values for a shard of the parameters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class SGLDState:
    w: torch.Tensor
    """Current iterate (flat fp32)."""
    anchor: torch.Tensor
    """w*, the point whose LLC is measured (fp32, or bf16/fp16 where that is lossless: the sharded path)."""
    step: int = 0
    v: torch.Tensor | None = None
    """RMSProp second-moment estimate (preconditioned samplers only)."""
    scratch: torch.Tensor | None = None
    """Holds the drift, then (once the drift is applied) the noise: one work buffer, not two."""


def build(epsilon: float, nbeta: float, gamma: float, weight_decay: float = 0.0, bounding_box: float | None = None,
          noise_scale: float = 1.0, preconditioner: Callable | None = None):
    """Return ``(init, update)`` for SGLD with these settings.

    ``preconditioner(state, grad) -> G`` (a flat tensor or None) lets RMSProp-SGLD reuse this exact step;
    ``noise_scale=0`` turns the sampler into SGD with learning rate ε·nβ/2 (a test of the drift).
    """
    half_eps = epsilon / 2.0
    noise_std = math.sqrt(epsilon) * noise_scale

    def init(w: torch.Tensor, anchor: torch.Tensor) -> SGLDState:
        return SGLDState(w=w, anchor=anchor, step=0, scratch=torch.empty_like(w))

    def update(state: SGLDState, grad: torch.Tensor, generator: torch.Generator) -> SGLDState:
        w, drift = state.w, state.scratch
        g_pre = preconditioner(state, grad) if preconditioner is not None else None
        # drift = nβ·∇L + γ·(w − w*) + λ_wd·w
        torch.sub(w, state.anchor, out=drift)
        drift.mul_(gamma).add_(grad, alpha=nbeta)
        if weight_decay:
            drift.add_(w, alpha=weight_decay)
        if g_pre is not None:
            drift.mul_(g_pre)
        w.add_(drift, alpha=-half_eps)
        if noise_std:
            fill = getattr(generator, "fill_normal", None)  # a NoiseSlices: this shard's part of the chain's noise
            noise = fill(drift) if fill is not None else torch.randn(w.shape, generator=generator, device=w.device,
                                                                     dtype=w.dtype, out=drift)
            if g_pre is not None:
                noise.mul_(g_pre.sqrt())
            w.add_(noise, alpha=noise_std)
        if bounding_box is not None:
            anchor = state.anchor if state.anchor.dtype == w.dtype else state.anchor.to(w.dtype)  # a lean bf16 w*
            torch.clamp(w, min=anchor - bounding_box, max=anchor + bounding_box, out=w)
        state.step += 1
        return state

    return init, update
