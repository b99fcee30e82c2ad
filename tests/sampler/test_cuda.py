"""The CUDA path, checked where a GPU exists (skipped on CPU-only machines and CI).

Same chains on CPU and CUDA agree within Monte-Carlo error (not bit for bit: different kernels and RNG streams);
bf16 autocast of the forward keeps fp32 weights and sampler state and still moves the chains at tiny ε.
"""

import copy

import numpy as np
import pytest
import torch

from llc_service import SamplerConfig, estimate_llc

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _cfg(**kw):
    base = dict(epsilon=1e-4, nbeta=30.0, gamma=100.0, num_chains=4, num_draws=60, num_burnin=20, batch_size=16,
                seed=0, progress=False)
    return SamplerConfig(**{**base, **kw})


def test_cuda_agrees_with_cpu_within_mc_error(tiny_lm):
    model, data = tiny_lm
    cpu = estimate_llc(copy.deepcopy(model), data, _cfg(device="cpu"))
    gpu = estimate_llc(copy.deepcopy(model), data, _cfg(device="cuda"))
    se = np.hypot(cpu.llc_std, gpu.llc_std) / np.sqrt(4)
    assert abs(cpu.llc_mean - gpu.llc_mean) < 4 * se + 0.05 * abs(cpu.llc_mean)
    assert gpu.init_loss == pytest.approx(cpu.init_loss, rel=1e-4)


def test_bf16_autocast_keeps_fp32_state(tiny_lm):
    model, data = tiny_lm
    m = copy.deepcopy(model).to("cuda")
    before = [p.detach().clone() for p in m.parameters()]
    res = estimate_llc(m, data, _cfg(device="cuda", autocast_dtype="bf16", epsilon=1e-6))
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))  # caller's model untouched
    assert next(m.parameters()).dtype == torch.float32
    assert np.isfinite(res.llc_mean) and res.llc_mean > 0  # ε=1e-6 steps survive: weights stay fp32


def test_element_masks_on_cuda_move_only_masked_elements_and_give_k_over_2():
    """The masked path (gather/scatter on the device, losses checked every 32 steps) on CUDA."""
    from llc_service.estimate.chains import Workspace
    from tests.sampler.test_masks import cfg as mask_cfg
    from tests.sampler.test_masks import mask_of, nll, two_layer

    model, data = two_layer(at_minimum=False)
    masks = mask_of(model, 7)
    ws = Workspace(model, data, mask_cfg(device="cuda", noise_scale=0.0, num_draws=20, num_burnin=0, batch_size=64,
                                         epsilon=1e-3), nll, masks)
    ws.run_chain(0)
    moved = (ws.model.b.detach().cpu() != model.b.detach())
    assert torch.equal(moved, masks["b"]) and torch.equal(ws.model.a.detach().cpu(), model.a.detach())
    model, data = two_layer()
    res = estimate_llc(model, data, mask_cfg(device="cuda"), loss_fn=nll, masks=mask_of(model, 10))
    assert res.num_params == 10
    assert abs(res.llc_mean - 5.0) < 4 * res.llc_std / 2 + 0.15
