"""chain_batching="vmap": several chains through one batched forward; same estimates as one chain at a time."""

import math

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from llc_service import SamplerConfig, estimate_llc
from llc_service.estimate import batches, run_chains, seeding
from llc_service.estimate.batched import AUTO_MIN_CHAINS, auto_batchable
from llc_service.estimate.chains import Workspace, use_vmap
from tests.estimate import known_models as km
from tests.sampler.test_invariances import cfg, mlp_problem, mse


def test_vmap_estimate_agrees_with_sequential_within_monte_carlo_error():
    model, data = mlp_problem()
    c = dict(num_chains=8, num_draws=300, num_burnin=50)
    seq = estimate_llc(model, data, cfg(chain_batching="off", **c), loss_fn=mse)
    vm = estimate_llc(model, data, cfg(chain_batching="vmap", **c), loss_fn=mse)
    assert seq.init_loss == vm.init_loss
    assert vm.chain_status == ["ok"] * 8
    assert not np.array_equal(seq.loss_trace, vm.loss_trace)  # really another code path (batched kernels)
    se = math.sqrt((seq.llc_std ** 2 + vm.llc_std ** 2) / 8)
    assert abs(seq.llc_mean - vm.llc_mean) < 3 * se + 1e-9, (seq, vm)


def test_vmap_uses_each_chains_own_data_order_and_noise():
    """At step 0 every chain is at w*: its loss is that of its own first minibatch (its own DATA stream), and the
    next steps follow the sequential chain (its own NOISE stream), up to rounding."""
    model, data = mlp_problem()
    c = cfg(num_chains=4, num_draws=5, num_burnin=0)
    seq = run_chains(model, data, cfg(num_chains=4, num_draws=5, num_burnin=0, chain_batching="off"), loss_fn=mse)
    vm = run_chains(model, data, cfg(num_chains=4, num_draws=5, num_burnin=0, chain_batching="vmap"), loss_fn=mse)
    np.testing.assert_allclose(vm.loss_trace[:, 0], seq.loss_trace[:, 0], rtol=1e-6)
    # first minibatch of chain c is batch 0 of its DATA stream
    for chain in range(4):
        stream = batches.BatchStream(batches.materialize(data), len(data), c.batch_size,
                                     seeding.generator(c.seed, chain, seeding.DATA))
        with torch.no_grad():
            expected = float(mse(model, next(stream)))
        assert vm.loss_trace[chain, 0] == pytest.approx(expected, rel=1e-6)
    # trajectories track the sequential ones closely for a few steps (same noise draws, rounding apart)
    np.testing.assert_allclose(vm.loss_trace, seq.loss_trace, rtol=1e-4)


def test_chain_result_does_not_depend_on_which_chains_share_the_batch():
    model, data = mlp_problem()
    c = cfg(num_chains=8, chain_batching="vmap")
    all8 = run_chains(model, data, c, loss_fn=mse)
    pair = run_chains(model, data, c, chains=[2, 5], loss_fn=mse)
    three = run_chains(model, data, c, chains=[7, 2, 0], loss_fn=mse)
    assert np.array_equal(all8.loss_trace[2], pair.loss_trace[0])
    assert np.array_equal(all8.loss_trace[5], pair.loss_trace[1])
    assert np.array_equal(all8.loss_trace[[7, 2, 0]], three.loss_trace)
    # a single chain runs sequentially: same chain statistically, not bit for bit
    alone = run_chains(model, data, c, chains=[2], loss_fn=mse)
    np.testing.assert_allclose(alone.loss_trace[0], all8.loss_trace[2], rtol=1e-3)


def test_vmap_zero_noise_is_sgd_with_lr_eps_nbeta_over_two():
    model, data = mlp_problem()
    c = cfg(noise_scale=0.0, gamma=0.0, num_chains=2, num_burnin=0, num_draws=40, epsilon=1e-3,
            chain_batching="vmap")
    res = estimate_llc(model, data, c, loss_fn=mse)
    for chain in range(2):
        ref = __import__("copy").deepcopy(model)
        opt = torch.optim.SGD(ref.parameters(), lr=c.epsilon * c.nbeta / 2)
        stream = batches.BatchStream(batches.materialize(data), len(data), c.batch_size,
                                     seeding.generator(c.seed, chain, seeding.DATA))
        losses = []
        for _ in range(c.num_draws):
            opt.zero_grad()
            loss = mse(ref, next(stream))
            loss.backward()
            opt.step()
            losses.append(loss.item())
        np.testing.assert_allclose(res.loss_trace[chain], losses, rtol=1e-5)


