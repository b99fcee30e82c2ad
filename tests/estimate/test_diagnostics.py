"""R̂ / bulk ESS of the draw loss against ArviZ on traces whose behaviour is known."""

import math

import arviz as az
import numpy as np
import pytest

from llc_service.estimate.diagnostics import diagnostic_warnings, failing, loss_diagnostics


def test_independent_chains_mix():
    rng = np.random.default_rng(0)
    trace = rng.normal(3.0, 0.1, size=(4, 500))
    d = loss_diagnostics(trace)
    assert d.rhat == pytest.approx(float(az.rhat(trace, method="rank")))
    assert d.ess_bulk == pytest.approx(float(az.ess(trace, method="bulk")))
    assert abs(d.rhat - 1) < 0.01 and d.ess_bulk > 1500  # white noise: ESS ≈ the 2000 draws
    assert not failing(d.rhat, d.ess_bulk, None, 4)


def test_chains_stuck_at_different_levels_fail():
    rng = np.random.default_rng(1)
    trace = rng.normal(0.0, 0.1, size=(4, 500)) + np.array([0.0, 0.3, 0.6, 0.9])[:, None]
    d = loss_diagnostics(trace)
    assert d.rhat > 1.1
    assert any("R̂" in w for w in diagnostic_warnings(d.rhat, d.ess_bulk, None, 4))


def test_autocorrelated_chains_have_low_ess():
    rng = np.random.default_rng(2)
    x = np.zeros((4, 500))
    for t in range(1, 500):  # AR(1) with φ = 0.99: ESS ≈ N·(1−φ)/(1+φ) ≈ 10
        x[:, t] = 0.99 * x[:, t - 1] + rng.normal(size=4)
    d = loss_diagnostics(x)
    assert d.ess_bulk < 100
    assert any("ESS" in w for w in diagnostic_warnings(d.rhat, d.ess_bulk, None, 4))


def test_diverged_and_nan_chains_are_left_out():
    rng = np.random.default_rng(3)
    trace = rng.normal(size=(4, 200))
    trace[1, 50:] = np.nan  # a diverged chain
    trace[2] += 10.0  # excluded as diverged by the caller
    d = loss_diagnostics(trace, used=[0, 1, 3])  # chain 1 holds NaN: left out too
    ref = trace[[0, 3]]
    assert d.rhat == pytest.approx(float(az.rhat(ref, method="rank")))
    assert d.ess_bulk == pytest.approx(float(az.ess(ref, method="bulk")))


def test_single_chain_has_no_rhat():
    d = loss_diagnostics(np.random.default_rng(4).normal(size=(1, 300)))
    assert math.isnan(d.rhat) and d.ess_bulk > 100
    assert not diagnostic_warnings(d.rhat, d.ess_bulk, math.nan, 1)


def test_low_acceptance_warns():
    assert any("MALA" in w for w in diagnostic_warnings(1.0, 1e4, 0.2, 4))
    assert not diagnostic_warnings(1.0, 1e4, 0.95, 4)
