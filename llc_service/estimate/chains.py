"""Running chains: one after another (:meth:`Workspace.run_chain`), or side by side (:mod:`.batched`).

Every process that runs chains builds one working copy of the model (the caller's model is never touched),
binds its parameters to flat fp32 buffers and resets them to w* at the start of each chain: no per-chain copies.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from llc_service.config import SamplerConfig
from llc_service.estimate import batches, seeding
from llc_service.estimate.batched import BatchedChains, auto_batchable
from llc_service.estimate.loop import progress_bar, resolve_device, run_loop, total_steps
from llc_service.sampler import FlatParams, build_sampler


@dataclass
class ChainRun:
    """What the chains of one process produced (rank 0 gathers these across processes)."""

    chains: list[int]
    loss_trace: np.ndarray  # (len(chains), draws) float64
    diverged_at: list[int | None]
    init_loss: float
    num_params: int
    steps: int
    seconds: float
    baseline_trace: np.ndarray | None = None
    """(len(chains), draws) loss at w* on each draw's minibatch (``baseline: paired``), else None."""
    acceptance: list[float] | None = None
    """Mean MALA acceptance per chain (NaN where not tracked)."""


class Workspace:
    """One process's working copy of the model, bound to flat buffers, plus the collated data."""

    def __init__(self, model: torch.nn.Module, data: Any, cfg: SamplerConfig, loss_fn: Callable | None = None,
                 masks: dict | None = None):
        cfg.validate()
        n = batches.num_rows(data)
        if cfg.batch_size > n:
            raise ValueError(f"config field 'batch_size' ({cfg.batch_size}) is larger than the data ({n} rows)")
        self.cfg, self.n = cfg, n
        self.device = resolve_device(cfg.device)
        self.loss_fn = loss_fn or batches.causal_lm_loss
        self.model = copy.deepcopy(model).to(device=self.device, dtype=torch.float32)
        self.model.eval()  # no dropout: the posterior, not a regularised one, is sampled
        self.flat = FlatParams(self.model, cfg.param_filter, masks).bind()  # masks: sampler/masks.py
        self.collated = batches.materialize(data)
        self.init, self.update = build_sampler(cfg)
        self.extras: dict[int, tuple] = {}  # chain -> (paired baseline draws or None, MALA acceptance)
        from llc_service.estimate.paired import AnchorLoss
        from llc_service.sampler import mala

        self.anchor_loss = AnchorLoss(self) if cfg.baseline == "paired" else None
        self.mala = mala.MalaTracker(cfg, self.flat.sampled_w) if cfg.mala_acceptance and mala.supported(cfg) else None

    def autocast(self):
        if self.cfg.autocast_dtype and self.device.type == "cuda":
            dtype = torch.bfloat16 if self.cfg.autocast_dtype == "bf16" else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()

    def stream(self, chain: int, stream: int) -> batches.BatchStream:
        gen = seeding.generator(self.cfg.seed, chain, stream)
        return batches.BatchStream(self.collated, self.n, self.cfg.batch_size, gen, self.device)

    def init_loss(self) -> float:
        """Mean loss at w* over ``init_loss_batches`` minibatches, accumulated in float64."""
        self.flat.reset()
        stream = self.stream(0, seeding.INIT)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        with torch.no_grad(), self.autocast():
            for _ in range(self.cfg.init_loss_batches):
                total += self.loss_fn(self.model, next(stream)).double()
        value = float(total) / self.cfg.init_loss_batches
        if not np.isfinite(value):
            raise ValueError(f"the loss at w* is not finite ({value}): the model or the data is broken")
        return value

    def run_chain(self, chain: int, bar=None) -> tuple[np.ndarray, int | None]:
        """Run one chain from w*; returns its draw losses (NaN after divergence) and the divergence step."""
        flat = self.flat
        flat.reset()
        state = self.init(flat.sampled_w, flat.sampled_anchor)  # = w, w* without masks
        gen = seeding.generator(self.cfg.seed, chain, seeding.NOISE, self.device)
        data = self.stream(chain, seeding.DATA)
        model, loss_fn, update, grad = self.model, self.loss_fn, self.update, flat.grad
        moving, publish = flat.sampled_grad, flat.publish  # identity / no-op without masks

        hooks = _StepHooks(self, chain)  # paired baseline and MALA acceptance (nothing when both are off)
        counter = itertools.count()

        def step(active: list[int]) -> torch.Tensor:
            t = next(counter)
            batch = next(data)
            with self.autocast():
                loss = loss_fn(model, batch)
            loss.backward()
            g = moving()  # the gradient of the moving elements (all of them without masks)
            hooks.before_update(t, state, g, batch, loss)
            update(state, g, gen)
            hooks.after_update(state)
            publish()
            grad.zero_()
            return loss

        trace, diverged = run_loop(step, 1, self.cfg, self.device, bar)
        hooks.finish()
        return trace[0], diverged[0]

    def close(self) -> None:
        """Free the working copy and its buffers."""
        del self.model, self.flat, self.collated
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class _StepHooks:
    """What a chain records besides its draw losses (:mod:`.paired`, :mod:`llc_service.sampler.mala`): the loss at
    w* on the step's minibatch, and the MALA acceptance of each step. Does nothing when neither is on."""

    def __init__(self, ws: Workspace, chain: int):
        from llc_service.estimate.paired import is_draw_step

        cfg = ws.cfg
        self.ws, self.chain, self.mala, self.anchor_loss = ws, chain, ws.mala, ws.anchor_loss
        total = cfg.num_burnin + cfg.num_draws * cfg.num_steps_bw_draws
        # the steps that evaluate w*: every draw, and the post-burn-in steps at the ends of a tracked MALA transition
        self.paired = [t >= cfg.num_burnin and ((self.mala is not None and self.mala.involves(t))
                                                 or is_draw_step(t, cfg))
                       for t in range(total)] if self.anchor_loss is not None else None
        self.base = (torch.full((total,), float("nan"), dtype=torch.float64, device=ws.device)
                     if self.anchor_loss is not None else None)
        if self.mala is not None:
            self.mala.reset()

    def before_update(self, t: int, state, grad: torch.Tensor, batch, loss: torch.Tensor) -> None:
        base = None
        if self.paired is not None and self.paired[t]:
            base = self.anchor_loss(batch)
            self.base[t] = base
        if self.mala is not None:
            loss = loss.detach()
            self.mala.before_update(state, grad, loss - base if base is not None else loss)

    def after_update(self, state) -> None:
        if self.mala is not None:
            self.mala.after_update(state)

    def finish(self) -> None:
        from llc_service.estimate.loop import draws

        base = None if self.base is None else draws(self.base.cpu().numpy(), self.ws.cfg)
        self.ws.extras[self.chain] = (base, self.mala.mean() if self.mala is not None else math.nan)