def test_vmap_regular_model_is_half_the_dimension():
    """A known-truth case (λ = d/2 = 2) through the batched path, with the bands of test_known_truth."""
    model, data, loss_fn, lam, nbeta = km.regular(d=4, seed=0)
    c = SamplerConfig(epsilon=1e-3, nbeta=nbeta, gamma=1.0, num_chains=8, num_draws=2000, num_burnin=500,
                      batch_size=len(data), seed=0, init_loss_batches=4, progress=False, chain_batching="vmap")
    res = estimate_llc(model, data, c, loss_fn=loss_fn)
    assert 0.92 * lam < res.llc_mean < 1.12 * lam, res


def test_vmap_diverging_chains_are_excluded_per_chain():
    """Same problem as the sequential test: a loss that is NaN outside |w| < 2.5; the others keep going."""
    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.zeros(1))

    def loss_fn(m, b):
        w = m.w.sum()
        return 0.5 * w ** 2 + torch.where(w.abs() > 2.5, torch.tensor(float("nan")), torch.tensor(0.0))

    data = TensorDataset(torch.zeros(16, 1))
    c = SamplerConfig(epsilon=0.05, nbeta=1.0, gamma=0.0, num_chains=16, num_draws=200, batch_size=4, seed=0,
                      progress=False, chain_batching="vmap")
    res = estimate_llc(model, data, c, loss_fn=loss_fn)
    diverged = [i for i, s in enumerate(res.chain_status) if s == "diverged"]
    assert 0 < len(diverged) < 16
    assert res.chains_used == [i for i in range(16) if i not in diverged]
    for i in diverged:
        d = res.diverged_at[i]
        assert np.isnan(res.loss_trace[i, d:]).all() and np.isfinite(res.loss_trace[i, :d]).all()
    ok = res.chains_used[0]
    assert np.isfinite(res.loss_trace[ok]).all()


@pytest.mark.parametrize("extra", [dict(sampler="rmsprop_sgld"), dict(bounding_box=1e-3), dict(weight_decay=1e-2),
                                   dict(num_burnin=5, num_steps_bw_draws=3, num_draws=7)])
def test_vmap_supports_every_sampler_option(extra):
    model, data = mlp_problem()
    base = dict(num_chains=3, num_draws=30)
    base.update(extra)
    seq = estimate_llc(model, data, cfg(chain_batching="off", **base), loss_fn=mse)
    vm = estimate_llc(model, data, cfg(chain_batching="vmap", **base), loss_fn=mse)
    assert vm.loss_trace.shape == seq.loss_trace.shape
    np.testing.assert_allclose(vm.loss_trace, seq.loss_trace, rtol=1e-3)


def test_vmap_leaves_the_model_untouched():
    model, data = mlp_problem()
    model.zero_grad(set_to_none=True)  # mlp_problem leaves its training gradients
    before = {k: v.clone() for k, v in model.state_dict().items()}
    estimate_llc(model, data, cfg(chain_batching="vmap"), loss_fn=mse)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_auto_batches_only_tiny_plain_models_with_many_chains():
    model, data = mlp_problem()
    cpu = torch.device("cpu")
    assert auto_batchable(model, 161, cpu, AUTO_MIN_CHAINS)
    assert not auto_batchable(model, 161, cpu, 4)  # measured: no gain at 4 chains
    assert not auto_batchable(model, 1_000_000, cpu, 16)
    assert not auto_batchable(model, 161, torch.device("cuda"), 16)
    assert not auto_batchable(km.regular(d=4)[0], 4, cpu, 16)  # custom module: the loss may do anything
    holder = torch.nn.Module()
    holder.w = torch.nn.Parameter(torch.zeros(1))
    assert not auto_batchable(holder, 1, cpu, 16)
    ws = Workspace(model, data, cfg(num_chains=8, chain_batching="off"), mse)
    assert not use_vmap(ws, 8)
    ws.cfg.chain_batching = "vmap"
    assert use_vmap(ws, 8) and not use_vmap(ws, 1)  # a single chain runs sequentially
    ws.cfg.chain_batching = "auto"
    assert use_vmap(ws, 8) and not use_vmap(ws, 4)


def test_auto_falls_back_to_sequential_when_the_loss_cannot_be_vmapped():
    model, data = mlp_problem()

    def picky(m, b):  # data-dependent Python control flow: not vmappable
        loss = mse(m, b)
        return loss if float(loss.detach()) >= 0 else -loss

    c = cfg(num_chains=8, num_draws=10)
    with pytest.warns(RuntimeWarning, match="vmap failed"):
        auto = run_chains(model, data, c, loss_fn=picky)
    off = run_chains(model, data, cfg(num_chains=8, num_draws=10, chain_batching="off"), loss_fn=picky)
    assert np.array_equal(auto.loss_trace, off.loss_trace)
    with pytest.raises(RuntimeError):
        run_chains(model, data, cfg(num_chains=8, num_draws=10, chain_batching="vmap"), loss_fn=picky)
