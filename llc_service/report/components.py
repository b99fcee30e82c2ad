"""Refined-LLC trajectories: λ̂ of each component (head, MLP, layer, ...) against training step.

Rows with a ``component`` (other than ``all``, which is the whole model and stays in the main trajectory) form
one trajectory per (run_id, config_hash, component). The text report is a component × step matrix of λ̂; the figure
is small multiples (one panel per component) for up to ``MAX_PANELS`` components, else a heat map of λ̂ by component
and step; the wandb view is one run per (run_id, config_hash) with a ``llc/<component>`` series per component
against ``checkpoint_step``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os

log = logging.getLogger(__name__)

MAX_PANELS = 12
COLUMNS = ("run_id", "config_hash", "component", "step", "status", "llc_mean", "llc_std", "component_params")


def component_table(summary_df, run_id: str | None = None):
    """One row per (run_id, config_hash, component, step): the best row of each (ok first, then the latest)."""
    import pandas as pd

    empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in COLUMNS})
    if summary_df is None or len(summary_df) == 0 or "component" not in summary_df.columns:
        return empty
    df = summary_df[summary_df["component"].notna() & (summary_df["component"] != "all")
                    & summary_df["checkpoint_step"].notna()]
    if run_id is not None:
        df = df[df["run_id"] == run_id]
    if len(df) == 0:
        return empty
    from llc_service.report.trajectory import split_by_data

    df = split_by_data(df)
    df = df.assign(_ok=(df["status"] == "ok").astype(int), _order=range(len(df)))
    order = ["_ok"] + [c for c in ("ended_at", "attempt") if c in df.columns]
    df = df.sort_values(order, kind="stable", na_position="first")
    df = df.drop_duplicates(["run_id", "config_hash", "component", "checkpoint_step"], keep="last")
    df = df.sort_values(["run_id", "config_hash", "checkpoint_step", "_order"], kind="stable")
    return pd.DataFrame({
        "run_id": df["run_id"].astype(str).to_numpy(), "config_hash": df["config_hash"].astype(str).to_numpy(),
        "component": df["component"].astype(str).to_numpy(), "step": df["checkpoint_step"].astype("int64").to_numpy(),
        "status": df["status"].astype(str).to_numpy(), "llc_mean": df["llc_mean"].astype("float64").to_numpy(),
        "llc_std": df["llc_std"].astype("float64").to_numpy(),
        "component_params": df["component_params"].astype("Int64").to_numpy(),
    }).reset_index(drop=True)


def _order(g) -> list[str]:
    """Components in the order they were measured (config order), not alphabetical (layer10 after layer9)."""
    return list(dict.fromkeys(g["component"]))


def format_components(table) -> str:
    """A component × step matrix of λ̂ per (run, config); failed/diverged cells show their status."""
    if len(table) == 0:
        return ""
    blocks = []
    for (run, cfg), g in table.groupby(["run_id", "config_hash"], sort=True):
        steps = sorted(g["step"].unique())
        width = max(len(c) for c in g["component"]) + 2
        lines = [f"components of {run} [{cfg}]: λ̂ by training step",
                 " " * width + "".join(f"{s:>10d}" for s in steps)]
        cells = {(r.component, r.step): (r.status, r.llc_mean) for r in g.itertuples(index=False)}
        for comp in _order(g):
            row = []
            for s in steps:
                status, value = cells.get((comp, s), (None, math.nan))
                text = "" if status is None else (f"{value:.4g}" if status == "ok" else status)
                row.append(f"{text:>10}")
            lines.append(f"{comp:<{width}}" + "".join(row))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def components_plot_path(path: str, run: str, cfg: str, several: bool) -> str:
    stem, dot, ext = str(path).rpartition(".")
    if not dot:
        stem, ext = str(path), "png"
    return f"{stem}-components" + (f"-{run}-{cfg}" if several else "") + f".{ext}"


def plot_components(table, path: str, storage_options: dict | None = None) -> list[str]:
    """One figure per (run, config) next to ``path`` (``<stem>-components.png``); returns the paths written."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import io

    import matplotlib.pyplot as plt
    import numpy as np

    from llc_service.report.plot import _format, _write

    groups = list(table.groupby(["run_id", "config_hash"], sort=True)) if len(table) else []
    written = []
    for (run, cfg), g in groups:
        comps = _order(g)
        steps = sorted(g["step"].unique())
        out = components_plot_path(path, run, cfg, len(groups) > 1)
        if len(comps) <= MAX_PANELS:
            ncols = min(4, len(comps))
            nrows = math.ceil(len(comps) / ncols)
            fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), sharex=True, squeeze=False)
            for ax in axes.flat[len(comps):]:
                ax.set_visible(False)
            for ax, comp in zip(axes.flat, comps):
                ok = g[(g["component"] == comp) & (g["status"] == "ok")]
                ax.errorbar(ok["step"].to_numpy(dtype=float), ok["llc_mean"].to_numpy(dtype=float),
                            yerr=np.nan_to_num(ok["llc_std"].to_numpy(dtype=float)), marker="o", markersize=3,
                            capsize=2, linewidth=1.0)
                ax.set_title(comp, fontsize="small")
                if min(steps) <= 0:
                    ax.set_xscale("symlog", linthresh=1.0)
                    ax.set_xlim(0.0, max(max(steps) * 1.5, 2.0))
                else:  # explicit limits: one checkpoint alone would give log axes no range
                    ax.set_xscale("log")
                    ax.set_xlim(min(steps) / 1.5, max(steps) * 1.5)
                ax.grid(True, alpha=0.3)
            fig.supxlabel("training step")
            fig.supylabel("λ̂ of the component")
        else:
            grid = np.full((len(comps), len(steps)), np.nan)
            for r in g[g["status"] == "ok"].itertuples(index=False):
                grid[comps.index(r.component), steps.index(r.step)] = r.llc_mean
            fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(steps) + 3), max(4, 0.22 * len(comps) + 1.5)))
            im = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="viridis")
            ax.set_yticks(range(len(comps)), comps, fontsize=6 if len(comps) > 40 else 8)
            ax.set_xticks(range(len(steps)), [str(s) for s in steps], rotation=45, fontsize=8)
            ax.set_xlabel("training step (one column per checkpoint)")
            fig.colorbar(im, ax=ax, label="λ̂")
        fig.suptitle(f"refined LLC of {run} [{cfg}]")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format=_format(out), dpi=110)
        plt.close(fig)
        _write(out, buf.getvalue(), storage_options)
        written.append(out)
    return written