def use_vmap(ws: Workspace, num_chains: int) -> bool:
    """``chain_batching``: "vmap" batches the chains of this process (two or more); "off" never; "auto" only where
    it was measured to win: tiny models of plain layers, many chains, CPU (see
    :func:`llc_service.estimate.batched.auto_batchable`)."""
    mode = ws.cfg.chain_batching
    if mode == "off" or num_chains < 2:
        return False
    if mode == "vmap":
        return True
    return auto_batchable(ws.model, ws.flat.numel, ws.device, num_chains)


def _run_batched(ws: Workspace, chains: list[int], bar):
    """The vmap path; under "auto", a loss function vmap cannot batch falls back to one chain at a time."""
    try:
        block, diverged = BatchedChains(ws).run(chains, bar)
    except Exception as e:  # noqa: BLE001 - only reached under "auto" (re-raised for "vmap")
        if ws.cfg.chain_batching == "vmap":
            raise
        import warnings

        warnings.warn(f"chain_batching='auto': vmap failed ({type(e).__name__}: {e}); running chains one by one",
                      RuntimeWarning, stacklevel=3)
        return None
    return list(block), diverged


def run_chains(model: torch.nn.Module, data: Any, cfg: SamplerConfig, chains: Sequence[int] | None = None,
               loss_fn: Callable | None = None, desc: str = "SGLD", masks: dict | None = None,
               init_loss: float | None = None) -> ChainRun:
    """Run ``chains`` (default: all) in this process. The init loss is computed here too: it is deterministic, so
    every process gets the same value without communicating. ``masks``: see :mod:`llc_service.sampler.masks`.
    ``init_loss``: L(w*) already computed for this model and data (it does not depend on masks): not recomputed."""
    import time

    chains = list(range(cfg.num_chains)) if chains is None else list(chains)
    t0 = time.perf_counter()
    ws = Workspace(model, data, cfg, loss_fn, masks)
    try:
        init_loss = ws.init_loss() if init_loss is None else float(init_loss)
        steps_per_chain = total_steps(cfg)
        traces, diverged = [], []
        with progress_bar(steps_per_chain * len(chains), cfg.progress, desc) as bar:
            batched = None
            if use_vmap(ws, len(chains)):
                bar.set_postfix_str(f"{len(chains)} chains (vmap)")
                batched = _run_batched(ws, chains, bar)
            if batched is not None:
                traces, diverged = batched
            else:
                bar.reset()
                for c in chains:
                    bar.set_postfix_str(f"chain {c}")
                    trace, d = ws.run_chain(c, bar)
                    traces.append(trace)
                    diverged.append(d)
        num_params = ws.flat.numel
        extras = [ws.extras.get(c, (None, math.nan)) for c in chains]
    finally:
        ws.close()
    loss_trace = np.stack(traces) if traces else np.zeros((0, cfg.num_draws))
    base = np.stack([e[0] for e in extras]) if extras and extras[0][0] is not None else None
    return ChainRun(chains=chains, loss_trace=loss_trace, diverged_at=diverged, init_loss=init_loss,
                    num_params=num_params, steps=steps_per_chain * len(chains), seconds=time.perf_counter() - t0,
                    baseline_trace=base, acceptance=[float(e[1]) for e in extras])
