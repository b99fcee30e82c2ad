"""What a person looks at: the calibration table as text, and λ̂ against ε with the loss traces beside it."""

from __future__ import annotations

import io
import math


def _f(x, spec: str) -> str:
    try:
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(float(x), spec)
    except (TypeError, ValueError):
        return "-"


def format_table(table) -> str:
    head = (f"{'epsilon':>9} {'nbeta':>7} {'gamma':>7} {'llc_mean':>9} {'± se':>8} {'div':>3} {'R̂':>6} {'ESS':>6} "
            f"{'MALA':>5} {'z':>6} {'sec':>6}  verdict")
    lines = [head]
    for r in table.itertuples(index=False):
        mark = "→" if getattr(r, "recommended", False) else " "
        lines.append(f"{r.epsilon:>9.3g} {r.nbeta:>7.4g} {r.gamma:>7.4g} {_f(r.llc_mean, '9.4g')} "
                     f"{_f(r.llc_se, '8.2g')} {int(r.chains_diverged):>3} {_f(r.rhat, '6.3f')} "
                     f"{_f(r.ess_bulk, '6.0f')} "
                     f"{_f(r.mala_acceptance, '5.2f')} {_f(r.drift_z, '6.1f')} {_f(r.seconds, '6.1f')} {mark}"
                     f"{getattr(r, 'verdict', '')}")
    return "\n".join(lines)


def plot_calibration(result, path: str, storage_options: dict | None = None) -> str:
    """Left: λ̂ ± standard error against ε (log) per (nβ, γ), diverged points marked ×, the choice ringed.
    Right: each ε's mean loss trace across chains (the stationarity a person judges by eye)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    table = result.table
    fig, (ax, ax_tr) = plt.subplots(1, 2, figsize=(13, 5))
    try:
        cmap = plt.get_cmap("viridis")
        for (nbeta, gamma), g in table.groupby(["nbeta", "gamma"], sort=True):
            g = g.sort_values("epsilon")
            ok = g[np.isfinite(g["llc_mean"].to_numpy(dtype=float))]
            ax.errorbar(ok["epsilon"], ok["llc_mean"], yerr=np.nan_to_num(ok["llc_se"].to_numpy(dtype=float)),
                        marker="o", capsize=3, label=f"nβ={nbeta:g}, γ={gamma:g}")
            div = g[g["chains_diverged"] > 0]
            if len(div):
                y = np.where(np.isfinite(div["llc_mean"].to_numpy(dtype=float)), div["llc_mean"], 0.0)
                ax.plot(div["epsilon"], y, "x", color="red", markersize=10, label="chains diverged")
        rec = table[table["recommended"]]
        if len(rec):
            ax.plot(rec["epsilon"], rec["llc_mean"], "o", markersize=16, markerfacecolor="none", color="black",
                    label="recommended")
        ax.set_xscale("log")
        ax.set_xlabel("ε (log)")
        ax.set_ylabel("λ̂ ± standard error")
        ax.set_title("λ̂ against ε (the recommended point is circled; rule: docs/calibration.md)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        eps = table["epsilon"].to_numpy(dtype=float)
        lo, hi = (np.log10(eps.min()), np.log10(eps.max())) if len(eps) else (0, 1)
        for i, trace in result.traces.items():
            if trace is None or not np.size(trace):
                continue
            with np.errstate(all="ignore"):
                mean = np.nanmean(np.asarray(trace, dtype=float), axis=0)
            shade = 0.5 if hi == lo else (np.log10(eps[i]) - lo) / (hi - lo)
            r = table.iloc[i]
            ax_tr.plot(mean, color=cmap(shade), linewidth=1,
                       label=f"ε={r.epsilon:.2g}" + ("" if len(table.groupby(['nbeta', 'gamma'])) == 1
                                                      else f" nβ={r.nbeta:g} γ={r.gamma:g}"))
        ax_tr.axhline(float(table["init_loss"].iloc[0]), color="grey", linestyle="--", linewidth=1, label="L(w*)")
        ax_tr.set_xlabel("draw")
        ax_tr.set_ylabel("draw loss (mean over chains)")
        ax_tr.set_title("loss traces per ε")
        ax_tr.legend(fontsize="x-small", ncol=2)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
    finally:
        plt.close(fig)
    import fsspec

    with fsspec.open(str(path), "wb", **dict(storage_options or {})) as f:
        f.write(buf.getvalue())
    return path
