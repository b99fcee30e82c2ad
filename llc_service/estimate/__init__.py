"""The LLC estimate: run SGLD chains around w* and turn their losses into λ̂ (see :mod:`.result`)."""

from __future__ import annotations

from typing import Any, Callable

from llc_service.config import SamplerConfig
from llc_service.estimate.chains import ChainRun, run_chains
from llc_service.estimate.result import AllChainsDivergedError, LLCResult, summarize

__all__ = ["estimate_llc", "LLCResult", "AllChainsDivergedError", "run_chains", "ChainRun", "summarize",
           "merge_runs", "result_from_runs"]


def merge_runs(runs: list[ChainRun]):
    """The chain runs of one or several processes as one ``(chains, draws)`` trace and the divergence steps, in
    chain order (the one merge of the package)."""
    import numpy as np

    order = sorted((c, i, j) for i, r in enumerate(runs) for j, c in enumerate(r.chains))
    trace = np.stack([runs[i].loss_trace[j] for _, i, j in order])
    return trace, [runs[i].diverged_at[j] for _, i, j in order]


def result_from_runs(runs: list[ChainRun], cfg: SamplerConfig, num_data: int | None = None) -> LLCResult:
    """Merge the chain runs of one or several processes (in chain order) into one result."""
    import numpy as np

    trace, diverged = merge_runs(runs)
    order = sorted((c, i, j) for i, r in enumerate(runs) for j, c in enumerate(r.chains))
    base = (np.stack([runs[i].baseline_trace[j] for _, i, j in order])
            if all(r.baseline_trace is not None for r in runs) else None)
    acc = [(runs[i].acceptance or [float("nan")] * len(runs[i].chains))[j] for _, i, j in order]
    res = summarize(trace, runs[0].init_loss, cfg.nbeta, runs[0].num_params, diverged, num_data,
                    baseline_trace=base, acceptance=acc)
    res.wall_seconds = max(r.seconds for r in runs)
    steps = sum(r.steps for r in runs)
    res.steps_per_second = steps / res.wall_seconds if res.wall_seconds else 0.0
    return res


def estimate_llc(model: Any, data: Any, cfg: SamplerConfig, loss_fn: Callable | None = None,
                 masks: dict | None = None) -> LLCResult:
    """Estimate the local learning coefficient of ``model`` at its current weights w*.

    ``data`` is a map-style torch ``Dataset`` (``TensorDataset`` too) or a HF ``datasets.Dataset``;
    ``loss_fn(model, batch) -> scalar mean loss`` (default: causal-LM next-token cross-entropy on
    ``batch["input_ids"]`` or the batch's first tensor). The model is left exactly as it was given.
    ``masks`` ({parameter name: bool tensor of its shape}, True = sampled) restricts the estimate to those elements:
    the others stay at w*, and ``num_params`` counts the sampled ones (:mod:`llc_service.sampler.masks`).
    Raises ``ValueError`` for an invalid config (before any work) and :class:`AllChainsDivergedError` if no chain
    stays finite.
    """
    run = run_chains(model, data, cfg, loss_fn=loss_fn, masks=masks)
    return result_from_runs([run], cfg, num_data=len(data))
