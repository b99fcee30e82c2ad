"""MALA acceptance of SGLD proposals: how far the discretised Langevin step is from an exact sampler.

An SGLD step from w to w' is the proposal of the Metropolis-adjusted Langevin algorithm (MALA) for the energy

    U(w) = nβ·L(w) + (γ/2)·‖w − w*‖² + (λ_wd/2)·‖w‖²,    D(w) = ∇U(w),
    w' = w − (ε/2)·D(w) + √ε·ξ,   ξ ~ N(0, I)

MALA would accept it with probability min(1, exp(log α)), where

    log α = U(w) − U(w') + log q(w | w') − log q(w' | w),
    log q(b | a) = −‖b − a + (ε/2)·D(a)‖² / (2ε)       (so log q(w' | w) = −‖ξ‖²/2).

SGLD never rejects; the mean of this probability over a chain says how much the step size distorts the
posterior (near 1: a faithful step; near 0: the discretisation dominates). This is the diagnostic of devinterp's
``MalaAcceptanceRate`` callback (there computed with an extra pass); here it is computed from what the chain already
has: the loss and gradient of the next step's forward/backward at w', the noise ξ still in the sampler's work
buffer, and one saved copy of w (P floats per chain). U uses each point's own minibatch loss, as devinterp does;
with ``baseline: paired`` the loss at w* on the same minibatch is subtracted first, which removes the minibatch
noise from U(w) − U(w'). With a full batch the value is exact.

The mean is taken over every ``EVERY``-th transition (those starting at steps 0, EVERY, 2·EVERY, …): the tracker
works only on the two steps at the ends of a tracked transition, so it costs 1/EVERY of tracking them all (measured
in docs/benchmarks.md), and the mean of a stationary chain's acceptance does not depend on which transitions are
averaged.

Defined for plain SGLD with ``noise_scale`` 1 and no ``bounding_box`` (clamping and RMSProp's position-dependent
preconditioner make the proposal density different); elsewhere it is NaN.
"""

from __future__ import annotations

import math

import torch

EVERY = 4
"""Track the transitions that start at every EVERY-th step."""


def log_acceptance(w: torch.Tensor, drift: torch.Tensor, energy: float, w_next: torch.Tensor,
                   drift_next: torch.Tensor, energy_next: float, epsilon: float) -> torch.Tensor:
    """log α (clipped at 0) of the proposal w → w_next; the reference form of what :class:`MalaTracker` computes
    in place."""
    fwd = -((w_next - w + 0.5 * epsilon * drift) ** 2).sum() / (2 * epsilon)
    bwd = -((w - w_next + 0.5 * epsilon * drift_next) ** 2).sum() / (2 * epsilon)
    return torch.clamp(energy - energy_next + bwd - fwd, max=0.0)


def acceptance_probability(*args, **kwargs) -> float:
    """min(1, α) of :func:`log_acceptance`."""
    return float(torch.exp(log_acceptance(*args, **kwargs)))


def supported(cfg) -> bool:
    return cfg.sampler == "sgld" and cfg.bounding_box is None and cfg.noise_scale == 1.0


class MalaTracker:
    """Accumulates one chain's mean MALA acceptance from the quantities its steps compute anyway.

    Call :meth:`before_update` after the backward at the current point (grad filled, sampler not yet stepped) and
    :meth:`after_update` right after the sampler step (its work buffer then holds ξ). Uses the sampler state's
    ``scratch`` buffer as work space (the step overwrites it next) and one saved iterate; every reduction stays on
    the device (no host sync), and the sum is read once per chain.
    """

    def __init__(self, cfg, like: torch.Tensor, every: int = EVERY):
        self.eps, self.nbeta, self.gamma, self.wd = cfg.epsilon, cfg.nbeta, cfg.gamma, cfg.weight_decay
        self.record_from = cfg.num_burnin
        self.every = max(1, int(every))
        self.prev_w = torch.empty_like(like)
        self.reset()

    def reset(self) -> None:
        self.has_prev = False
        self.step = 0
        self.prev_energy = None
        self.prev_xi2 = None
        self.total = torch.zeros((), dtype=torch.float64, device=self.prev_w.device)
        self.count = 0

    def involves(self, t: int) -> bool:
        """Whether step ``t`` starts or ends a tracked transition (the steps whose energy is needed)."""
        return t % self.every == 0 or (t - 1) % self.every == 0

    def before_update(self, state, grad: torch.Tensor, loss: torch.Tensor) -> None:
        """``loss``: the (detached, scalar) minibatch loss at ``state.w``, minus the paired baseline if any."""
        opening = self.step % self.every == 0
        if not (opening or self.has_prev):
            return
        w, anchor, scratch = state.w, state.anchor, state.scratch
        torch.sub(w, anchor, out=scratch)
        energy = self.nbeta * loss.double() + 0.5 * self.gamma * torch.dot(scratch, scratch).double()
        if self.wd:
            energy = energy + 0.5 * self.wd * torch.dot(w, w).double()
        if self.has_prev:
            scratch.mul_(self.gamma).add_(grad, alpha=self.nbeta)  # D(w)
            if self.wd:
                scratch.add_(w, alpha=self.wd)
            back = self.prev_w.sub_(w).add_(scratch, alpha=0.5 * self.eps)  # w_prev − w + (ε/2)·D(w)
            log_q_back = -torch.dot(back, back).double() / (2 * self.eps)
            log_alpha = self.prev_energy - energy + log_q_back + 0.5 * self.prev_xi2
            if self.step > self.record_from:  # transitions that start after burn-in
                self.total += torch.exp(torch.clamp(log_alpha, max=0.0))
                self.count += 1
        if opening:
            self.prev_w.copy_(w)
            self.prev_energy = energy

    def after_update(self, state) -> None:
        opening = self.step % self.every == 0
        if opening:
            self.prev_xi2 = torch.dot(state.scratch, state.scratch).double()  # ‖ξ‖²: log q(w'|w) = −‖ξ‖²/2
        self.has_prev = opening
        self.step += 1

    def mean(self) -> float:
        if not self.count:
            return math.nan
        value = float(self.total) / self.count
        return value if math.isfinite(value) else math.nan
