"""Element masks (weight-restricted LLC): known answers on a model regular in the masked elements, exact checks."""

import math

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from llc_service import SamplerConfig, estimate_llc
from llc_service.estimate import run_chains
from llc_service.estimate.chains import Workspace


class TwoLayerLinear(torch.nn.Module):
    """y = B·A·x. With A held fixed at a full-rank matrix, y is linear and injective in B: regular in B."""

    def __init__(self, a, b, extra: int = 0):
        super().__init__()
        self.a = torch.nn.Parameter(a.clone())
        self.b = torch.nn.Parameter(b.clone())
        if extra:  # a frozen parameter the loss never reads: must not change a restricted estimate
            self.unused = torch.nn.Parameter(torch.zeros(extra))

    def forward(self, x):
        return x @ self.a.T @ self.b.T


def two_layer(m_in=6, h=6, n_out=4, n=512, seed=0, extra=0, at_minimum=True):
    """A fixed well-conditioned full-rank matrix; B* = least squares given A (the gradient vanishes at w*)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(h, m_in, generator=g))
    a = q * torch.linspace(0.8, 1.2, h).unsqueeze(1)  # singular values 0.8..1.2
    x = torch.randn(n, m_in, generator=g)
    b_true = torch.randn(n_out, h, generator=g)
    b_true[:, :2] = 0.0
    y = x @ a.T @ b_true.T + torch.randn(n, n_out, generator=g)
    z = x @ a.T
    b_hat = torch.linalg.lstsq(z, y).solution.T.contiguous()
    b = b_hat if at_minimum else b_hat + 0.3
    return TwoLayerLinear(a, b, extra), TensorDataset(x, y)


def nll(m, batch):
    return 0.5 * ((batch[1] - m(batch[0])) ** 2).sum(1).mean()


def cfg(**kw):
    base = dict(epsilon=2e-4, nbeta=100.0, gamma=1.0, num_chains=4, num_draws=2000, num_burnin=300, batch_size=512,
                seed=0, progress=False, chain_batching="off")
    base.update(kw)
    return SamplerConfig(**base)


def mask_of(model, k, seed=1):
    """k elements of B chosen at random; nothing of A."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(model.b.numel(), generator=g)[:k]
    m = torch.zeros(model.b.numel(), dtype=torch.bool)
    m[idx] = True
    return {"b": m.view(model.b.shape)}


@pytest.mark.parametrize("k", [1, 4, 10, 24])
def test_lambda_of_k_masked_elements_is_k_over_2(k):
    """Full batch, w* at the minimum, small ε, γ ≪ nβ·h: the tempered posterior in the k free elements is Gaussian
    and E[nβ(L(w) − L(w*))] = k/2 exactly; what is left is Monte-Carlo error plus ~1 % of ε and γ bias."""
    model, data = two_layer()
    res = estimate_llc(model, data, cfg(), loss_fn=nll, masks=mask_of(model, k))
    assert res.num_params == k
    # std of one chain's λ̂ from the spread across chains; tolerance 4 standard errors plus 3 % bias allowance
    se = res.llc_std / math.sqrt(len(res.chains_used))
    assert abs(res.llc_mean - k / 2) < 4 * se + 0.03 * k / 2, (k, res.llc_mean, res.llc_std)


def test_restricted_estimate_ignores_frozen_elements_around_it():
    """Noise is drawn for the moving elements only: a large frozen parameter elsewhere gives the same noise draws and
    the same chains (to rounding: buffer addresses differ, and vectorised kernels round by alignment; other noise
    draws would change the traces by O(1))."""
    small, data = two_layer()
    big, _ = two_layer(extra=10_000)
    masks = mask_of(small, 6)
    a = estimate_llc(small, data, cfg(num_draws=200), loss_fn=nll, masks=masks)
    b = estimate_llc(big, data, cfg(num_draws=200), loss_fn=nll, masks=masks)
    np.testing.assert_allclose(a.loss_trace, b.loss_trace, rtol=1e-5)
    assert a.num_params == b.num_params == 6


@pytest.mark.parametrize("batching", ["off", "vmap"])
def test_masking_every_element_equals_the_unrestricted_estimate_bit_for_bit(batching):
    model, data = two_layer(at_minimum=False)
    c = cfg(num_draws=100, num_burnin=0, batch_size=64, epsilon=1e-3, chain_batching=batching)
    free = estimate_llc(model, data, c, loss_fn=nll)
    everything = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    masked = estimate_llc(model, data, c, loss_fn=nll, masks=everything)
    assert np.array_equal(free.loss_trace, masked.loss_trace)
    assert free.llc_mean == masked.llc_mean and masked.num_params == free.num_params == 6 * 6 + 4 * 6


