"""From the default grid, with no hand-tuning, the recommended setting measures λ within 15 % of the truth."""

import dataclasses

import pytest

from llc_service import SamplerConfig, calibrate, estimate_llc
from tests.estimate import known_models as km


def check(built, epsilon=1e-4, gamma=1.0, draws=400, burnin=200, seed=0, chains=4):
    model, data, loss_fn, lam, nbeta = built
    base = SamplerConfig(epsilon=epsilon, nbeta=nbeta, gamma=gamma, num_chains=chains, num_draws=draws,
                         num_burnin=burnin, batch_size=len(data), init_loss_batches=4, progress=False,
                         chain_batching="vmap", seed=seed)
    res = calibrate(model, data, base, loss_fn=loss_fn)
    assert res.recommended is not None, str(res)
    assert res.table["recommended"].sum() == 1 and len(res.table) == 9
    # a fresh measurement at the recommended setting (another seed, longer chains) is within 15 % of λ
    check_cfg = dataclasses.replace(res.recommended, seed=seed + 100, num_draws=2 * draws)
    est = estimate_llc(model, data, check_cfg, loss_fn=loss_fn).llc_mean
    assert abs(est - lam) < 0.15 * lam, (est, lam, str(res))
    return res


@pytest.mark.slow  # ~60 s alone, 235 s on the loaded 2-core box
def test_regular_regression_from_the_default_grid():
    res = check(km.regular(d=2, n=200, seed=4), draws=200, burnin=100, chains=2)
    assert "plateau" in res.reason


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(3, 2, 3), (6, 2, 3), (4, 3, 8)])
def test_reduced_rank_regressions_from_the_default_grid(shape):
    m_in, h, n_out = shape
    check(km.reduced_rank(m_in, h, n_out, n=5000, seed=1), draws=600, burnin=400)


@pytest.mark.slow
def test_regular_regression_d8():
    check(km.regular(d=8, n=2000, seed=2))
