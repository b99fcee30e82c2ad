"""The paired baseline: same expectation as the init baseline, much less spread over seeds."""

import dataclasses

import numpy as np
import pytest

from llc_service import SamplerConfig, estimate_llc
from tests.estimate import known_models as km


def _cfg(nbeta, **kw):
    base = dict(epsilon=1e-3, nbeta=nbeta, gamma=1.0, num_chains=2, num_draws=300, num_burnin=100, batch_size=32,
                progress=False, chain_batching="off")
    return SamplerConfig(**{**base, **kw})


def test_full_batch_paired_equals_init():
    """With the whole data as the minibatch, L_B(w*) is L(w*): the two estimators are the same number."""
    model, data, loss_fn, _, nbeta = km.regular(d=4, n=200)
    cfg = _cfg(nbeta, batch_size=200, init_loss_batches=4)
    a = estimate_llc(model, data, cfg, loss_fn=loss_fn)
    b = estimate_llc(model, data, dataclasses.replace(cfg, baseline="paired"), loss_fn=loss_fn)
    assert b.baseline == "paired" and b.baseline_trace.shape == b.loss_trace.shape
    np.testing.assert_allclose(b.baseline_trace, a.init_loss, rtol=1e-6)
    assert b.llc_mean == pytest.approx(a.llc_mean, rel=1e-4, abs=1e-4)
    np.testing.assert_array_equal(a.loss_trace, b.loss_trace)  # the extra forward does not perturb the chain


@pytest.mark.slow
def test_paired_matches_init_in_mean_with_less_spread_over_seeds():
    """Regular model (λ = 2), minibatches of 32: both unbiased for the same quantity, paired far less noisy."""
    model, data, loss_fn, lam, nbeta = km.regular(d=4)
    seeds = range(16)  # the init estimate's seed-to-seed std is ~3 here (L(w*) from 16 batches, ×nβ = 145)
    init = [estimate_llc(model, data, _cfg(nbeta, seed=s, num_chains=1), loss_fn=loss_fn).llc_mean for s in seeds]
    paired = [estimate_llc(model, data, _cfg(nbeta, seed=s, num_chains=1, baseline="paired"),
                           loss_fn=loss_fn).llc_mean for s in seeds]
    mi, mp, si, sp = np.mean(init), np.mean(paired), np.std(init, ddof=1), np.std(paired, ddof=1)
    assert abs(mi - mp) < 3 * np.sqrt((si ** 2 + sp ** 2) / len(seeds)), (init, paired)
    assert sp < 0.4 * si, (init, paired)
    assert 0.8 * lam < mp < 1.5 * lam, paired  # SGLD at this ε with minibatch noise sits above λ (docs/benchmarks.md)


def test_vmap_chains_give_the_sequential_paired_estimate():
    model, data, loss_fn, _, nbeta = km.regular(d=4)
    cfg = _cfg(nbeta, baseline="paired", num_draws=100, num_chains=3)
    seq = estimate_llc(model, data, cfg, loss_fn=loss_fn)
    vm = estimate_llc(model, data, dataclasses.replace(cfg, chain_batching="vmap"), loss_fn=loss_fn)
    np.testing.assert_allclose(vm.baseline_trace, seq.baseline_trace, rtol=1e-5)
    assert vm.llc_mean == pytest.approx(seq.llc_mean, rel=1e-3)


def test_config_hash_keeps_older_results_and_tells_paired_apart():
    from llc_service.config import MeasureConfig

    init, paired = MeasureConfig(), MeasureConfig(baseline="paired")
    assert "baseline" not in init.identity() and "mala_acceptance" not in init.identity()
    assert init.config_hash() == MeasureConfig(mala_acceptance=False).config_hash()
    assert paired.config_hash() != init.config_hash()
