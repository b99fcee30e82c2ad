"""MALA acceptance of SGLD proposals on a Gaussian, where the expected acceptance is computable independently.

K(w) = Σ_{i≤r} w_i² (no data noise), so U(w) = nβ·K(w) + (γ/2)‖w‖² is a quadratic with curvature h₁ = 2nβ+γ on
r coordinates and h₀ = γ on the others. SGLD's stationary law on a coordinate of curvature h is N(0, 1/(h(1−εh/4))),
so E[min(1, α)] is a plain NumPy Monte-Carlo integral of the MALA formula: an independent reference for the
in-place tracker that runs inside the chain loop.
"""

import math

import numpy as np
import pytest
import torch

from llc_service import SamplerConfig
from llc_service.estimate import run_chains
from llc_service.sampler.mala import acceptance_probability, log_acceptance
from tests.estimate import known_models as km

D, R, GAMMA = 20, 4, 100.0


def expected_acceptance(eps: float, nbeta: float, samples: int = 200_000, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    h = np.array([2 * nbeta + GAMMA] * R + [GAMMA] * (D - R))
    w = rng.normal(size=(samples, D)) / np.sqrt(h * (1 - eps * h / 4))
    w2 = w - 0.5 * eps * h * w + math.sqrt(eps) * rng.normal(size=(samples, D))
    u = lambda x: 0.5 * (h * x * x).sum(1)  # noqa: E731
    log_q = lambda b, a: -((b - a + 0.5 * eps * h * a) ** 2).sum(1) / (2 * eps)  # noqa: E731
    log_alpha = u(w) - u(w2) + log_q(w, w2) - log_q(w2, w)
    return float(np.exp(np.minimum(log_alpha, 0)).mean())


def measured(eps: float, chains: int = 4, batching: str = "off") -> np.ndarray:
    model, data, loss_fn, _, nbeta = km.sum_of_powers(d=D, r=R, p=2)
    burnin = min(int(8 / (eps * GAMMA)) + 50, 1000)  # a few relaxation times of the slowest coordinate (ε ≥ 1e-4)
    cfg = SamplerConfig(epsilon=eps, nbeta=nbeta, gamma=GAMMA, num_chains=chains, num_draws=800,
                        num_burnin=burnin, seed=1, progress=False, chain_batching=batching)
    return np.array(run_chains(model, data, cfg, loss_fn=loss_fn).acceptance), nbeta


def test_pure_formula_is_one_for_an_exact_reversal():
    """A proposal that lands where the reverse proposal's mean returns exactly, on a flat energy: α = 1."""
    w, d = torch.zeros(3), torch.zeros(3)
    assert acceptance_probability(w, d, 0.0, w + 0.01, d, 0.0, 1e-3) == pytest.approx(1.0)
    assert float(log_acceptance(w, d, 0.0, w, d, 5.0, 1e-3)) == pytest.approx(-5.0)  # energy up by 5 → e^-5


def test_acceptance_matches_the_gaussian_reference_and_falls_with_epsilon():
    got = {}
    for eps in (1e-5, 1e-3, 4e-3):
        acc, nbeta = measured(eps)
        ref = expected_acceptance(eps, nbeta)
        got[eps] = acc.mean()
        assert acc.mean() == pytest.approx(ref, abs=0.03), (eps, acc, ref)
    assert got[1e-5] > 0.99
    assert got[1e-5] > got[1e-3] > got[4e-3]
    assert got[4e-3] < 0.9


def test_batched_chains_track_the_same_acceptance():
    acc, nbeta = measured(2e-3, batching="vmap")
    assert acc.mean() == pytest.approx(expected_acceptance(2e-3, nbeta), abs=0.03), acc


def test_not_tracked_where_the_proposal_is_not_mala():
    model, data, loss_fn, _, nbeta = km.sum_of_powers(d=5, r=2, p=2)
    for change in ({"sampler": "rmsprop_sgld"}, {"bounding_box": 0.1}, {"mala_acceptance": False}):
        cfg = SamplerConfig(epsilon=1e-4, nbeta=nbeta, num_chains=2, num_draws=20, progress=False, **change)
        assert all(math.isnan(a) for a in run_chains(model, data, cfg, loss_fn=loss_fn).acceptance)