@pytest.mark.parametrize("batching", ["off", "vmap"])
def test_without_noise_exactly_the_masked_in_elements_move(batching):
    model, data = two_layer(at_minimum=False)  # off the minimum: every element of B has a gradient
    masks = mask_of(model, 7, seed=3)
    masks["a"] = torch.zeros_like(model.a, dtype=torch.bool)
    masks["a"][2, 1:4] = True
    c = cfg(noise_scale=0.0, num_draws=20, num_burnin=0, batch_size=64, epsilon=1e-3, num_chains=2,
            chain_batching=batching)
    ws = Workspace(model, data, c, nll, masks)
    if batching == "vmap":
        from llc_service.estimate.batched import BatchedChains

        bc = BatchedChains(ws)
        # the last chain's row is left in w after run(); rebuild its full weights as the model would see them
        chains = [0, 1]
        import llc_service.estimate.batched as B

        captured = {}
        orig = B.BatchedChains.gradients

        def spy(self, w, batch):
            captured["w"] = w.detach().clone()
            return orig(self, w, batch)

        B.BatchedChains.gradients = spy
        try:
            bc.run(chains)
        finally:
            B.BatchedChains.gradients = orig
        full = ws.flat.full_rows(captured["w"])[0]
        after = {}
        offset = 0
        for name, p in zip(ws.flat.names, ws.flat.params):
            after[name] = full[offset:offset + p.numel()].view(p.shape)
            offset += p.numel()
    else:
        ws.run_chain(0)
        after = dict(ws.model.named_parameters())
    for name, before in model.named_parameters():
        moved = after[name].detach() != before.detach()
        assert torch.equal(moved, masks[name]), name
    assert ws.flat.numel == 7 + 3


def test_masks_work_with_chain_subsets_as_on_several_processes():
    """A process running chains [2, 3] gets exactly those chains of the full run (seeded by chain, not rank)."""
    model, data = two_layer()
    c = cfg(num_draws=50, num_burnin=0, batch_size=64, epsilon=1e-3)
    masks = mask_of(model, 5)
    full = run_chains(model, data, c, loss_fn=nll, masks=masks)
    part = run_chains(model, data, c, chains=[2, 3], loss_fn=nll, masks=masks)
    assert np.array_equal(full.loss_trace[2:], part.loss_trace)


def test_rmsprop_sampler_with_masks_moves_only_masked_elements():
    model, data = two_layer(at_minimum=False)
    masks = mask_of(model, 5)
    ws = Workspace(model, data, cfg(sampler="rmsprop_sgld", num_draws=10, num_burnin=0, batch_size=64), nll, masks)
    ws.run_chain(0)
    moved = ws.model.b.detach() != model.b.detach()
    assert torch.equal(moved, masks["b"]) and torch.equal(ws.model.a, model.a)


@pytest.mark.parametrize("masks, match", [
    ({}, "select no element"),
    ({"b": torch.zeros(4, 6, dtype=torch.bool)}, "select no element"),
    ({"b": torch.ones(6, 4, dtype=torch.bool)}, r"shape \(6, 4\) but the parameter has shape \(4, 6\)"),
    ({"b": torch.ones(4, 6)}, "must be a boolean tensor"),
    ({"bb": torch.ones(4, 6, dtype=torch.bool)}, "did you mean 'b'"),
])
def test_bad_masks_are_clear_errors(masks, match):
    model, data = two_layer()
    with pytest.raises(ValueError, match=match):
        estimate_llc(model, data, cfg(num_draws=5), loss_fn=nll, masks=masks)


def test_mask_on_a_parameter_the_filter_excludes_is_refused():
    model, data = two_layer()
    with pytest.raises(ValueError, match="param_filter.*excludes"):
        estimate_llc(model, data, cfg(num_draws=5, param_filter="^a$"), loss_fn=nll, masks=mask_of(model, 3))
    ok = estimate_llc(model, data, cfg(num_draws=5, param_filter="^b$"), loss_fn=nll, masks=mask_of(model, 3))
    assert ok.num_params == 3
