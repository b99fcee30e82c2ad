"""The selection rule: which grid point to recommend, or why none (docs/calibration.md explains and justifies it).

Within each (nβ, γ), grid points are taken in increasing ε. A point is **healthy** when

1. no chain diverged;
2. its draws are stationary in the second half: the mean of the last quarter differs from the third quarter's by
   less than ``STATIONARY_Z`` standard errors (Geweke-style, with ArviZ's ESS for the standard errors);
3. R̂ ≤ 1.1 where measured (2+ chains), and λ̂ > 0 (a negative λ̂ means w* is not a local minimum at this γ);
4. where MALA acceptance is informative — it is ≥ 0.9 at the smallest ε of the group, i.e. the dimension is small
   enough for acceptance to resolve the step size — an acceptance of at least ``ACCEPT_MIN``.

Where acceptance is informative, the recommendation is the largest healthy ε whose acceptance is at least
``ACCEPT_TARGET`` = 0.9: there acceptance measures the discretisation error directly (on known truths, acceptance
≥ 0.9 kept λ̂'s step-size bias within ~5 %, 0.84–0.86 let it reach +25 %; docs/calibration.md), and the largest
such ε is the best mixed. Otherwise a healthy point is on the **plateau** when the next smaller ε is healthy too and
their λ̂ agree within Monte-Carlo error (``PLATEAU_SIGMAS`` combined standard errors of the means, capped at
``PLATEAU_REL_MAX`` = 10 % relative) or within ``PLATEAU_REL`` = 5 % relative, and the recommendation is the largest ε
on a plateau (largest: the fastest mixing, and the cheapest per effective draw). Across (nβ, γ) groups the largest
chosen ε wins. Nothing chosen anywhere: no recommendation, and a reason with what to try.
"""

from __future__ import annotations

import math

STATIONARY_Z = 3.0
PLATEAU_SIGMAS = 2.0
PLATEAU_REL = 0.05
PLATEAU_REL_MAX = 0.10
ACCEPT_INFORMATIVE = 0.9
ACCEPT_MIN = 0.5
ACCEPT_TARGET = 0.9
RHAT_MAX = 1.1


