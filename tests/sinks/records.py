"""Realistic MeasurementRecords for the sink tests."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np

from llc_service.sinks import MeasurementRecord


def ok_record(run_id="run-a", step=100, fingerprint="fp0123456789abcd", config_hash="cfg000000001", chains=3,
              draws=5, attempt=1, seed=0, data_fingerprint="d" * 16) -> MeasurementRecord:
    rng = np.random.default_rng(seed)
    loss = 2.0 + rng.random((chains, draws))
    loss[-1, 3:] = np.nan  # the last chain diverged at draw 3
    running = rng.random((chains, draws)) * 10
    started = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    summary = {
        "run_id": run_id, "checkpoint_step": step, "checkpoint_uri": f"s3://ckpts/{run_id}/step{step}",
        "checkpoint_fingerprint": fingerprint, "config_hash": config_hash, "status": "ok", "error": None,
        "error_kind": None, "attempt": attempt, "llc_mean": 12.5, "llc_std": 0.75, "init_loss": 2.25,
        "llc_per_chain": [12.0, 13.0, float("nan")], "chain_status": ["ok", "ok", "diverged"], "chains_used": [0, 1],
        "num_chains_used": 2, "wbic": None, "sampler": "sgld", "epsilon": 1e-4, "nbeta": 30.0, "gamma": 100.0,
        "num_chains": chains, "num_draws": draws, "num_burnin": 0, "batch_size": 8, "seed": seed,
        "config_json": json.dumps({"epsilon": 1e-4, "nbeta": 30.0, "num_chains": chains}),
        "data_uri": "/data/val.parquet", "data_fingerprint": data_fingerprint, "model_type": "gpt_neox",
        "num_params": 166_000, "weight_norm": 41.5, "weight_sketch": np.linspace(0, 1, 1024, dtype=np.float32),
        "device": "cpu", "world_size": 1, "code_version": "0.1.0+gabc", "started_at": started,
        "ended_at": started + timedelta(seconds=3), "wall_seconds": 3.0,
    }
    return MeasurementRecord(summary, loss, running)


def failed_record(run_id="run-a", step=200, **kw) -> MeasurementRecord:
    rec = ok_record(run_id, step, **kw)
    s = {k: rec.summary[k] for k in ("run_id", "checkpoint_step", "checkpoint_uri", "checkpoint_fingerprint",
                                     "config_hash", "attempt", "config_json", "data_uri", "data_fingerprint",
                                     "started_at", "ended_at")}
    s.update(status="failed", error="CheckpointError: model.safetensors is missing", error_kind="permanent",
             wall_seconds=0.5)
    return MeasurementRecord(s, None, None)
