"""wandb view of a measurement: one run per checkpoint, grouped by training run.

Parquet is the record; this is a view and must never cost it. ``write`` catches every wandb failure, logs a
warning and returns. Each run gets a deterministic id (hash of run id, step and config hash), so a retry online
lands on the same wandb run; offline (``WANDB_MODE=offline``) the run is written under ``dir`` for ``wandb sync``.

Per-draw curves are logged against a custom ``draw`` axis: loss and running λ̂ per chain, and the running λ̂
averaged over the chains used. The summary holds the results, the config holds the resolved settings, the
measurement identity and where the Parquet files are.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from typing import Any

from llc_service.credentials import redact, run_settings
from llc_service.sinks.base import register_sink
from llc_service.sinks.record import MeasurementRecord

log = logging.getLogger(__name__)

MAX_LOGGED_DRAWS = 2000
"""Longer traces are logged every k-th draw (wandb charts sample anyway); the full trace is in Parquet."""

SUMMARY_KEYS = ("status", "error", "error_kind", "llc_mean", "llc_std", "init_loss", "llc_per_chain", "chain_status",
                "num_chains_used", "wbic", "weight_norm", "wall_seconds", "attempt", "checkpoint_step",
                "component_params", "component_seconds", "baseline", "rhat", "ess_bulk", "mala_acceptance",
                "mala_per_chain")
IDENTITY_KEYS = ("run_id", "checkpoint_step", "checkpoint_uri", "checkpoint_fingerprint", "config_hash", "component",
                 "data_uri", "data_fingerprint", "model_type", "num_params", "device", "world_size", "code_version")


def wandb_run_id(run_id: Any, checkpoint_step: Any, config_hash: Any, fingerprint: Any = None,
                 checkpoint_uri: Any = None, component: Any = None, data_fingerprint: Any = None) -> str:
    """16 hex chars: valid as a wandb id and the same for every retry of one measurement.

    With ``fingerprint`` (what the sink passes) the id names the measurement's whole identity
    (:class:`~llc_service.sinks.store.ResultKey`): the checkpoint's step, or its folder when it has none, and its
    content, so two checkpoints with identical weights never share a wandb run. ``component`` (refined LLC) gives
    each component row of one measurement its own run; ``data_fingerprint`` keeps the measurements of one checkpoint
    on two data sets (data-refined LLC) apart."""
    parts = [str(run_id), checkpoint_step, str(config_hash)]
    if fingerprint is not None:
        from llc_service.sinks.store import checkpoint_part

        parts += [checkpoint_part(checkpoint_step, checkpoint_uri), str(fingerprint)]
    if component is not None:
        parts.append(str(component))
    if data_fingerprint is not None:
        parts.append(["data", str(data_fingerprint)])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]




def _finite(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


@register_sink("wandb")
class WandbSink:
    def __init__(self, project: str, entity: str | None = None, results_uri: str | None = None,
                 dir: str | None = None, mode: str | None = None):
        self.project, self.entity, self.results_uri, self.dir, self.mode = project, entity, results_uri, dir, mode
        self.last_run_id: str | None = None

    @classmethod
    def from_config(cls, cfg, results_uri: str) -> WandbSink:
        return cls(cfg.wandb_project, entity=cfg.wandb_entity, results_uri=results_uri)

    @classmethod
    def on_outcomes(cls, cfg, results_uri: str, dirty: set[tuple[str, str]]) -> None:
        """New outcomes of these (run, config) pairs were recorded: rebuild their trajectory runs."""
        from llc_service.report.wandb_trajectory import rebuild_trajectories

        rebuild_trajectories(results_uri, cfg, dirty)

    def write(self, record: MeasurementRecord) -> None:
        try:
            self._write(record)
        except Exception as exc:  # noqa: BLE001 - a view failing must not fail the measurement
            log.warning("wandb logging of %s step %s failed (%s: %s); the Parquet result is unaffected",
                        record.summary.get("run_id"), record.summary.get("checkpoint_step"), type(exc).__name__, exc)

    def close(self) -> None:
        pass

    def config_for(self, summary: dict) -> dict:
        """Resolved settings (from ``config_json``) + identity + where the Parquet result lives."""
        try:
            config = json.loads(summary.get("config_json") or "{}")
        except (TypeError, ValueError):
            config = {"config_json": summary.get("config_json")}
        config.update({k: summary.get(k) for k in IDENTITY_KEYS})
        config = redact(config)  # whatever else the row carries: wandb configs are seen by the whole project
        if self.results_uri:
            from llc_service.sinks.store import DRAWS, SUMMARY, result_relpath

            root = str(self.results_uri).rstrip("/")
            config["results_uri"] = root
            config["results_summary_file"] = f"{root}/{result_relpath(SUMMARY, summary)}"
            config["results_draws_file"] = f"{root}/{result_relpath(DRAWS, summary)}"
        return config

    def _write(self, record: MeasurementRecord) -> None:
        import wandb

        s = record.summary
        run_id, step = str(s["run_id"]), s.get("checkpoint_step")
        component = s.get("component")
        wid = wandb_run_id(run_id, step, s.get("config_hash"), s.get("checkpoint_fingerprint"), s.get("checkpoint_uri"),
                           component, s.get("data_fingerprint"))
        settings = run_settings()
        # WANDB_DIR read now, not when wandb first set itself up in this process (it caches its settings)
        run_dir = self.dir or os.environ.get("WANDB_DIR")
        run = wandb.init(project=self.project, entity=self.entity, dir=run_dir, id=wid,
                         name=f"{run_id}-step{step if step is not None else 'none'}"
                         + (f"-{component}" if component else ""),
                         group=run_id, job_type="llc",
                         config=self.config_for(s), resume="allow", reinit="create_new", mode=self.mode,
                         tags=[str(s.get("status"))], settings=settings)
        self.last_run_id = run.id
        failed = s.get("status") == "failed"
        try:
            run.define_metric("draw")
            run.define_metric("*", step_metric="draw")
            if record.loss_trace is not None:
                self._log_draws(run, record)
            run.summary.update({k: _finite(s.get(k)) for k in SUMMARY_KEYS if s.get(k) is not None})
        finally:
            run.finish(exit_code=1 if failed else 0)

    def _log_draws(self, run, record: MeasurementRecord) -> None:
        import numpy as np

        loss = np.asarray(record.loss_trace, dtype=np.float64)
        running = None if record.running_llc is None else np.asarray(record.running_llc, dtype=np.float64)
        chains, draws = loss.shape
        used = record.summary.get("chains_used")
        used = list(range(chains)) if used is None else [int(c) for c in used]
        mean = None
        if running is not None and used:
            with np.errstate(all="ignore"):
                mean = running[used].mean(axis=0)
        stride = max(1, math.ceil(draws / MAX_LOGGED_DRAWS))
        for d in range(0, draws, stride):
            row: dict[str, float | int] = {"draw": d}
            for c in range(chains):
                row[f"loss/chain{c}"] = float(loss[c, d])
                if running is not None:
                    row[f"llc/chain{c}"] = float(running[c, d])
            if mean is not None:
                row["llc/mean"] = float(mean[d])
            run.log(row)
