"""The measurement recipe: bucket → checkpoint → data → chains → λ̂ → sinks, for one checkpoint.

Read top to bottom: :func:`measure_checkpoint` decides how many processes to use; :func:`run_measurement` is what
every process runs (load, take its share of the chains, gather on rank 0); rank 0 turns the traces into λ̂, builds
the summary row and writes Parquet first, wandb second. Any failure becomes a summary row with a reason: nothing
is silently missing, and one bad checkpoint never raises out of here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from llc_service.config import MeasureConfig
from llc_service.errors import CheckpointPending, UsageError, classify

log = logging.getLogger(__name__)


@dataclass
class MeasureRequest:
    """Everything a process needs to measure one checkpoint (JSON-serialisable, for child processes)."""

    checkpoint_uri: str
    data_uri: str
    results_uri: str
    config: dict
    run_id: str | None = None
    attempt: int = 1
    use_wandb: bool = True
    ref: dict | None = None
    extra_sinks: list = field(default_factory=list)

    def cfg(self) -> MeasureConfig:
        from llc_service.config import build_config

        return build_config(MeasureConfig, self.config)


def measure_checkpoint(checkpoint: Any, data_uri: str, results_uri: str, cfg: MeasureConfig, run_id: str | None = None,
                       attempt: int = 1, use_wandb: bool = True) -> dict:
    """Measure one checkpoint (a URI or a ``CheckpointRef``) and write its results; returns the summary row.

    With ``cfg.processes`` > 1 (or several GPUs) the chains are split over that many local processes launched with
    ``torchrun``; each loads the checkpoint itself and rank 0 writes the results once.
    """
    from llc_service.worker import distributed

    ref = dataclasses.asdict(checkpoint) if dataclasses.is_dataclass(checkpoint) else None
    uri = checkpoint.uri if ref else str(checkpoint)
    req = MeasureRequest(uri, data_uri, results_uri, cfg.to_dict(), run_id, attempt, use_wandb, ref)
    world = distributed.resolve_processes(cfg)
    if world > cfg.num_chains:  # a usage error, not an outcome of this checkpoint: nothing is written
        raise UsageError(f"processes={world} is more than num_chains={cfg.num_chains}: every process needs at "
                         f"least one chain (lower --processes or raise num_chains)")
    if world > 1:
        return distributed.launch(req, world)
    return run_measurement(req, rank=0, world=1)


def chains_for_rank(num_chains: int, rank: int, world: int) -> list[int]:
    """Contiguous, as even as possible: 5 chains on 2 processes → [0, 1, 2] and [3, 4]."""
    base, extra = divmod(num_chains, world)
    start = rank * base + min(rank, extra)
    return list(range(start, start + base + (1 if rank < extra else 0)))


def run_measurement(req: MeasureRequest, rank: int = 0, world: int = 1,
                    gather: Callable[[Any], list] | None = None, device: str | None = None) -> dict | None:
    """What every process runs. Returns the summary row on rank 0, None elsewhere."""
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    info: dict[str, Any] = {}
    try:
        payload = ("ok", _run_share(req, rank, world, device, info), info)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a recorded row
        log.debug("measurement failed on rank %d", rank, exc_info=True)
        payload = ("error", (type(exc).__name__, _message(exc), classify(exc)), info)
    payloads = gather(payload) if gather is not None else [payload]
    if rank != 0:
        return None
    return _finish(req, payloads, world, started, time.perf_counter() - t0)


def _message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 2000 else text[:2000] + " …"


def _run_share(req: MeasureRequest, rank: int, world: int, device: str | None, info: dict):
    """Load the checkpoint and the data in this process and run this rank's chains."""
    from llc_service.bucket import inspect_checkpoint
    from llc_service.bucket import CheckpointRef
    from llc_service.checkpoint import load_checkpoint
    from llc_service.data import load_token_data
    from llc_service.estimate import run_chains

    cfg = req.cfg()
    if device is not None:
        cfg.device = device
    ref = CheckpointRef(**req.ref) if req.ref else inspect_checkpoint(
        req.checkpoint_uri, storage_options=cfg.storage_options, marker_file=cfg.marker_file)
    info["ref"] = dataclasses.asdict(ref)
    if ref.status != "complete":
        raise CheckpointPending(f"checkpoint {ref.uri} is incomplete ({ref.reason}); it will be measured once complete")
    with load_checkpoint(ref, storage_options=cfg.storage_options, cache_dir=cfg.cache_dir,
                         cache_max_gb=cfg.cache_max_gb, tokenizer=cfg.tokenizer) as loaded:
        # the files actually loaded name the result (a checkpoint rewritten since listing is a new checkpoint)
        info["ref"]["fingerprint"] = loaded.fingerprint or ref.fingerprint
        info.update(model_type=loaded.model_type, num_params=loaded.num_params)
        if rank == 0:
            from llc_service.worker.weights import weight_stats

            info["weight_norm"], info["weight_sketch"] = weight_stats(loaded.model)
        vocab = getattr(loaded.model.config, "vocab_size", None)
        data = load_token_data(req.data_uri, tokenizer=loaded.tokenizer, vocab_size=vocab, seq_len=cfg.seq_len,
                               text_column=cfg.text_column, max_rows=cfg.max_rows,
                               storage_options=cfg.storage_options, cache_dir=cfg.cache_dir,
                               min_rows=cfg.batch_size)
        info.update(data_fingerprint=data.fingerprint, num_rows=data.num_rows)
        chains = chains_for_rank(cfg.num_chains, rank, world)
        run = run_chains(loaded.model, data.dataset, cfg, chains=chains,
                         desc=f"{ref.run_id} step {ref.step}" + (f" [rank {rank}]" if world > 1 else ""))
    from llc_service.estimate.chains import resolve_device

    info["device"] = resolve_device(cfg.device).type
    return run


