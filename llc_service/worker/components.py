"""Refined LLC in the worker: every component of ``cfg.components`` measured back to back on one loaded checkpoint.

Each process resolves the components on its loaded model (deterministic: same names and masks on every rank), runs
its share of the chains for each component in turn, and computes L(w*) once (it does not depend on the mask: every
component's λ̂ is measured against the same loss at w*). Rank 0 merges each component's chains into one summary row
(``component``, ``component_params`` = elements sampled, ``component_seconds`` = sampling time of that component,
slowest rank) and writes all rows of the measurement into its one summary file and one draws file (then the views,
row by row: one wandb run per component).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass
class ComponentRun:
    name: str
    run: Any
    """This process's ChainRun for the component."""
    seconds: float


def run_components(model, dataset, cfg, chains: list[int], desc: str) -> list[ComponentRun]:
    from llc_service.components import resolve_components
    from llc_service.estimate import run_chains

    out = []
    init_loss = None
    for comp in resolve_components(model, cfg.components):
        t0 = time.perf_counter()
        run = run_chains(model, dataset, cfg, chains=chains, desc=f"{desc} {comp.name}", masks=comp.masks,
                         init_loss=init_loss)
        init_loss = run.init_loss
        out.append(ComponentRun(comp.name, run, time.perf_counter() - t0))
    return out


def finish_components(unit, cfg, results: list, world: int, started, seconds: float) -> dict:
    """Rank 0: one row per component, all written together; returns the first row with ``component_rows`` added."""
    import numpy as np

    from llc_service.estimate import AllChainsDivergedError, merge_runs, result_from_runs
    from llc_service.sinks import MeasurementRecord, sinks_for, write_all
    from llc_service.worker.record import Failure, summary_row

    info = results[0].info
    per_rank = [r.run for r in results]
    records = []
    for i, first in enumerate(per_rank[0]):
        runs = [ranks[i].run for ranks in per_rank]
        result, status, failure = None, "ok", None
        try:
            result = result_from_runs(runs, cfg, num_data=info.num_rows)
            trace, running = result.loss_trace, result.running_llc
        except Exception as exc:  # noqa: BLE001 - AllChainsDivergedError: a recorded outcome of this component
            status = "diverged" if isinstance(exc, AllChainsDivergedError) else "failed"
            failure = Failure.of(exc)
            trace, _ = merge_runs(runs)
            running = np.full_like(trace, np.nan)
        row = summary_row(unit, cfg, info, result, status, failure, world=world, started=started, seconds=seconds)
        row.update(component=first.name, component_params=int(runs[0].num_params),
                   component_seconds=max(ranks[i].seconds for ranks in per_rank))
        keep = cfg.store_per_draw
        records.append(MeasurementRecord(summary=row, loss_trace=trace if keep else None,
                                         running_llc=running if keep else None))
    write_all(sinks_for(cfg, unit.results_uri, use_wandb=unit.use_wandb), records)
    rows = [r.summary for r in records]
    return {**rows[0], "component_rows": rows}
