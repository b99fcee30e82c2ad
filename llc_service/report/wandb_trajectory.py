"""wandb view of a trajectory: one run per (training run, config) with λ̂ and friends against checkpoint step.

The per-checkpoint wandb runs (``llc_service.sinks.wandb``) cannot draw λ̂ across training, because each holds
one checkpoint. This run can: it is rebuilt from the Parquet summary on every call, under a deterministic id,
so calling it again after more checkpoints were measured lands on the same wandb run.

wandb's own step is set to the checkpoint step. When an existing run is resumed online, wandb drops points at
steps it already has (with a warning) and appends the later ones, so repeating the call adds no duplicates.
A checkpoint measured late at an *earlier* step than the run already shows is dropped the same way; delete the
wandb run to rebuild it completely (Parquet stays the record). Offline, every call writes a fresh run directory
with that id for ``wandb sync``.

Like the per-checkpoint sink, this must never fail what called it: every error becomes a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os

log = logging.getLogger(__name__)

LOGGED = ("llc_mean", "llc_std", "llc_lo", "llc_hi", "init_loss", "weight_norm", "dist_from_first")


def trajectory_run_id(run_id: str, config_hash: str) -> str:
    """16 hex chars, a valid wandb id; distinct from every per-checkpoint run id by the "trajectory" tag."""
    return hashlib.sha256(json.dumps([str(run_id), str(config_hash), "trajectory"]).encode()).hexdigest()[:16]


def _finite(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def trajectory_rows(group) -> list[dict]:
    """One wandb history row per checkpoint, in step order; non-finite values are left out, not logged as NaN."""
    rows = []
    for r in group.sort_values("step").itertuples(index=False):
        mean, std = _finite(r.llc_mean), _finite(r.llc_std)
        row = {"checkpoint_step": int(r.step), "llc_mean": mean, "llc_std": std,
               "llc_lo": None if mean is None or std is None else mean - std,
               "llc_hi": None if mean is None or std is None else mean + std,
               "init_loss": _finite(r.init_loss), "weight_norm": _finite(r.weight_norm),
               "dist_from_first": _finite(r.dist_from_first), "ok": int(r.status == "ok")}
        rows.append({k: v for k, v in row.items() if v is not None})
    return rows


def log_trajectory(table, project: str, entity: str | None = None, run_id: str | None = None,
                   config_hash: str | None = None, dir: str | None = None, mode: str | None = None,
                   results_uri: str | None = None) -> list[str]:
    """Log each (run_id, config_hash) trajectory in ``table`` (optionally only one run / config) as a wandb run.

    Returns the wandb ids written. Never raises: a failing trajectory is logged as a warning and skipped.
    """
    from llc_service.report.trajectory import base_config

    written = []
    try:
        groups = table.groupby(["run_id", "config_hash"], sort=True) if len(table) else []
        for (run, cfg), g in groups:
            if (run_id is not None and run != run_id) or (config_hash is not None
                                                           and config_hash not in (cfg, base_config(cfg))):
                continue
            try:
                written.append(_log_one(g, str(run), str(cfg), project, entity, dir, mode, results_uri))
            except Exception as exc:  # noqa: BLE001 - a view failing must not fail the report
                log.warning("wandb trajectory of %s [%s] failed (%s: %s)", run, cfg, type(exc).__name__, exc)
    except Exception as exc:  # noqa: BLE001
        log.warning("wandb trajectory logging failed (%s: %s)", type(exc).__name__, exc)
    return written


def rebuild_trajectories(results_uri: str, cfg, dirty: set[tuple[str, str]]) -> None:
    """Rebuild the wandb trajectory run of each (run, config) in ``dirty`` from the Parquet results (the watcher's
    outcome hook, through :meth:`llc_service.sinks.wandb.WandbSink.on_outcomes`). Never raises."""
    try:
        from llc_service.report.components import component_table, log_components
        from llc_service.report.trajectory import base_config, trajectory_table
        from llc_service.sinks import read_summary

        summary = read_summary(results_uri, storage_options=cfg.storage_options)
        for run, cfg_hash in sorted(dirty):
            table = trajectory_table(summary, run_id=run)
            ids = log_trajectory(table, cfg.wandb_project, entity=cfg.wandb_entity, run_id=run,
                                 config_hash=cfg_hash, results_uri=results_uri)
            parts = component_table(summary, run_id=run)  # refined LLC: llc/<component> series, if any
            parts = parts[parts["config_hash"].map(base_config) == cfg_hash] if len(parts) else parts
            if len(parts):
                ids += log_components(parts, cfg.wandb_project, entity=cfg.wandb_entity)
            if ids:
                log.info("wandb trajectory of %s [%s] rebuilt (%s)", run, cfg_hash, ", ".join(ids))
            else:
                log.warning("wandb trajectory of %s [%s] not rebuilt (see the warning above); the Parquet "
                            "results are intact", run, cfg_hash)
    except Exception as exc:  # noqa: BLE001 - the view must never cost a result
        log.warning("wandb trajectory update failed (%s: %s)", type(exc).__name__, exc)


def _log_one(group, run: str, cfg: str, project, entity, dir, mode, results_uri) -> str:
    import wandb

    from llc_service.report.trajectory import stage_boundaries

    wid = trajectory_run_id(run, cfg)
    ok = group[group["status"] == "ok"]
    bounds = stage_boundaries(ok["step"], ok["llc_mean"], llc_std=ok["llc_std"])
    nbeta = group["nbeta"].dropna()
    config = {"run_id": run, "config_hash": cfg, "nbeta": float(nbeta.iloc[0]) if len(nbeta) else None,
              "results_uri": results_uri, "num_checkpoints": int(len(group))}
    from llc_service.credentials import run_settings  # no command line or code in the run file

    settings = run_settings()
    wrun = wandb.init(project=project, entity=entity, id=wid, name=f"{run} trajectory [{cfg}]", group=run,
                      job_type="trajectory", config=config, resume="allow", reinit="create_new", mode=mode,
                      dir=dir or os.environ.get("WANDB_DIR"), settings=settings)
    try:
        wrun.define_metric("checkpoint_step")
        wrun.define_metric("*", step_metric="checkpoint_step")
        for row in trajectory_rows(group):
            wrun.log(row, step=row["checkpoint_step"])
        wrun.summary["stage_boundaries"] = bounds
        wrun.summary["num_checkpoints"] = int(len(group))
    finally:
        wrun.finish()
    return wid
