"""The measurement recipe for one checkpoint: bucket → checkpoint → data → chains → λ̂ → sinks.

:func:`measure_checkpoint` decides how many processes measure the checkpoint: one runs
:func:`llc_service.worker.rank.run_measurement` here; several are launched with ``torchrun``
(:mod:`llc_service.worker.distributed`), each loading the checkpoint itself, and rank 0 writes the results once.
:func:`measure_unit` is the same for a :class:`~llc_service.worker.unit.MeasureUnit` (what the Ray layer and the
watcher run). Any failure becomes a summary row with a reason; one bad checkpoint never raises out of here.
"""

from __future__ import annotations

from typing import Any

from llc_service.config import MeasureConfig
from llc_service.errors import PermanentError, UsageError
from llc_service.worker.memory_plan import plan_shard_size
from llc_service.worker.rank import chains_for_rank, run_measurement
from llc_service.worker.record import write_failure
from llc_service.worker.unit import MeasureUnit

__all__ = ["chains_for_rank", "measure_checkpoint", "measure_unit"]


def measure_unit(unit: MeasureUnit, cfg: MeasureConfig) -> dict:
    """Measure ``unit`` and write its results; returns the summary row.

    With ``cfg.processes`` > 1 (or several GPUs) the chains are split over that many local processes launched with
    ``torchrun``; each loads the checkpoint itself and rank 0 writes the results once.
    """
    import dataclasses

    from llc_service.worker import distributed

    if unit.data_fingerprint is None:  # part of the result's identity, also for rows of measurements that fail early
        from llc_service.data import data_fingerprint

        try:
            unit = dataclasses.replace(unit, data_fingerprint=data_fingerprint(unit.data_uri, cfg))
        except Exception:  # noqa: BLE001 - the data loader raises the clear error in the measurement itself
            pass
    world = distributed.resolve_processes(cfg)
    explicit = cfg.shard_size if isinstance(cfg.shard_size, int) else 1
    if world // explicit > cfg.num_chains:  # a usage error, not an outcome of this checkpoint: nothing is written
        raise UsageError(f"processes={world} is more than num_chains={cfg.num_chains}: every process needs at "
                         f"least one chain (lower --processes or raise num_chains)" if explicit == 1 else
                         f"{world // explicit} shard groups ({world} processes / shard_size {explicit}) but "
                         f"num_chains={cfg.num_chains}: every group needs at least one chain")
    if explicit > 1:
        from llc_service.worker.sharded import check_supported

        check_supported(cfg, world)
    try:  # the memory plan, from headers alone: refuse what cannot fit before anything is loaded
        cfg = plan_shard_size(unit, cfg, world)
    except PermanentError as exc:
        return write_failure(unit, cfg, exc, world)
    if cfg.shard_size > 1 and explicit == 1:  # "auto" chose to shard: the same checks, now that k is known
        from llc_service.worker.sharded import check_supported

        check_supported(cfg, world)
    if world > 1:
        return distributed.launch(unit, cfg, world)
    return run_measurement(unit, cfg, rank=0, world=1)


def measure_checkpoint(checkpoint: Any, data_uri: str, results_uri: str, cfg: MeasureConfig,
                       run_id: str | None = None, attempt: int = 1, use_wandb: bool = True) -> dict:
    """Measure one checkpoint (a URI or a ``CheckpointRef``) and write its results; returns the summary row."""
    unit = MeasureUnit(checkpoint, str(data_uri), str(results_uri), run_id=run_id, attempt=attempt,
                       use_wandb=use_wandb)
    return measure_unit(unit, cfg)
