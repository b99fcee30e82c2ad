"""Report: λ̂ across training, read back from the Parquet results (the record), never from wandb.

``run_report`` is what ``llc-service report RESULTS`` runs: the trajectory table in the terminal, stage
boundaries, optionally a plot and a wandb trajectory run. The parts live in ``trajectory`` (table, stage
boundaries, text), ``plot`` (matplotlib figure) and ``wandb_trajectory`` (wandb view).
"""

from __future__ import annotations

from llc_service.report.trajectory import format_table, stage_boundaries, trajectory_table

__all__ = ["run_report", "trajectory_table", "format_table", "stage_boundaries"]


def boundaries_by_trajectory(table, smooth: float = 0.5) -> dict:
    """{(run_id, config_hash): [boundary steps]} from the ok rows of each trajectory."""
    out = {}
    if len(table) == 0:
        return out
    for key, g in table.groupby(["run_id", "config_hash"], sort=True):
        ok = g[g["status"] == "ok"]
        out[key] = stage_boundaries(ok["step"], ok["llc_mean"], smooth=smooth, llc_std=ok["llc_std"])
    return out


def run_report(results_uri: str, run_id: str | None = None, plot: str | None = None,
               storage_options: dict | None = None, wandb_project: str | None = None,
               wandb_entity: str | None = None, smooth: float = 0.5, echo: bool = True) -> str:
    """Read the summary under ``results_uri``, print (if ``echo``) and return the trajectory text.

    ``plot``: a file path or URI for the figure. ``wandb_project``: also log one wandb trajectory run per
    (run, config); failures there only warn.
    """
    from llc_service.report import components as C
    from llc_service.sinks import read_summary

    summary = read_summary(results_uri, storage_options=storage_options)
    table = trajectory_table(summary, run_id=run_id)
    parts = C.component_table(summary, run_id=run_id)  # refined LLC: per-component trajectories, if any
    bounds = boundaries_by_trajectory(table, smooth=smooth)
    text = format_table(table, boundaries=bounds) if len(table) or not len(parts) else ""
    if len(parts):
        text = "\n\n".join(t for t in (text, C.format_components(parts)) if t)
    if len(table) == 0 and len(parts) == 0 and run_id is not None:
        text = f"no measurements of run {run_id!r} under {results_uri}"
    if plot and len(parts):
        for path in C.plot_components(parts, plot, storage_options=storage_options):
            text += f"\n\ncomponent plot written to {path}"
    if plot and len(table):
        from llc_service.report.plot import plot_trajectory

        plot_trajectory(table, plot, boundaries=bounds, smooth=smooth)
        text += f"\n\nplot written to {plot}"
    if wandb_project and len(table):
        from llc_service.report.wandb_trajectory import log_trajectory

        ids = log_trajectory(table, wandb_project, entity=wandb_entity, run_id=run_id,
                             results_uri=str(results_uri))
        text += f"\nwandb trajectory runs: {', '.join(ids) or 'none (see warnings)'}"
    if wandb_project and len(parts):
        ids = C.log_components(parts, wandb_project, entity=wandb_entity)
        text += f"\nwandb component trajectory runs: {', '.join(ids) or 'none (see warnings)'}"
    if echo:
        print(text)
    return text
