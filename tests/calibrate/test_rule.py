"""The selection rule on hand-made tables: plateau, divergence, drift, and no plateau at all."""

import math

import pandas as pd

from llc_service.calibration.rule import select


def table(llc, se=0.05, diverged=None, stationary=None, acc=None, rhat=None):
    n = len(llc)
    eps = [1e-5 * 10 ** (k / 2) for k in range(n)]
    return pd.DataFrame({
        "epsilon": eps, "nbeta": 30.0, "gamma": 100.0, "llc_mean": llc, "llc_se": [se] * n,
        "chains_diverged": diverged or [0] * n, "stationary": stationary or [True] * n, "drift_z": 0.0,
        "rhat": rhat or [1.0] * n, "mala_acceptance": acc or [math.nan] * n,
    })


def test_largest_epsilon_on_the_plateau():
    t = table([0.5, 1.5, 2.0, 2.02, 2.05, 2.6, math.nan], diverged=[0, 0, 0, 0, 0, 0, 4])
    i, reason, verdicts = select(t)
    assert i == 4 and "plateau" in reason and verdicts[6].startswith("4 chain(s) diverged")
    assert verdicts[5].startswith("healthy; λ̂ 2.6 differs")


def test_no_plateau_gives_none_and_advice():
    t = table([56.0, 69.0, 81.0, 95.0], se=1.0)  # λ̂ keeps growing with ε (the high-dimension example)
    i, reason, _ = select(t)
    assert i is None and "no two neighbouring healthy ε agree" in reason and "larger γ" in reason


def test_non_stationary_and_unmixed_points_are_not_chosen():
    t = table([2.0, 2.0, 2.0, 2.0], stationary=[True, True, False, True], rhat=[1.0, 1.0, 1.0, 1.5])
    i, _, verdicts = select(t)
    assert i == 1 and verdicts[2].startswith("not stationary") and verdicts[3].startswith("R̂ 1.50")


def test_acceptance_counts_only_where_informative():
    llc = [2.0, 2.0, 2.0, 2.0]
    i, reason, verdicts = select(table(llc, acc=[0.99, 0.95, 0.8, 0.3]))  # informative: 0.99 at the smallest ε
    assert i == 1 and "acceptance 0.95 ≥ 0.9" in reason
    assert verdicts[2].startswith("MALA acceptance 0.80 < 0.9") and verdicts[3].startswith("MALA acceptance 0.30")
    i, reason, _ = select(table(llc, acc=[0.2, 0.1, 0.05, 0.01]))  # collapsed everywhere: high dimension, ignored
    assert i == 3 and "acceptance not used" in reason


def test_informative_acceptance_chooses_without_a_plateau():
    # a small full-batch model: λ̂ climbs with ε (unmixed below, step-size bias above) and never plateaus, but the
    # acceptance bounds the bias: the largest healthy ε with acceptance ≥ 0.9 is chosen; an unmixed one (R̂) is not
    t = table([1.2, 1.9, 2.2, 2.5, 3.4], acc=[1.0, 0.99, 0.97, 0.91, 0.78], rhat=[1.3, 1.0, 1.0, 1.0, 1.0])
    i, reason, verdicts = select(t)
    assert i == 3 and "bounds the step-size bias" in reason and verdicts[0].startswith("R̂ 1.30")
    t = table([1.2, 1.9], acc=[0.95, 0.85], rhat=[1.3, 1.0])  # the only accepted point is unmixed: none
    i, reason, _ = select(t)
    assert i is None and "no healthy ε with MALA acceptance ≥ 0.9" in reason