def _num(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def healthy(row, accept_informative: bool) -> tuple[bool, str]:
    """(ok, why not) for one grid point's table row."""
    if row["chains_diverged"] > 0:
        return False, f"{int(row['chains_diverged'])} chain(s) diverged"
    if not math.isfinite(_num(row["llc_mean"])):
        return False, "no estimate"
    if not row["stationary"]:
        return False, f"not stationary in the second half (z = {_num(row['drift_z']):.1f})"
    rhat = _num(row["rhat"])
    if math.isfinite(rhat) and rhat > RHAT_MAX:
        return False, f"R̂ {rhat:.2f} > {RHAT_MAX}"
    if row["llc_mean"] <= 0:
        return False, "λ̂ ≤ 0"
    acc = _num(row["mala_acceptance"])
    if accept_informative and math.isfinite(acc) and acc < ACCEPT_MIN:
        return False, f"MALA acceptance {acc:.2f} < {ACCEPT_MIN}"
    return True, ""


def agree(a, b) -> bool:
    diff = abs(a["llc_mean"] - b["llc_mean"])
    se = math.sqrt(_num(a["llc_se"]) ** 2 + _num(b["llc_se"]) ** 2)
    scale = max(abs(a["llc_mean"]), abs(b["llc_mean"]))
    # within MC error, but never more than 10 % apart (noisy short chains must not make every pair "agree"); always
    # agree within 5 % (long chains resolve differences too small to matter)
    return diff <= max(PLATEAU_REL * scale, min(PLATEAU_SIGMAS * se, PLATEAU_REL_MAX * scale))


def select(table) -> tuple[int | None, str, list[str]]:
    """(index of the recommended row or None, the reason, one verdict per row)."""
    verdicts = [""] * len(table)
    best, best_reason = None, ""
    problems = []
    for (nbeta, gamma), g in table.groupby(["nbeta", "gamma"], sort=True):
        g = g.sort_values("epsilon")
        idx = list(g.index)
        first_acc = _num(g["mala_acceptance"].iloc[0])
        informative = math.isfinite(first_acc) and first_acc >= ACCEPT_INFORMATIVE
        health = {i: healthy(table.loc[i], informative) for i in idx}
        plateau = []
        for k, i in enumerate(idx):
            ok, why = health[i]
            if not ok:
                verdicts[i] = why
                continue
            if k == 0:
                verdicts[i] = "healthy; no smaller ε to compare with"
                continue
            j = idx[k - 1]
            if not health[j][0]:
                verdicts[i] = f"healthy; ε={table.loc[j, 'epsilon']:g} below is not ({health[j][1]})"
            elif agree(table.loc[i], table.loc[j]):
                verdicts[i] = f"plateau: λ̂ agrees with ε={table.loc[j, 'epsilon']:g}"
                plateau.append(i)
            else:
                verdicts[i] = (f"healthy; λ̂ {table.loc[i, 'llc_mean']:.4g} differs from {table.loc[j, 'llc_mean']:.4g}"
                               f" at ε={table.loc[j, 'epsilon']:g}")
        if informative:
            accepted = [i for i in idx if health[i][0] and _num(table.loc[i, "mala_acceptance"]) >= ACCEPT_TARGET]
            for i in idx:
                if health[i][0]:
                    acc = _num(table.loc[i, "mala_acceptance"])
                    verdicts[i] = (f"healthy, MALA acceptance {acc:.2f} ≥ {ACCEPT_TARGET}" if i in accepted else
                                   f"MALA acceptance {acc:.2f} < {ACCEPT_TARGET} (step-size bias)")
            if accepted:
                i = accepted[-1]
                if best is None or table.loc[i, "epsilon"] > table.loc[best, "epsilon"]:
                    r = table.loc[i]
                    best = i
                    best_reason = (
                        f"ε={r['epsilon']:g}, nβ={nbeta:g}, γ={gamma:g}: the largest ε whose chains do not diverge, "
                        f"are stationary in the second half (z = {_num(r['drift_z']):.1f}), R̂ = {_num(r['rhat']):.3g}, "
                        f"and whose MALA acceptance {_num(r['mala_acceptance']):.2f} ≥ {ACCEPT_TARGET} bounds the "
                        f"step-size bias (acceptance informative: {first_acc:.2f} at the smallest ε); "
                        f"λ̂ {r['llc_mean']:.4g} ± {_num(r['llc_se']):.2g}")
            else:
                problems.append(f"nβ={nbeta:g}, γ={gamma:g}: no healthy ε with MALA acceptance ≥ {ACCEPT_TARGET}")
            continue
        if plateau:
            i = max(plateau, key=lambda r: table.loc[r, "epsilon"])
            if best is None or table.loc[i, "epsilon"] > table.loc[best, "epsilon"]:
                r, j = table.loc[i], idx[idx.index(i) - 1]
                best = i
                acc = _num(r["mala_acceptance"])
                best_reason = (
                    f"ε={r['epsilon']:g}, nβ={nbeta:g}, γ={gamma:g}: the largest ε whose chains do not diverge, are "
                    f"stationary in the second half (z = {_num(r['drift_z']):.1f}), R̂ = {_num(r['rhat']):.3g}, and "
                    f"whose λ̂ {r['llc_mean']:.4g} ± {_num(r['llc_se']):.2g} agrees with {table.loc[j, 'llc_mean']:.4g} "
                    f"at ε={table.loc[j, 'epsilon']:g} (plateau)"
                    + (f"; MALA acceptance {acc:.2f}" if math.isfinite(acc) else "")
                    + ("" if informative or not math.isfinite(first_acc) else
                       f" (acceptance not used: {first_acc:.2f} already at the smallest ε, high dimension)"))
        else:
            ok = [i for i in idx if health[i][0]]
            vals = " → ".join(f"{table.loc[i, 'llc_mean']:.3g}" for i in ok)
            problems.append(f"nβ={nbeta:g}, γ={gamma:g}: " + (
                f"no two neighbouring healthy ε agree (λ̂ {vals} as ε grows)" if len(ok) > 1 else
                f"{len(ok)} healthy point(s)"))
    if best is not None:
        verdicts[best] = "recommended: " + verdicts[best]
        return best, best_reason, verdicts
    advice = ("no acceptable setting: " + "; ".join(problems) + ". Try: more draws and burn-in (--set num_draws=..., "
              "num_burnin=...) so small ε reach stationarity; a larger γ (--grid gamma=...) to keep chains local; "
              "another nβ (--grid nbeta=...); or a finer ε grid between the last healthy points.")
    return None, advice, verdicts
