"""What every measuring process runs: load, take its share of the chains, gather on rank 0, record.

Read top to bottom: :func:`run_measurement` runs this rank's share (:func:`_run_share`) into a typed
:class:`RankResult`; rank 0 gathers every rank's, merges the chains (one merge:
:func:`llc_service.estimate.result_from_runs`), builds the summary row and writes every sink (Parquet first).
Any failure becomes a summary row with a reason: nothing is silently missing.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from llc_service.config import MeasureConfig
from llc_service.errors import CheckpointPending
from llc_service.worker.assign import chains_for_rank
from llc_service.worker.memory_plan import peak_memory_mb
from llc_service.worker.record import CheckpointInfo, Failure, summary_row, write_record
from llc_service.worker.unit import MeasureUnit

log = logging.getLogger(__name__)
__all__ = ["RankResult", "chains_for_rank", "run_measurement"]


@dataclass
class RankResult:
    """One process's share: its chains' run, or why it failed, and what it learned about the checkpoint."""

    run: Any = None
    """The :class:`~llc_service.estimate.chains.ChainRun` of this rank's chains (None on failure)."""
    failure: Failure | None = None
    info: CheckpointInfo = field(default_factory=CheckpointInfo)


def run_measurement(unit: MeasureUnit, cfg: MeasureConfig, rank: int = 0, world: int = 1,
                    gather: Callable[[RankResult], list[RankResult]] | None = None,
                    device: str | None = None) -> dict | None:
    """What every process runs. Returns the summary row on rank 0, None elsewhere."""
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    mine = RankResult()
    try:
        mine.run = _run_share(unit, cfg, rank, world, device, mine.info)
    except Exception as exc:  # every failure becomes a recorded row
        log.debug("measurement failed on rank %d", rank, exc_info=True)
        mine.failure = Failure.of(exc)
    mine.info.peak_memory_mb = peak_memory_mb(device or mine.info.device)
    results = gather(mine) if gather is not None else [mine]
    if rank != 0:
        return None
    return _finish(unit, cfg, results, world, started, time.perf_counter() - t0)


def _run_share(unit: MeasureUnit, cfg: MeasureConfig, rank: int, world: int, device: str | None,
               info: CheckpointInfo):
    """Load the checkpoint and the data in this process and run this rank's chains."""
    from llc_service.bucket import inspect_checkpoint
    from llc_service.checkpoint import load_checkpoint
    from llc_service.data import load_token_data
    from llc_service.estimate import run_chains
    from llc_service.estimate.chains import resolve_device
    from llc_service.worker.weights import weight_stats

    if isinstance(cfg.shard_size, int) and cfg.shard_size > 1:  # one model copy over several processes
        from llc_service.worker.sharded import run_sharded_share

        return run_sharded_share(unit, cfg, rank, world, device, info)
    if device is not None:
        cfg = dataclasses.replace(cfg, device=device)
    ref = unit.ref or inspect_checkpoint(unit.checkpoint_uri, storage_options=cfg.storage_options,
                                         marker_file=cfg.marker_file)
    info.ref = dataclasses.asdict(ref)
    if ref.status != "complete":
        raise CheckpointPending(f"checkpoint {ref.uri} is incomplete ({ref.reason}); it will be measured once "
                                f"complete")
    with load_checkpoint(ref, storage_options=cfg.storage_options, cache_dir=cfg.cache_dir,
                         cache_max_gb=cfg.cache_max_gb, tokenizer=cfg.tokenizer) as loaded:
        # the files actually loaded name the result (a checkpoint rewritten since listing is a new checkpoint)
        info.ref["fingerprint"] = loaded.fingerprint or ref.fingerprint
        info.model_type, info.num_params = loaded.model_type, loaded.num_params
        if rank == 0:
            info.weight_norm, info.weight_sketch = weight_stats(loaded.model)
        vocab = getattr(loaded.model.config, "vocab_size", None)
        data = load_token_data(unit.data_uri, tokenizer=loaded.tokenizer, vocab_size=vocab, seq_len=cfg.seq_len,
                               text_column=cfg.text_column, max_rows=cfg.max_rows,
                               storage_options=cfg.storage_options, cache_dir=cfg.cache_dir,
                               min_rows=cfg.batch_size)
        info.data_fingerprint, info.num_rows = data.fingerprint, data.num_rows
        chains = chains_for_rank(cfg.num_chains, rank, world)
        desc = f"{ref.run_id} step {ref.step}" + (f" [rank {rank}]" if world > 1 else "")
        if cfg.components:  # refined LLC: one run per component on this loaded model (worker/components.py)
            from llc_service.worker.components import run_components

            run = run_components(loaded.model, data.dataset, cfg, chains, desc)
        else:
            run = run_chains(loaded.model, data.dataset, cfg, chains=chains, desc=desc)
    info.device = resolve_device(cfg.device).type
    return run


def _finish(unit: MeasureUnit, cfg: MeasureConfig, results: list[RankResult], world: int, started: datetime,
            seconds: float) -> dict:
    """Rank 0: merge the chains, build the row and write every sink (Parquet first)."""
    import numpy as np

    from llc_service.estimate import AllChainsDivergedError, merge_runs, result_from_runs

    info = results[0].info
    peaks = [r.info.peak_memory_mb for r in results if r.info.peak_memory_mb is not None]
    info.peak_memory_mb = max(peaks) if peaks else None
    # the cause first: a process of a shard group that only saw another one fail says so (worker/sharded.py)
    failures = sorted((r.failure for r in results if r.failure is not None),
                      key=lambda f: f.error_type == "PeerFailed")
    if not failures and cfg.components:
        from llc_service.worker.components import finish_components

        return finish_components(unit, cfg, results, world, started, seconds)
    result, status, failure, trace, running = None, "ok", None, None, None
    if failures:
        status, failure = "failed", failures[0]
    else:
        runs = [r.run for r in results]
        try:
            result = result_from_runs(runs, cfg, num_data=info.num_rows)
            trace, running = result.loss_trace, result.running_llc
        except Exception as exc:  # noqa: BLE001 - AllChainsDivergedError: a recorded outcome (its traces too), not a crash
            status = "diverged" if isinstance(exc, AllChainsDivergedError) else "failed"
            failure = Failure.of(exc)
            trace, _ = merge_runs(runs)
            running = np.full_like(trace, np.nan)
    row = summary_row(unit, cfg, info, result, status, failure, world=world, started=started, seconds=seconds)
    write_record(unit, cfg, row, trace, running)
    return row
