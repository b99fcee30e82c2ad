"""From what a measurement found to one summary row, and from the row to every sink (Parquet first).

:class:`CheckpointInfo` is what the processes learn about the checkpoint and the data while measuring;
:class:`Failure` is what went wrong, when something did. :func:`summary_row` turns them (and the
:class:`~llc_service.estimate.result.LLCResult`, when there is one) into the row of the summary table;
:func:`write_record` hands the row and the traces to the sinks the config names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from llc_service.config import MeasureConfig
from llc_service.errors import classify, describe
from llc_service.worker.unit import MeasureUnit

log = logging.getLogger(__name__)


@dataclass
class CheckpointInfo:
    """What the measuring processes found out; anything not reached before a failure stays None."""

    ref: dict | None = None
    """The checkpoint as measured (``CheckpointRef`` fields; the fingerprint of the files actually loaded)."""
    model_type: str | None = None
    num_params: int | None = None
    weight_norm: float | None = None
    weight_sketch: Any = None
    data_fingerprint: str | None = None
    num_rows: int | None = None
    device: str | None = None
    peak_memory_mb: float | None = None
    """Peak memory of the measuring process (max over ranks once gathered)."""


@dataclass
class Failure:
    """Why there is no estimate: ``error`` is ``"<type>: <message>"``, ``kind`` permanent/transient."""

    error: str
    kind: str
    error_type: str

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        return cls(describe(exc), classify(exc), type(exc).__name__)


def code_version() -> str:
    import subprocess
    from pathlib import Path

    from llc_service import __version__

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, timeout=5,
                             capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+g{sha}" if sha else __version__


def summary_row(unit: MeasureUnit, cfg: MeasureConfig, info: CheckpointInfo, result=None, status: str = "ok",
                failure: Failure | None = None, *, world: int = 1, started: datetime | None = None,
                seconds: float = 0.0) -> dict:
    """The summary-table row of one measurement (``result`` None: no estimate, see ``failure``)."""
    import numpy as np

    from llc_service.credentials import redact

    ref = info.ref or (unit.to_dict()["checkpoint"] if unit.ref else {})
    resolved = redact(cfg.to_dict()) | {"checkpoint_uri": unit.checkpoint_uri, "data_uri": unit.data_uri,
                                        "results_uri": unit.results_uri}
    row = {
        "run_id": unit.run_id or ref.get("run_id") or _default_run_id(unit.checkpoint_uri),
        "checkpoint_step": ref.get("step"),
        "checkpoint_uri": ref.get("uri", unit.checkpoint_uri),
        "checkpoint_fingerprint": ref.get("fingerprint") or _unknown_fingerprint(unit.checkpoint_uri),
        "config_hash": cfg.config_hash(),
        "status": status,
        "error": failure.error if failure else None,
        "error_kind": failure.kind if failure else None,
        "error_type": failure.error_type if failure else None,
        "attempt": unit.attempt,
        "sampler": cfg.sampler, "epsilon": cfg.epsilon, "nbeta": cfg.nbeta, "gamma": cfg.gamma,
        "num_chains": cfg.num_chains, "num_draws": cfg.num_draws, "num_burnin": cfg.num_burnin,
        "batch_size": cfg.batch_size, "seed": cfg.seed,
        "config_json": json.dumps(resolved, sort_keys=True, default=str),
        "data_uri": unit.data_uri,
        "data_fingerprint": info.data_fingerprint or unit.data_fingerprint,
        "model_type": info.model_type,
        "num_params": info.num_params,
        "weight_norm": info.weight_norm,
        "weight_sketch": None if info.weight_sketch is None else np.asarray(info.weight_sketch).tolist(),
        "device": info.device,
        "world_size": world,
        "shard_size": cfg.shard_size if isinstance(cfg.shard_size, int) else None,
        "peak_memory_mb": info.peak_memory_mb,
        "code_version": code_version(),
        "started_at": started or datetime.now(timezone.utc),
        "ended_at": datetime.now(timezone.utc),
        "wall_seconds": seconds,
    }
    if result is not None:
        row.update(
            llc_mean=result.llc_mean, llc_std=result.llc_std, init_loss=result.init_loss,
            llc_per_chain=[float(x) for x in result.llc_per_chain], chain_status=list(result.chain_status),
            chains_used=list(result.chains_used), num_chains_used=len(result.chains_used), wbic=result.wbic,
        )
        from llc_service.estimate.diagnostics import summary_fields

        row.update(summary_fields(result))
        if result.health:
            log.warning("%s step %s: %s", row["run_id"], row["checkpoint_step"], "; ".join(result.health))
    for key in ("llc_mean", "llc_std", "init_loss", "rhat", "ess_bulk", "mala_acceptance"):
        if row.get(key) is not None and not math.isfinite(row[key]):
            row[key] = None
    return row


def _unknown_fingerprint(uri: str) -> str:
    """Stands in for the fingerprint of a checkpoint that could not be listed: distinct per URI, so two failed
    rows of unreadable checkpoints never share a result file."""
    return "unknown-" + hashlib.sha256(str(uri).rstrip("/").encode()).hexdigest()[:12]


def _default_run_id(uri: str) -> str:
    parts = [p for p in uri.rstrip("/").split("/") if p]
    return parts[-2] if len(parts) >= 2 else "default"


def write_record(unit: MeasureUnit, cfg: MeasureConfig, row: dict, trace=None, running=None) -> None:
    """Every sink the config names, Parquet (the source of truth) first; see :func:`llc_service.sinks.write_all`."""
    from llc_service.sinks import MeasurementRecord, sinks_for, write_all

    record = MeasurementRecord(summary=row, loss_trace=trace if cfg.store_per_draw else None,
                               running_llc=running if cfg.store_per_draw else None)
    write_all(sinks_for(cfg, unit.results_uri, use_wandb=unit.use_wandb), record)


def write_failure(unit: MeasureUnit, cfg: MeasureConfig, exc: BaseException, world: int = 1) -> dict:
    """Record a failure that happened outside the measuring processes (bad request, crashed launcher, a unit the
    watcher gave up on)."""
    row = summary_row(unit, cfg, CheckpointInfo(), status="failed", failure=Failure.of(exc), world=world)
    if unit.ref is None:
        try:
            from llc_service.bucket import inspect_checkpoint

            ref = inspect_checkpoint(unit.checkpoint_uri, storage_options=cfg.storage_options,
                                     marker_file=cfg.marker_file)
            row.update(checkpoint_step=ref.step, checkpoint_fingerprint=ref.fingerprint,
                       run_id=unit.run_id or ref.run_id, checkpoint_uri=ref.uri)
        except Exception:  # noqa: BLE001 - the row names the URI; its fingerprint stays the per-URI stand-in
            pass
    write_record(unit, cfg, row)
    return row
