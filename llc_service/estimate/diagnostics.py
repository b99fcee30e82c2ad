"""Chain diagnostics of one measurement: split-R̂ and bulk ESS of the per-draw loss, and health thresholds.

Both come from ArviZ (rank-normalised split-R̂ and bulk effective sample size, Vehtari et al. 2021,
arXiv 1903.08008), applied to the (chains, draws) loss trace of the chains that did not diverge. The loss is
the quantity λ̂ averages, so its R̂ says whether the chains agree on E[L] (chains stuck at different levels:
R̂ ≫ 1) and its ESS how many independent draws the mean is worth. A single chain has no between-chain
variance: R̂ is NaN there (ArviZ would return a split-chain value that says nothing about the other chains).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RHAT_MAX = 1.1
"""R̂ above this: the chains disagree about the mean loss (Gelman et al.; Vehtari et al. 2021 advise 1.01 for
publication-grade posteriors, 1.1 is the classic screening threshold and what SGLD chains of a few hundred draws
can meet)."""
ESS_MIN_PER_CHAIN = 25
"""Bulk ESS below 25 per chain (100 for the usual 4 chains): too few effective draws for a stable mean
(Vehtari et al. 2021 recommend ESS > 100 in total for 4 chains)."""
ACCEPTANCE_MIN = 0.5
"""Mean MALA acceptance below this: the SGLD discretisation error is large at this ε (devinterp's calibration
guidance aims at ~0.9; below 0.5 the step is clearly too large for a MALA proposal)."""


@dataclass
class ChainDiagnostics:
    rhat: float
    """Rank-normalised split-R̂ of the draw loss across the chains used (NaN with fewer than 2 chains)."""
    ess_bulk: float
    """Bulk effective sample size of the draw loss over all chains used (NaN if it cannot be computed)."""


def loss_diagnostics(loss_trace: np.ndarray, used: list[int] | None = None) -> ChainDiagnostics:
    """R̂ and bulk ESS of a (chains, draws) loss trace; chains not in ``used`` (diverged) and any chain holding a
    non-finite draw are left out."""
    import warnings

    trace = np.asarray(loss_trace, dtype=np.float64)
    if trace.ndim != 2:
        raise ValueError(f"loss_trace must be (chains, draws), got shape {trace.shape}")
    rows = list(range(trace.shape[0])) if used is None else list(used)
    rows = [c for c in rows if np.isfinite(trace[c]).all()]
    good = trace[rows]
    if good.shape[0] == 0 or good.shape[1] < 4:
        return ChainDiagnostics(math.nan, math.nan)
    with warnings.catch_warnings():  # constant traces warn and return NaN; NaN is our answer too
        warnings.simplefilter("ignore")
        import arviz as az  # ~1-4 s on first import; only here, so the CLI and the API stay quick to import

        ess = float(az.ess(good, method="bulk"))
        rhat = float(az.rhat(good, method="rank")) if good.shape[0] >= 2 else math.nan
    return ChainDiagnostics(rhat=rhat, ess_bulk=ess)


def diagnostic_warnings(rhat: float | None, ess_bulk: float | None, acceptance: float | None,
                        num_chains_used: int) -> list[str]:
    """Health warnings a person can act on; a NaN/None value means "not measured" and never warns."""
    notes = []
    if rhat is not None and math.isfinite(rhat) and rhat > RHAT_MAX:
        notes.append(f"R̂ of the draw loss is {rhat:.3g} > {RHAT_MAX}: the chains disagree (not mixed): more draws "
                     "or burn-in, or a smaller epsilon")
    if ess_bulk is not None and math.isfinite(ess_bulk) and ess_bulk < ESS_MIN_PER_CHAIN * max(num_chains_used, 1):
        notes.append(f"bulk ESS of the draw loss is {ess_bulk:.0f} (< {ESS_MIN_PER_CHAIN} per chain): the mean "
                     "rests on few effective draws: more draws")
    if acceptance is not None and math.isfinite(acceptance) and acceptance < ACCEPTANCE_MIN:
        notes.append(f"MALA acceptance {acceptance:.2f} < {ACCEPTANCE_MIN}: the SGLD step is coarse for this "
                     "posterior: a smaller epsilon (see docs/calibration.md)")
    return notes


def failing(rhat, ess_bulk, acceptance, num_chains_used) -> bool:
    """Whether a measurement's diagnostics fail (what ``llc-service report`` marks)."""
    def val(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)

    n = int(num_chains_used) if num_chains_used is not None and num_chains_used == num_chains_used else 1
    return bool(diagnostic_warnings(val(rhat), val(ess_bulk), val(acceptance), n))


def summary_fields(result) -> dict:
    """The summary-row columns of an ``LLCResult``'s diagnostics (schema version 2)."""
    per_chain = result.mala_per_chain
    return {"baseline": result.baseline, "rhat": result.rhat, "ess_bulk": result.ess_bulk,
            "mala_acceptance": result.mala_acceptance,
            "mala_per_chain": None if per_chain is None else [float(x) for x in per_chain]}
