"""stage_boundaries against synthetic λ̂ curves with known critical points in log step."""

from __future__ import annotations

import numpy as np
import pytest

from llc_service.report.trajectory import smooth_log_curve, stage_boundaries

STEPS = np.unique(np.round(np.logspace(1, 5, 50)).astype(int))  # 10 … 100k, log-spaced like real checkpoints


def bump(steps, at, width=0.25, height=5.0):
    """A Gaussian bump in log10(step) centred at step ``at``: one maximum, at ``at``."""
    return 10 + height * np.exp(-0.5 * ((np.log10(steps) - np.log10(at)) / width) ** 2)


def noisy(values, scale, seed=0):
    return values + np.random.default_rng(seed).normal(0, scale, len(values))


def near(found, expected, factor=1.6):
    return abs(np.log(found) - np.log(expected)) <= np.log(factor)


@pytest.mark.parametrize("at", [100, 1000, 20_000])
def test_one_bump_gives_one_boundary_at_the_peak(at):
    found = stage_boundaries(STEPS, noisy(bump(STEPS, at), 0.2))
    assert len(found) == 1, found
    assert near(found[0], at), (found, at)


def test_rise_fall_rise_gives_a_maximum_and_a_minimum_in_order():
    x = np.log10(STEPS)
    llc = 10 + 3 * np.sin((x - 1) / 4 * 2 * np.pi * 1.0 + 0.0)  # max at log10 = 2, min at log10 = 4
    found = stage_boundaries(STEPS, noisy(llc, 0.1))
    assert len(found) == 2, found
    assert near(found[0], 100) and near(found[1], 10_000), found


@pytest.mark.parametrize("curve", ["logistic", "linear", "decay"])
def test_monotone_curves_have_no_boundary(curve):
    x = np.log10(STEPS)
    llc = {"logistic": 5 + 20 / (1 + np.exp(-(x - 3) * 3)), "linear": 2 * x,
           "decay": 30 * np.exp(-(x - 1))}[curve]
    assert stage_boundaries(STEPS, noisy(llc, 0.05)) == []


def test_noise_within_the_chain_spread_is_not_a_stage():
    flat = noisy(np.full(len(STEPS), 10.0), 0.3, seed=3)
    assert stage_boundaries(STEPS, flat, llc_std=np.full(len(STEPS), 1.0)) == []
    # the same wiggles with a negligible spread and no relative margin do produce turns: the margin is what helps
    assert stage_boundaries(STEPS, flat, min_change=0.0, smooth=0.05, llc_std=np.full(len(STEPS), 1e-9)) != []


def test_step_zero_and_nan_are_dropped_not_fatal():
    steps = np.concatenate([[0], STEPS])
    llc = np.concatenate([[100.0], bump(STEPS, 1000)])  # a wild value at init must not create a boundary
    llc[10] = np.nan
    found = stage_boundaries(steps, llc)
    assert len(found) == 1 and near(found[0], 1000)
    assert 0 not in found


def test_degenerate_inputs():
    assert stage_boundaries([10, 100], [1.0, 2.0]) == []
    assert stage_boundaries([], []) == []
    assert stage_boundaries(STEPS, np.full(len(STEPS), 3.0)) == []
    with pytest.raises(ValueError):
        stage_boundaries(STEPS, bump(STEPS, 100), smooth=0)


def test_smoother_reproduces_a_line_in_the_interior():
    x, y = smooth_log_curve(STEPS, 2 * np.log(STEPS), smooth=0.3)
    inner = (x > np.log(100)) & (x < np.log(10_000))
    assert np.allclose(y[inner], 2 * x[inner], atol=0.05)