def components_run_id(run_id: str, config_hash: str) -> str:
    return hashlib.sha256(json.dumps([str(run_id), str(config_hash), "components"]).encode()).hexdigest()[:16]


def log_components(table, project: str, entity: str | None = None, dir: str | None = None,
                   mode: str | None = None) -> list[str]:
    """One wandb run per (run, config) with ``llc/<component>`` (and ``llc_std/<component>``) against
    ``checkpoint_step``. Never raises: failures are warnings."""
    written = []
    for (run, cfg), g in (table.groupby(["run_id", "config_hash"], sort=True) if len(table) else []):
        try:
            import wandb

            from llc_service.credentials import run_settings

            settings = run_settings()  # no argv, code or git state in the run file
            wid = components_run_id(run, cfg)
            wrun = wandb.init(project=project, entity=entity, id=wid, name=f"{run} components [{cfg}]", group=run,
                              job_type="trajectory-components", config={"run_id": run, "config_hash": cfg,
                                                                        "components": _order(g)},
                              resume="allow", reinit="create_new", mode=mode,
                              dir=dir or os.environ.get("WANDB_DIR"), settings=settings)
            try:
                wrun.define_metric("checkpoint_step")
                wrun.define_metric("*", step_metric="checkpoint_step")
                for step, at in g[g["status"] == "ok"].groupby("step", sort=True):
                    row = {"checkpoint_step": int(step)}
                    for r in at.itertuples(index=False):
                        row[f"llc/{r.component}"] = float(r.llc_mean)
                        if r.llc_std == r.llc_std:  # not NaN (one chain: undefined)
                            row[f"llc_std/{r.component}"] = float(r.llc_std)
                    wrun.log(row, step=int(step))
            finally:
                wrun.finish()
            written.append(wid)
        except Exception as exc:  # noqa: BLE001 - a view failing must not fail the report
            log.warning("wandb component trajectory of %s [%s] failed (%s: %s)", run, cfg, type(exc).__name__, exc)
    return written
