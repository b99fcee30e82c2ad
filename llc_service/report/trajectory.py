"""λ̂ across training: the trajectory table and its stage boundaries.

The summary table has one row per measurement; a trajectory is those rows for one training run under one
measurement config (``config_hash``: λ̂ at different nβ, ε, data are not comparable), ordered by step.

Stage boundaries follow Hoogland et al. 2024 (arXiv 2402.02364): developmental stages of a network show up as
rises and falls of λ̂ against log(step), and the boundaries between stages are the critical points of a
smoothed λ̂(log step) curve. Raw λ̂ is noisy (finite chains), so the curve is smoothed and a turn counts only if
the curve moves back by a clear margin afterwards; without that, noise would put a boundary between every pair
of checkpoints.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

log = logging.getLogger(__name__)

TABLE_COLUMNS = ("run_id", "config_hash", "step", "status", "llc_mean", "llc_std", "init_loss", "weight_norm",
                 "dist_from_first", "nbeta", "num_chains_used", "rhat", "ess_bulk", "mala_acceptance", "diag_fail")


def _sketch_distance(a, b) -> float:
    import numpy as np

    if a is None or b is None:
        return math.nan
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        return math.nan
    return float(np.linalg.norm(a - b))


DATA_MARK = "+data-"


def split_by_data(df):
    """One series per data set: the rows of one (run, config) measured on several data sets (the data-refined LLC)
    get ``config_hash`` + ``+data-<first 8 characters of the data fingerprint>``, so every table, plot and wandb
    trajectory keeps the data sets apart. Results measured on one data set are unchanged."""
    if df is None or not len(df) or "data_fingerprint" not in df.columns:
        return df
    counts = df.groupby(["run_id", "config_hash"], dropna=False)["data_fingerprint"].transform("nunique")
    several = (counts > 1).to_numpy()
    if not several.any():
        return df
    df = df.copy()
    fps = df.loc[several, "data_fingerprint"].astype(object).where(df.loc[several, "data_fingerprint"].notna(),
                                                                    "unknown")
    df["config_hash"] = df["config_hash"].astype(object)
    df.loc[several, "config_hash"] = df.loc[several, "config_hash"].astype(str) + DATA_MARK + fps.astype(str).str[:8]
    return df


def base_config(label) -> str:
    """The config hash of a series label made by :func:`split_by_data`."""
    return str(label).split(DATA_MARK, 1)[0]


def _one_row_per_step(df):
    """A checkpoint re-measured (new weights at the same step, or a retry) keeps its best row: ok before not-ok,
    then the most recent (``ended_at``), then the highest attempt."""
    df = df.assign(_ok=(df["status"] == "ok").astype(int))
    order = ["_ok"] + [c for c in ("ended_at", "attempt") if c in df.columns]
    df = df.sort_values(order, kind="stable", na_position="first")
    df = df.drop_duplicates(["run_id", "config_hash", "checkpoint_step"], keep="last")
    return df.drop(columns="_ok")


def trajectory_table(summary_df, run_id: str | None = None):
    """One row per (run_id, config_hash, step), sorted by those; columns ``TABLE_COLUMNS`` (one series per data set,
    see :func:`split_by_data`).

    ``dist_from_first`` is ‖sketch − sketch of the first ok checkpoint of the same trajectory‖: the count-sketch
    preserves Euclidean distances approximately, so this tracks how far training has moved the weights.
    Rows without a step cannot be placed on the axis and are left out (with a warning).
    """
    import numpy as np
    import pandas as pd

    if summary_df is None or len(summary_df) == 0:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in TABLE_COLUMNS})
    df = split_by_data(summary_df if run_id is None else summary_df[summary_df["run_id"] == run_id])
    if "component" in df.columns:  # refined-LLC rows have their own table (report/components.py); "all" is whole
        df = df[df["component"].isna() | (df["component"] == "all")]
    missing_step = df["checkpoint_step"].isna()
    if missing_step.any():
        log.warning("leaving %d measurement(s) without a checkpoint step out of the trajectory",
                    int(missing_step.sum()))
        df = df[~missing_step]
    if len(df) == 0:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in TABLE_COLUMNS})
    df = _one_row_per_step(df)
    df = df.sort_values(["run_id", "config_hash", "checkpoint_step"], kind="stable")

    def col(name, dtype="float64"):
        return df[name].astype(dtype).to_numpy() if name in df.columns else np.full(len(df), np.nan)

    out = pd.DataFrame({
        "run_id": df["run_id"].astype(str).to_numpy(),
        "config_hash": df["config_hash"].astype(str).to_numpy(),
        "step": df["checkpoint_step"].astype("int64").to_numpy(),
        "status": df["status"].astype(str).to_numpy(),
        "llc_mean": col("llc_mean"), "llc_std": col("llc_std"), "init_loss": col("init_loss"),
        "weight_norm": col("weight_norm"), "dist_from_first": np.full(len(df), np.nan), "nbeta": col("nbeta"),
        "num_chains_used": df["num_chains_used"].astype("Int64").to_numpy() if "num_chains_used" in df.columns
        else pd.array([pd.NA] * len(df), dtype="Int64"),
        "rhat": col("rhat"), "ess_bulk": col("ess_bulk"), "mala_acceptance": col("mala_acceptance"),
    })
    from llc_service.estimate.diagnostics import failing

    out["diag_fail"] = [r.status == "ok" and failing(r.rhat, r.ess_bulk, r.mala_acceptance, r.num_chains_used)
                        for r in out.itertuples(index=False)]
    sketches = list(df["weight_sketch"]) if "weight_sketch" in df.columns else [None] * len(df)
    for _, idx in out.groupby(["run_id", "config_hash"], sort=False).indices.items():
        first = next((sketches[i] for i in idx if out["status"].iat[i] == "ok" and _has(sketches[i])), None)
        for i in idx:
            out.loc[i, "dist_from_first"] = _sketch_distance(first, sketches[i] if _has(sketches[i]) else None)
    return out.reset_index(drop=True)


def _has(sketch) -> bool:
    return sketch is not None and not (isinstance(sketch, float) and math.isnan(sketch)) and len(sketch) > 0


# ---------------------------------------------------------------------------------------------------------------
# stage boundaries


def smooth_log_curve(steps: Sequence[float], values: Sequence[float], smooth: float = 0.5, grid: int = 512):
    """(x grid in log step, smoothed values) by a Gaussian kernel (Nadaraya–Watson) smoother in log step.

    ``smooth`` is the kernel width in natural-log units of step (0.5 ≈ a factor 1.65 in step). Steps ≤ 0 (the
    initialization) and non-finite values are dropped: log(0) has no place on the axis, and log1p would squash
    the early steps where development is fastest.
    """
    import numpy as np

    s, v = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    keep = (s > 0) & np.isfinite(s) & np.isfinite(v)
    x, v = np.log(s[keep]), v[keep]
    if x.size < 3 or x.max() == x.min():
        return np.empty(0), np.empty(0)
    xs = np.linspace(x.min(), x.max(), grid)
    w = np.exp(-0.5 * ((xs[:, None] - x[None, :]) / smooth) ** 2)
    return xs, (w @ v) / w.sum(axis=1)


def _turning_points(y, tol: float) -> list[int]:
    """Indices of local extrema of ``y`` confirmed by a retreat of more than ``tol`` afterwards (zigzag).

    A maximum counts once the curve has fallen more than ``tol`` below it (a minimum: risen above it), so
    wiggles smaller than ``tol`` never make a boundary, and a plateau at the end of the curve is not a turn.
    """
    turns, trend = [], 0  # +1 rising, -1 falling, 0 undecided
    ext_i = lo_i = hi_i = 0
    for i in range(1, len(y)):
        if trend == 0:
            if y[i] > y[hi_i]:
                hi_i = i
            if y[i] < y[lo_i]:
                lo_i = i
            if y[hi_i] - y[lo_i] > tol:  # first clear move decides the initial trend
                trend = 1 if hi_i > lo_i else -1
                ext_i = hi_i if trend == 1 else lo_i
        elif trend == 1:
            if y[i] >= y[ext_i]:
                ext_i = i
            elif y[ext_i] - y[i] > tol:
                turns.append(ext_i)
                trend, ext_i = -1, i
        else:
            if y[i] <= y[ext_i]:
                ext_i = i
            elif y[i] - y[ext_i] > tol:
                turns.append(ext_i)
                trend, ext_i = 1, i
    return turns


def stage_boundaries(steps: Sequence[float], llc: Sequence[float], smooth: float = 0.5, min_change: float = 0.1,
                     llc_std: Sequence[float] | None = None, grid: int = 512) -> list[int]:
    """Steps where the smoothed λ̂(log step) turns: the stage boundaries of Hoogland et al. 2024.

    A critical point counts when the smoothed curve moves back after it by more than ``min_change`` × its range,
    and by more than the median ``llc_std`` when given (a turn inside the chain-to-chain spread is not a stage).
    Each boundary is reported as the measured step nearest (in log step) to the smoothed extremum. A monotone
    curve has none. Fewer than 3 usable points give none.
    """
    import numpy as np

    if smooth <= 0:
        raise ValueError(f"smooth must be > 0 (got {smooth!r})")
    xs, ys = smooth_log_curve(steps, llc, smooth=smooth, grid=grid)
    if xs.size == 0:
        return []
    # floor: rounding noise of the smoother (~1e-15 relative) must never count as a turn of a flat curve
    tol = max(min_change * float(ys.max() - ys.min()), 1e-9 * max(1.0, float(np.abs(ys).max())))
    if llc_std is not None:
        std = np.asarray(llc_std, dtype=np.float64)
        std = std[np.isfinite(std)]
        if std.size:
            tol = max(tol, float(np.median(std)))
    s = np.asarray(steps, dtype=np.float64)
    candidates = np.unique(s[(s > 0) & np.isfinite(s) & np.isfinite(np.asarray(llc, dtype=np.float64))])
    out = []
    for i in _turning_points(ys, tol):
        nearest = int(candidates[np.argmin(np.abs(np.log(candidates) - xs[i]))])
        if nearest not in out:
            out.append(nearest)
    return out


# ---------------------------------------------------------------------------------------------------------------
# terminal


def _fmt(x, spec: str, missing: str | bool = "-") -> str:
    """``missing`` stands for None/NaN ("n/a" for the std of a single-chain estimate: undefined, not 0)."""
    missing = missing or "-"
    try:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return f"{missing:>{len(format(0.0, spec))}}" if missing != "-" else "-"
        return format(float(x), spec)
    except (TypeError, ValueError):
        return "-"


def format_table(df, boundaries: dict | None = None) -> str:
    """The trajectory as plain text, one block per (run_id, config_hash).

    ``boundaries`` maps (run_id, config_hash) to stage-boundary steps; those rows get a ``*`` mark and the block
    a line listing them.
    """
    if df is None or len(df) == 0:
        return "no measurements found"
    header = f"{'step':>12}  {'status':<8}  {'llc_mean':>10}  {'± std':>8}  {'init_loss':>9}  {'‖w‖':>9}  " \
             f"{'dist₀':>9}  {'chains':>6}  {'R̂':>6}  {'ESS':>6}  {'MALA':>5}"
    blocks = []
    for (run, cfg), g in df.groupby(["run_id", "config_hash"], sort=True):
        marks = set((boundaries or {}).get((run, cfg), []))
        nbeta = g["nbeta"].dropna()
        nb = f"  nβ={nbeta.iloc[0]:g}" if len(nbeta) else ""
        lines = [f"run {run}  config {cfg}{nb}", header]
        for r in g.itertuples(index=False):
            chains = "-" if r.num_chains_used is None or str(r.num_chains_used) == "<NA>" else str(r.num_chains_used)
            mark = "*" if int(r.step) in marks else " "
            bad = "!" if getattr(r, "diag_fail", False) else " "
            lines.append(f"{int(r.step):>12}{mark}{bad} {r.status:<8} {_fmt(r.llc_mean, '10.4g')}  "
                         f"{_fmt(r.llc_std, '8.3g', r.status == 'ok' and 'n/a')}  {_fmt(r.init_loss, '9.4g')}  "
                         f"{_fmt(r.weight_norm, '9.4g')}  "
                         f"{_fmt(r.dist_from_first, '9.4g')}  {chains:>6}  {_fmt(r.rhat, '6.3f')}  "
                         f"{_fmt(r.ess_bulk, '6.0f')}  {_fmt(r.mala_acceptance, '5.2f')}")
        if getattr(g, "diag_fail", None) is not None and g["diag_fail"].any():
            lines.append("! chain diagnostics fail (R̂ > 1.1, low bulk ESS or low MALA acceptance): "
                         "see docs/calibration.md")
        if boundaries is not None:
            found = ", ".join(str(s) for s in sorted(marks)) or "none"
            lines.append(f"stage boundaries (* ; turns of smoothed λ̂ vs log step): {found}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
