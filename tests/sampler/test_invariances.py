"""Exact relations the sampler must satisfy, checked on real models (a small MLP and a tiny GPT-NeoX)."""


import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from llc_service import SamplerConfig, estimate_llc
from llc_service.estimate import batches, run_chains, seeding


def mlp_problem(seed=0, n=256):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = torch.sin(x.sum(1, keepdim=True)) + 0.1 * torch.randn(n, 1, generator=g)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(200):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
    return model, TensorDataset(x, y)


def mse(m, b):
    return ((m(b[0]) - b[1]) ** 2).mean()


def cfg(**kw):
    base = dict(epsilon=1e-4, nbeta=20.0, gamma=100.0, num_chains=3, num_draws=50, num_burnin=10, batch_size=32,
                seed=0, progress=False)
    base.update(kw)
    return SamplerConfig(**base)


def test_scaling_loss_by_two_and_halving_nbeta_is_bit_identical():
    model, data = mlp_problem()
    a = estimate_llc(model, data, cfg(nbeta=20.0), loss_fn=mse)
    b = estimate_llc(model, data, cfg(nbeta=10.0), loss_fn=lambda m, batch: 2 * mse(m, batch))
    assert np.array_equal(a.llc_per_chain, b.llc_per_chain)
    assert np.array_equal(2 * a.loss_trace, b.loss_trace)


def test_zero_noise_is_sgd_with_lr_eps_nbeta_over_two():
    model, data = mlp_problem()
    c = cfg(noise_scale=0.0, gamma=0.0, num_chains=1, num_burnin=0, num_draws=40, epsilon=1e-3)
    res = estimate_llc(model, data, c, loss_fn=mse)

    ref = __import__("copy").deepcopy(model)
    opt = torch.optim.SGD(ref.parameters(), lr=c.epsilon * c.nbeta / 2)
    stream = batches.BatchStream(batches.materialize(data), len(data), c.batch_size,
                                 seeding.generator(c.seed, 0, seeding.DATA))
    losses = []
    for _ in range(c.num_draws):
        opt.zero_grad()
        loss = mse(ref, next(stream))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    np.testing.assert_allclose(res.loss_trace[0], losses, rtol=1e-5)
    assert losses[-1] < losses[0] * 0.999 or not np.allclose(losses[0], losses[-1])  # it really moved


def test_same_seed_reproduces_and_other_seed_differs():
    model, data = mlp_problem()
    a = estimate_llc(model, data, cfg(seed=5), loss_fn=mse)
    b = estimate_llc(model, data, cfg(seed=5), loss_fn=mse)
    c = estimate_llc(model, data, cfg(seed=6), loss_fn=mse)
    assert np.array_equal(a.loss_trace, b.loss_trace)
    assert not np.allclose(a.loss_trace, c.loss_trace)
    # chains differ from one another (own noise and own data order)
    assert not np.allclose(a.loss_trace[0], a.loss_trace[1])


def test_chain_result_does_not_depend_on_other_chains_in_the_process():
    model, data = mlp_problem()
    c = cfg(num_chains=4)
    all_chains = run_chains(model, data, c, loss_fn=mse)
    alone = run_chains(model, data, c, chains=[2], loss_fn=mse)
    assert np.array_equal(all_chains.loss_trace[2], alone.loss_trace[0])
    assert all_chains.init_loss == alone.init_loss


def test_rmsprop_with_preconditioner_fixed_at_one_is_sgld():
    model, data = mlp_problem()
    a = estimate_llc(model, data, cfg(sampler="sgld"), loss_fn=mse)
    b = estimate_llc(model, data, cfg(sampler="rmsprop_sgld", rmsprop_alpha=1.0, rmsprop_eps=1.0), loss_fn=mse)
    c = estimate_llc(model, data, cfg(sampler="rmsprop_sgld"), loss_fn=mse)
    assert np.array_equal(a.loss_trace, b.loss_trace)
    assert not np.array_equal(a.loss_trace, c.loss_trace)


def test_model_is_left_untouched_and_bf16_models_are_sampled_in_fp32(tiny_lm):
    model, data = tiny_lm
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = estimate_llc(model, data, cfg(num_chains=2, num_draws=20, batch_size=8))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert res.llc_mean > 0 and np.isfinite(res.llc_mean)

    bf16 = __import__("copy").deepcopy(model).to(torch.bfloat16)
    res16 = estimate_llc(bf16, data, cfg(num_chains=2, num_draws=20, batch_size=8, epsilon=1e-6))
    assert next(bf16.parameters()).dtype == torch.bfloat16
    # ε = 1e-6 steps would vanish in bf16 (1 + 1e-4 == 1); in fp32 they move the loss away from L(w*)
    assert np.abs(res16.loss_trace - res16.init_loss).max() > 0


