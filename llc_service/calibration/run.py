"""Run a short measurement at every grid point and pick a setting (the Python API behind ``llc-service calibrate``).

Every point uses the same data, seeds and chain settings; only ε, nβ and γ change. Points run one after another, or
in ``processes`` forked worker processes (one torch thread each) on one machine.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from llc_service.config import SamplerConfig


@dataclass
class CalibrationResult:
    table: Any
    """pandas DataFrame, one row per grid point (see ``TABLE_COLUMNS``), with the rule's ``verdict``."""
    recommended: SamplerConfig | None
    """The base config with the chosen ε, nβ, γ; None when no point is acceptable."""
    reason: str
    """Why that point, or why none and what to try."""
    traces: dict = field(default_factory=dict)
    """Grid-point row index → (chains, draws) loss trace, for the plot."""

    def __str__(self) -> str:
        from llc_service.calibration.plot import format_table

        return format_table(self.table) + "\n" + ("chose " if self.recommended else "") + self.reason


TABLE_COLUMNS = ("epsilon", "nbeta", "gamma", "llc_mean", "llc_std", "llc_se", "init_loss", "num_chains",
                 "chains_diverged", "rhat", "ess_bulk", "mala_acceptance", "drift_z", "stationary", "seconds")


def stationarity_z(trace) -> float:
    """Geweke-style z of the second half: (mean of the last quarter − mean of the third) over its standard error, the
    standard errors from ArviZ's ESS of each quarter across chains."""
    import warnings

    import numpy as np

    trace = np.asarray(trace, dtype=np.float64)
    draws = trace.shape[1]
    if trace.shape[0] == 0 or draws < 16:
        return math.nan
    q3, q4 = trace[:, draws // 2: 3 * draws // 4], trace[:, 3 * draws // 4:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

        def se(x):
            ess = float(az.ess(x, method="mean")) if x.shape[0] >= 1 else math.nan
            ess = ess if math.isfinite(ess) and ess > 0 else x.size
            return x.std() / math.sqrt(ess)

        denom = math.hypot(se(q3), se(q4))
    diff = q4.mean() - q3.mean()
    return float(diff / denom) if denom > 0 else (0.0 if diff == 0 else math.inf)


def measure_point(model, data, cfg: SamplerConfig, loss_fn=None) -> tuple[dict, Any]:
    import numpy as np

    from llc_service.estimate import AllChainsDivergedError, result_from_runs, run_chains

    t0 = time.perf_counter()
    run = run_chains(model, data, cfg, loss_fn=loss_fn)
    row = {"epsilon": cfg.epsilon, "nbeta": cfg.nbeta, "gamma": cfg.gamma, "num_chains": cfg.num_chains,
           "init_loss": run.init_loss, "chains_diverged": sum(d is not None for d in run.diverged_at),
           "llc_mean": math.nan, "llc_std": math.nan, "llc_se": math.nan, "rhat": math.nan, "ess_bulk": math.nan,
           "mala_acceptance": math.nan, "drift_z": math.nan, "stationary": False}
    trace = run.loss_trace
    try:
        res = result_from_runs([run], cfg, num_data=len(data))
    except AllChainsDivergedError:
        res = None
    if res is not None:
        used = res.chains_used
        summand = res.loss_trace if res.baseline_trace is None else res.loss_trace - res.baseline_trace
        z = stationarity_z(summand[used]) if not row["chains_diverged"] else math.nan
        se = res.llc_std / math.sqrt(len(used)) if len(used) > 1 else math.nan
        if not math.isfinite(se):  # one chain: the standard error of its mean from its ESS
            ess = res.ess_bulk if math.isfinite(res.ess_bulk) and res.ess_bulk > 0 else summand.shape[1]
            se = cfg.nbeta * float(np.std(summand[used])) / math.sqrt(ess)
        row.update(llc_mean=res.llc_mean, llc_std=res.llc_std, llc_se=se, rhat=res.rhat, ess_bulk=res.ess_bulk,
                   mala_acceptance=res.mala_acceptance, drift_z=z,
                   stationary=bool(math.isfinite(z) and abs(z) < _rule().STATIONARY_Z))
    row["seconds"] = time.perf_counter() - t0
    return row, trace


def _rule():
    from llc_service.calibration import rule

    return rule


_FORKED: dict = {}


def _forked_point(i: int):
    import torch

    torch.set_num_threads(1)
    st = _FORKED
    return i, measure_point(st["model"], st["data"], st["cfgs"][i], st["loss_fn"])


def calibrate(model: Any, data: Any, base_cfg: SamplerConfig, grid: dict | None = None,
              loss_fn: Callable | None = None, processes: int = 1) -> CalibrationResult:
    """Measure every grid point (default: ε over four decades around ``base_cfg.epsilon``; nβ, γ from the config)
    with ``base_cfg``'s chains, draws, seeds and data, and apply the selection rule (:mod:`.rule`).

    ``grid``: {"epsilon": [...], "nbeta": [...], "gamma": [...]}, any axis may be left out. The recommended config is
    ``base_cfg`` with the chosen ε, nβ, γ (same type as ``base_cfg``, e.g. a ``MeasureConfig``).
    """
    import pandas as pd

    from llc_service.calibration.grid import points, resolve

    base_cfg.validate()
    pts = points(resolve(base_cfg, grid))
    cfgs = [dataclasses.replace(base_cfg, **p) for p in pts]
    results: list = [None] * len(cfgs)
    if processes > 1 and len(cfgs) > 1:
        import multiprocessing as mp

        _FORKED.update(model=model, data=data, cfgs=cfgs, loss_fn=loss_fn)
        try:
            with mp.get_context("fork").Pool(min(processes, len(cfgs))) as pool:
                for i, out in pool.imap_unordered(_forked_point, range(len(cfgs))):
                    results[i] = out
        finally:
            _FORKED.clear()
    else:
        for i, cfg in enumerate(cfgs):
            results[i] = measure_point(model, data, cfg, loss_fn)
    table = pd.DataFrame([r for r, _ in results], columns=list(TABLE_COLUMNS))
    traces = {i: t for i, (_, t) in enumerate(results)}
    chosen, reason, verdicts = _rule().select(table)
    table["verdict"] = verdicts
    table["recommended"] = [i == chosen for i in range(len(table))]
    rec = None
    if chosen is not None:
        r = table.loc[chosen]
        rec = dataclasses.replace(base_cfg, epsilon=float(r.epsilon), nbeta=float(r.nbeta), gamma=float(r.gamma))
    return CalibrationResult(table=table, recommended=rec, reason=reason, traces=traces)
