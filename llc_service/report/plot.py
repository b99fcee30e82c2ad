"""The trajectory figure: λ̂ (± std across chains) above, the loss at the checkpoint below, against log step.

Log step because development is fastest early and checkpoints are usually log-spaced; the initialization
(step 0) is kept on a symlog axis (linear below step 1) rather than dropped. Stage boundaries are drawn as
dashed verticals in the colour of their trajectory so a reader sees where λ̂ turns and what the loss did there.
"""

from __future__ import annotations

import io


def plot_trajectory(table, path: str, boundaries: bool | dict = True, smooth: float = 0.5,
                    storage_options: dict | None = None, title: str | None = None) -> str:
    """Write the figure (PNG, or any format matplotlib infers from the suffix) to ``path``; returns ``path``.

    ``table`` is a ``trajectory_table``. ``boundaries``: True computes them with ``stage_boundaries``; a dict
    {(run_id, config_hash): [steps]} uses those; False draws none. ``path`` may be an fsspec URI.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed; a no-op if a backend is already in use
    import matplotlib.pyplot as plt
    import numpy as np

    from llc_service.report.trajectory import stage_boundaries

    fig, (ax_llc, ax_loss) = plt.subplots(2, 1, sharex=True, figsize=(9, 7), height_ratios=[3, 2])
    try:
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        has_zero = bool(len(table)) and bool((table["step"] <= 0).any())
        groups = list(table.groupby(["run_id", "config_hash"], sort=True)) if len(table) else []
        for k, ((run, cfg), g) in enumerate(groups):
            colour = colours[k % len(colours)]
            label = run if len(groups) == 1 else f"{run} [{cfg}]"
            ok = g[g["status"] == "ok"]
            steps = ok["step"].to_numpy(dtype=np.float64)
            ax_llc.errorbar(steps, ok["llc_mean"].to_numpy(dtype=np.float64),
                            yerr=np.nan_to_num(ok["llc_std"].to_numpy(dtype=np.float64)), color=colour,
                            marker="o", markersize=3, capsize=2, linewidth=1.2, label=label)
            ax_loss.plot(g["step"].to_numpy(dtype=np.float64), g["init_loss"].to_numpy(dtype=np.float64),
                         color=colour, marker="o", markersize=3, linewidth=1.2, label=label)
            if "diag_fail" in ok.columns and ok["diag_fail"].astype(bool).any():  # diagnostics fail: ringed
                flagged = ok[ok["diag_fail"].astype(bool)]
                ax_llc.plot(flagged["step"].to_numpy(dtype=np.float64), flagged["llc_mean"].to_numpy(dtype=np.float64),
                            linestyle="none", marker="o", markersize=10, markerfacecolor="none", color="red",
                            label="diagnostics fail" if k == 0 else None)
            bad = g[g["status"] != "ok"]
            if len(bad):  # failed / diverged measurements: marked on the axis, not silently missing
                ax_llc.plot(bad["step"].to_numpy(dtype=np.float64), np.full(len(bad), 0.03), linestyle="none",
                            marker="x", color=colour, transform=ax_llc.get_xaxis_transform())
            if boundaries is True:
                found = stage_boundaries(steps, ok["llc_mean"], smooth=smooth, llc_std=ok["llc_std"])
            elif isinstance(boundaries, dict):
                found = boundaries.get((run, cfg), [])
            else:
                found = []
            for b in found:
                for ax in (ax_llc, ax_loss):
                    ax.axvline(b, color=colour, linestyle="--", linewidth=0.9, alpha=0.8)
        for ax in (ax_llc, ax_loss):
            if has_zero:
                ax.set_xscale("symlog", linthresh=1.0)
            elif groups:
                ax.set_xscale("log")
            ax.grid(True, which="major", alpha=0.3)
        if groups:  # explicit limits: symlog's automatic margins would open a meaningless negative-step range
            lo, hi = float(table["step"].min()), float(table["step"].max())
            ax_loss.set_xlim(0.0 if has_zero else lo / 1.5, max(hi * 1.5, 2.0))
        nbeta = table["nbeta"].dropna().unique() if len(table) else []
        ax_llc.set_ylabel("λ̂ (LLC)" + (f", nβ={nbeta[0]:g}" if len(nbeta) == 1 else ""))
        ax_loss.set_ylabel("loss at checkpoint L(w*)")
        ax_loss.set_xlabel("training step" + (" (symlog)" if has_zero else " (log)"))
        ax_llc.set_title(title or "LLC trajectory" + ("; dashed: stage boundaries" if boundaries else ""))
        if groups:
            ax_llc.legend(fontsize="small")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format=_format(path), dpi=120)
    finally:
        plt.close(fig)
    _write(path, buf.getvalue(), storage_options)
    return path


def _format(path: str) -> str:
    suffix = str(path).rsplit(".", 1)[-1].lower() if "." in str(path).rsplit("/", 1)[-1] else "png"
    return suffix if suffix in ("png", "pdf", "svg") else "png"


def _write(path: str, data: bytes, storage_options: dict | None) -> None:
    import fsspec

    with fsspec.open(str(path), "wb", **dict(storage_options or {})) as f:
        f.write(data)
