"""From loss traces to λ̂: per chain, across chains, running, and health checks.

    λ̂_c = nβ · ( mean of chain c's draw losses − L(w*) )                  (baseline: init)
    λ̂_c = nβ · mean_t ( L_{B_t}(w_t) − L_{B_t}(w*) )                        (baseline: paired, see .paired)

Draw losses are taken after burn-in (burn-in steps are never averaged). A diverged chain (non-finite loss) is
excluded from the mean and reported as such; it is never averaged over the steps before it diverged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from llc_service.errors import PermanentError


class AllChainsDivergedError(PermanentError, RuntimeError):
    """Every chain's loss became NaN/inf: there is no estimate (ε is probably too large)."""


@dataclass
class LLCResult:
    llc_mean: float
    """Mean of λ̂ over the chains that did not diverge."""
    llc_std: float
    """Standard deviation of λ̂ across those chains (ddof=1); NaN with one chain (undefined, stored as null)."""
    llc_per_chain: np.ndarray
    """(chains,) λ̂ per chain, NaN where the chain diverged."""
    loss_trace: np.ndarray
    """(chains, draws) minibatch loss at each draw, NaN from the step a chain diverged."""
    init_loss: float
    """L(w*): mean loss at the checkpoint's weights over ``init_loss_batches`` batches."""
    running_llc: np.ndarray
    """(chains, draws) λ̂ of each chain using its draws up to that point."""
    chain_status: list[str]
    """"ok" or "diverged" per chain."""
    chains_used: list[int]
    """Chains averaged into ``llc_mean``."""
    nbeta: float
    num_params: int
    """Parameters that moved (all, or those matching ``param_filter``)."""
    wbic: float | None = None
    """n·E[L] when nβ equals n/log n (β = 1/log n); otherwise None."""
    health: list[str] = field(default_factory=list)
    """Human-readable warnings: divergence, negative λ̂, non-convergence."""
    wall_seconds: float = 0.0
    steps_per_second: float = 0.0
    diverged_at: list[int | None] = field(default_factory=list)
    """Step at which each chain diverged (None if it did not)."""
    baseline: str = "init"
    baseline_trace: np.ndarray | None = None
    """(chains, draws) loss at w* on each draw's minibatch (``baseline: paired``), else None."""
    rhat: float = math.nan
    """Split-R̂ (rank-normalised, ArviZ) across the chains used of the per-draw summand of λ̂ (the draw loss; with
    the paired baseline, the draw loss minus the loss at w* on its minibatch). NaN with one chain."""
    ess_bulk: float = math.nan
    """Bulk effective sample size of the same per-draw values, all chains used together."""
    mala_acceptance: float = math.nan
    """Mean over the chains used of each chain's mean MALA acceptance (NaN where not tracked)."""
    mala_per_chain: np.ndarray | None = None
    """(chains,) mean MALA acceptance per chain."""

    def __str__(self) -> str:
        used = f"{len(self.chains_used)}/{len(self.chain_status)} chains"
        std = "n/a" if math.isnan(self.llc_std) else f"{self.llc_std:.3g}"  # one chain: undefined
        return f"λ̂ = {self.llc_mean:.4g} ± {std} (init loss {self.init_loss:.5g}, {used}, nβ={self.nbeta:g})"


def summarize(loss_trace: np.ndarray, init_loss: float, nbeta: float, num_params: int,
              diverged_at: list[int | None], num_data: int | None = None, baseline_trace: np.ndarray | None = None,
              acceptance=None) -> LLCResult:
    """Turn (chains, draws) draw losses into an :class:`LLCResult`; raises if every chain diverged.

    ``baseline_trace`` (paired baseline): the loss at w* on each draw's minibatch, subtracted draw by draw instead
    of ``init_loss``. ``acceptance``: each chain's mean MALA acceptance."""
    from llc_service.estimate import diagnostics

    loss_trace = np.asarray(loss_trace, dtype=np.float64)
    summand = loss_trace if baseline_trace is None else loss_trace - np.asarray(baseline_trace, dtype=np.float64)
    offset = init_loss if baseline_trace is None else 0.0
    chains, draws = loss_trace.shape
    status = ["diverged" if d is not None else "ok" for d in diverged_at]
    used = [c for c in range(chains) if status[c] == "ok"]
    counts = np.arange(1, draws + 1, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        running = nbeta * (np.cumsum(summand, axis=1) / counts - offset)
    per_chain = np.full(chains, np.nan)
    for c in used:
        per_chain[c] = nbeta * (summand[c].mean() - offset)
    if not used:
        where = ", ".join(f"chain {c} at step {d}" for c, d in enumerate(diverged_at))
        raise AllChainsDivergedError(
            f"all {chains} chains diverged (loss became NaN/inf: {where}); lower epsilon or raise gamma")
    vals = per_chain[used]
    std = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan  # one chain: no spread to measure, not 0
    res = LLCResult(llc_mean=float(vals.mean()), llc_std=std, llc_per_chain=per_chain, loss_trace=loss_trace,
                    init_loss=float(init_loss), running_llc=running, chain_status=status, chains_used=used,
                    nbeta=float(nbeta), num_params=int(num_params), diverged_at=list(diverged_at))
    if num_data and num_data > 1 and math.isclose(nbeta, num_data / math.log(num_data), rel_tol=1e-3):
        res.wbic = float(num_data * np.nanmean(loss_trace[used]))
    if baseline_trace is not None:
        res.baseline, res.baseline_trace = "paired", np.asarray(baseline_trace, dtype=np.float64)
    diag = diagnostics.loss_diagnostics(summand, used)
    res.rhat, res.ess_bulk = diag.rhat, diag.ess_bulk
    if acceptance is not None:
        res.mala_per_chain = np.asarray(acceptance, dtype=np.float64)
        vals = res.mala_per_chain[used]
        res.mala_acceptance = float(np.mean(vals)) if np.isfinite(vals).all() and len(vals) else math.nan
    res.health = health_checks(res) + diagnostics.diagnostic_warnings(res.rhat, res.ess_bulk, res.mala_acceptance,
                                                                      len(used))
    return res


def health_checks(res: LLCResult) -> list[str]:
    """The failure shapes of the calibration notes, as warnings a person can act on."""
    notes = []
    for c, (st, d) in enumerate(zip(res.chain_status, res.diverged_at)):
        if st == "diverged":
            notes.append(f"chain {c} diverged at step {d} and is excluded: lower epsilon")
    for c in res.chains_used:
        if res.llc_per_chain[c] < 0:
            notes.append(f"chain {c}: negative λ̂ (loss drifted below L(w*)): w* is not a local minimum or gamma "
                         "is too weak")
    draws = res.loss_trace.shape[1]
    if draws >= 20 and len(res.chains_used) >= 1:
        half = draws // 2
        lo = res.loss_trace[res.chains_used, :half].mean(axis=1)
        hi = res.loss_trace[res.chains_used, half:].mean(axis=1)
        spread = res.loss_trace[res.chains_used, half:].std(axis=1).mean() / math.sqrt(max(half, 1))
        if np.mean(hi - lo) > 10 * max(spread, 1e-12) and res.nbeta * np.mean(hi - lo) > 0.2 * abs(res.llc_mean):
            notes.append("λ̂ still rising in the second half of the chains (non-convergence or escape): more "
                         "burn-in, smaller epsilon or larger gamma")
    return notes