def test_burnin_and_thinning_shape_the_trace():
    model, data = mlp_problem()
    res = estimate_llc(model, data, cfg(num_draws=7, num_burnin=5, num_steps_bw_draws=3), loss_fn=mse)
    assert res.loss_trace.shape == (3, 7)
    assert res.running_llc.shape == (3, 7)
    np.testing.assert_allclose(res.running_llc[:, -1], res.llc_per_chain)
    np.testing.assert_allclose(res.llc_per_chain, res.nbeta * (res.loss_trace.mean(1) - res.init_loss))


def test_diverging_chains_are_excluded_visibly():
    """A loss that is NaN outside |w| < 2.5: some chains wander there (diverge), others do not."""
    w0 = torch.nn.Parameter(torch.zeros(1))
    model = torch.nn.Module()
    model.w = w0

    def loss_fn(m, b):
        w = m.w.sum()
        return 0.5 * w ** 2 + torch.where(w.abs() > 2.5, torch.tensor(float("nan")), torch.tensor(0.0))

    data = TensorDataset(torch.zeros(16, 1))
    c = SamplerConfig(epsilon=0.05, nbeta=1.0, gamma=0.0, num_chains=16, num_draws=200, batch_size=4, seed=0,
                      progress=False)
    res = estimate_llc(model, data, c, loss_fn=loss_fn)
    diverged = [i for i, s in enumerate(res.chain_status) if s == "diverged"]
    assert 0 < len(diverged) < 16
    assert res.chains_used == [i for i in range(16) if i not in diverged]
    assert np.isnan(res.llc_per_chain[diverged]).all()
    assert res.llc_mean == pytest.approx(np.mean(res.llc_per_chain[res.chains_used]))
    assert any("diverged" in h for h in res.health)
    for i in diverged:
        d = res.diverged_at[i]
        assert np.isnan(res.loss_trace[i, d:]).all() and np.isfinite(res.loss_trace[i, :d]).all()


def test_all_chains_diverging_is_an_error_not_a_number():
    from llc_service.estimate import AllChainsDivergedError

    model, data = mlp_problem()
    with pytest.raises(AllChainsDivergedError, match="lower epsilon"):
        estimate_llc(model, data, cfg(epsilon=50.0, nbeta=1e4), loss_fn=mse)


@pytest.mark.parametrize(
    "field, value",
    [("epsilon", -1e-4), ("num_chains", 0), ("sampler", "hmc"), ("num_draws", 0), ("nbeta", 0.0),
     ("gamma", -1.0), ("init_loss_batches", 2), ("batch_size", 0), ("num_burnin", -1)],
)
def test_invalid_config_names_the_field_before_any_work(field, value):
    model, data = mlp_problem()
    calls = []

    def loss_fn(m, b):
        calls.append(1)
        return mse(m, b)

    with pytest.raises(ValueError, match=field):
        estimate_llc(model, data, cfg(**{field: value}), loss_fn=loss_fn)
    assert calls == []


def test_batch_larger_than_data_is_a_config_error():
    model, data = mlp_problem(n=20)
    with pytest.raises(ValueError, match="batch_size"):
        estimate_llc(model, data, cfg(batch_size=64), loss_fn=mse)


def test_hf_datasets_and_map_style_data_give_the_tensor_dataset_result(tiny_lm):
    """The same rows as a TensorDataset, a HF ``datasets.Dataset`` and a plain map-style Dataset of dicts are the
    same data: identical minibatches, so bit-identical λ̂ (same seed, same device)."""
    import datasets
    from torch.utils.data import Dataset

    model, data = tiny_lm
    ids = data.tensors[0]

    class Rows(Dataset):
        def __len__(self):
            return len(ids)

        def __getitem__(self, i):
            return {"input_ids": ids[i]}

    c = SamplerConfig(num_chains=2, num_draws=8, batch_size=8, epsilon=1e-4, nbeta=10.0, progress=False,
                      init_loss_batches=4)
    ref = estimate_llc(model, data, c)
    hf = estimate_llc(model, datasets.Dataset.from_dict({"input_ids": ids.tolist()}), c)
    rows = estimate_llc(model, Rows(), c)
    np.testing.assert_array_equal(ref.llc_per_chain, hf.llc_per_chain)
    np.testing.assert_array_equal(ref.llc_per_chain, rows.llc_per_chain)
    assert ref.init_loss == hf.init_loss == rows.init_loss
