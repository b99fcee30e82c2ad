"""RMSProp-preconditioned SGLD (Hitchcock & Hoogland 2025, arXiv 2507.21449).

The second-moment estimate is built from the raw loss gradient ``g = ∇L_m(w)`` only::

    V ← α·V + (1 - α)·g⊙g          (V starts at 0)
    G = 1 / (√V + eps)
    w ← w - (ε/2)·G⊙( nβ·g + γ·(w - w*) + λ_wd·w ) + √G⊙N(0, ε·I)

With ``alpha = 1`` and ``eps = 1`` the preconditioner stays exactly 1 and the step is plain SGLD, bit for bit.
"""

from __future__ import annotations

import torch

from llc_service.sampler import sgld


def build(alpha: float = 0.99, eps: float = 0.1, **sgld_kwargs):
    """Return ``(init, update)``; the step itself is :func:`llc_service.sampler.sgld.build`'s."""

    def precondition(state: sgld.SGLDState, grad: torch.Tensor) -> torch.Tensor:
        if state.v is None:
            state.v = torch.zeros_like(grad)
        state.v.mul_(alpha).addcmul_(grad, grad, value=1.0 - alpha)
        return state.v.sqrt().add_(eps).reciprocal_()

    return sgld.build(preconditioner=precondition, **sgld_kwargs)