def _finish(req: MeasureRequest, payloads: list, world: int, started: datetime, seconds: float) -> dict:
    """Rank 0: merge the chains, build the row and write every sink (Parquet first)."""
    from llc_service.estimate import result_from_runs

    cfg = req.cfg()
    info = payloads[0][2]
    errors = [p[1] for p in payloads if p[0] == "error"]
    result, status, error, kind, etype = None, "ok", None, None, None
    if errors:
        etype, message, kind = errors[0]
        status, error = "failed", f"{etype}: {message}"
    else:
        try:
            result = result_from_runs([p[1] for p in payloads], cfg, num_data=info.get("num_rows"))
        except Exception as exc:  # AllChainsDivergedError: a recorded outcome, not a crash
            status = "diverged" if type(exc).__name__ == "AllChainsDivergedError" else "failed"
            error, kind, etype = f"{type(exc).__name__}: {_message(exc)}", classify(exc), type(exc).__name__
            traces = [p[1] for p in payloads]
            info["_traces"] = traces
    row = summary_row(req, cfg, info, result, status, error, kind, world, started, seconds)
    row["error_type"] = etype
    trace = result.loss_trace if result is not None else None
    running = result.running_llc if result is not None else None
    if result is None and info.get("_traces"):
        import numpy as np

        runs = info["_traces"]
        order = sorted((c, i, j) for i, r in enumerate(runs) for j, c in enumerate(r.chains))
        trace = np.stack([runs[i].loss_trace[j] for _, i, j in order])
        running = np.full_like(trace, np.nan)
    write_record(req, cfg, row, trace, running, result)
    return row


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


def summary_row(req: MeasureRequest, cfg: MeasureConfig, info: dict, result, status: str, error: str | None,
                kind: str | None, world: int, started: datetime, seconds: float) -> dict:
    import numpy as np

    ref = info.get("ref") or req.ref or {}
    from llc_service.sinks.wandb import redact

    resolved = redact(cfg.to_dict()) | {"checkpoint_uri": req.checkpoint_uri, "data_uri": req.data_uri,
                                "results_uri": req.results_uri}
    row = {
        "run_id": req.run_id or ref.get("run_id") or _default_run_id(req.checkpoint_uri),
        "checkpoint_step": ref.get("step"),
        "checkpoint_uri": ref.get("uri", req.checkpoint_uri),
        "checkpoint_fingerprint": ref.get("fingerprint") or _unknown_fingerprint(req.checkpoint_uri),
        "config_hash": cfg.config_hash(),
        "status": status,
        "error": error,
        "error_kind": kind,
        "attempt": req.attempt,
        "sampler": cfg.sampler, "epsilon": cfg.epsilon, "nbeta": cfg.nbeta, "gamma": cfg.gamma,
        "num_chains": cfg.num_chains, "num_draws": cfg.num_draws, "num_burnin": cfg.num_burnin,
        "batch_size": cfg.batch_size, "seed": cfg.seed,
        "config_json": json.dumps(resolved, sort_keys=True, default=str),
        "data_uri": req.data_uri,
        "data_fingerprint": info.get("data_fingerprint"),
        "model_type": info.get("model_type"),
        "num_params": info.get("num_params"),
        "weight_norm": info.get("weight_norm"),
        "weight_sketch": None if info.get("weight_sketch") is None else np.asarray(info["weight_sketch"]).tolist(),
        "device": info.get("device"),
        "world_size": world,
        "code_version": code_version(),
        "started_at": started,
        "ended_at": datetime.now(timezone.utc),
        "wall_seconds": seconds,
    }
    if result is not None:
        row.update(
            llc_mean=result.llc_mean, llc_std=result.llc_std, init_loss=result.init_loss,
            llc_per_chain=[float(x) for x in result.llc_per_chain], chain_status=list(result.chain_status),
            chains_used=list(result.chains_used), num_chains_used=len(result.chains_used), wbic=result.wbic,
        )
        if result.health:
            log.warning("%s step %s: %s", row["run_id"], row["checkpoint_step"], "; ".join(result.health))
    for key in ("llc_mean", "llc_std", "init_loss"):
        if row.get(key) is not None and not math.isfinite(row[key]):
            row[key] = None
    return row


def _unknown_fingerprint(uri: str) -> str:
    """Stands in for the fingerprint of a checkpoint that could not be listed: distinct per URI, so two failed
    rows of unreadable checkpoints never share a result file."""
    import hashlib

    return "unknown-" + hashlib.sha256(str(uri).rstrip("/").encode()).hexdigest()[:12]


def _default_run_id(uri: str) -> str:
    parts = [p for p in uri.rstrip("/").split("/") if p]
    return parts[-2] if len(parts) >= 2 else "default"


def write_record(req: MeasureRequest, cfg: MeasureConfig, row: dict, trace, running, result) -> None:
    """Parquet (the source of truth) first; wandb and stdout are views and may fail without losing it."""
    from llc_service.sinks import MeasurementRecord, ParquetSink

    record = MeasurementRecord(summary=row, loss_trace=trace if cfg.store_per_draw else None,
                               running_llc=running if cfg.store_per_draw else None)
    sink = ParquetSink(req.results_uri, storage_options=cfg.storage_options)
    sink.write(record)
    sink.close()
    if req.use_wandb and cfg.wandb_project:
        try:
            from llc_service.sinks.wandb import WandbSink

            wb = WandbSink(cfg.wandb_project, entity=cfg.wandb_entity, results_uri=req.results_uri)
            wb.write(record)
            wb.close()
        except Exception as exc:  # noqa: BLE001 - the view must never cost the result
            log.warning("wandb logging failed (%s); the Parquet result is written", exc)


def write_failure(req: MeasureRequest, exc: BaseException, world: int = 1) -> dict:
    """Record a failure that happened outside the measuring processes (bad request, crashed launcher)."""
    now = datetime.now(timezone.utc)
    cfg = req.cfg()
    row = summary_row(req, cfg, {}, None, "failed", f"{type(exc).__name__}: {_message(exc)}", classify(exc), world,
                      now, 0.0)
    row["error_type"] = type(exc).__name__
    if req.ref is None:
        try:
            from llc_service.bucket import inspect_checkpoint

            ref = inspect_checkpoint(req.checkpoint_uri, storage_options=cfg.storage_options,
                                     marker_file=cfg.marker_file)
            row.update(checkpoint_step=ref.step, checkpoint_fingerprint=ref.fingerprint,
                       run_id=req.run_id or ref.run_id, checkpoint_uri=ref.uri)
        except Exception:  # noqa: BLE001
            pass
    write_record(req, cfg, row, None, None, None)
    return row
