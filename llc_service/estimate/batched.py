"""Several chains through one batched forward and backward (``chain_batching="vmap"``).

For a small model one SGLD step is dominated by per-operator overhead, not arithmetic: a 1.4k-parameter MLP spends
~100 µs in forward+backward on a batch of 32, nearly all of it dispatch. Stacking the C chains' weights into one
(C, P) buffer, running every chain's forward at once with ``torch.func.vmap(functional_call(...))`` and one
backward pays that overhead once per step instead of C times. The batched step has a fixed cost of its own
(~0.35 ms for that MLP on 2 CPU threads, against 0.1 ms for one plain forward+backward), so it breaks even at
about 4 chains and wins ~1.7× at 8, only on tiny models (measurements below and in docs/benchmarks.md).

What stays exactly as in the sequential path (:meth:`Workspace.run_chain`):

- each chain's data order comes from its own ``seeding.generator(seed, chain, DATA)`` stream, and its noise
  from its own ``seeding.generator(seed, chain, NOISE)`` (one ``randn`` of P values per step, the same draws);
- the step is the sampler core's ``update`` applied to the chain's row of the buffer (RMSProp state, bounding box
  and weight decay included), so the chains share no state;
- the draw loss is the minibatch loss of the forward that produced the gradient.

What differs: a batched matmul rounds differently from a plain one, so trajectories are not bit-identical to the
sequential path's (they agree statistically; ``tests/estimate/test_batched.py``). A chain's result does not depend
on which other chains share its batch, bit for bit, for batches of two or more chains with the CPU kernels we test
(a BLAS that chose a different blocking for a different C would change the last bits). A single chain never takes
this path: it runs sequentially.

Not for transformers on CPU: SDPA has no batching rule and vmap falls back to a slow per-sample loop (measured
slower than sequential chains). ``chain_batching="auto"`` therefore only batches models made of plain layers
(see :func:`auto_batchable`), where it was measured to win.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from llc_service.config import SamplerConfig
from llc_service.estimate import batches, seeding
from llc_service.estimate.loop import run_loop

# plain layers whose vmap rules are batched kernels (no per-sample fallback); "auto" batches models built of these
_PLAIN = (torch.nn.Linear, torch.nn.Bilinear, torch.nn.Embedding, torch.nn.LayerNorm, torch.nn.Identity,
          torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict, torch.nn.Tanh, torch.nn.ReLU,
          torch.nn.GELU, torch.nn.SiLU, torch.nn.Sigmoid, torch.nn.Softplus, torch.nn.LeakyReLU, torch.nn.ELU,
          torch.nn.Flatten, torch.nn.Conv1d, torch.nn.Conv2d)

AUTO_MAX_PARAMS = 10_000
AUTO_MIN_CHAINS = 8
"""Where "auto" batches (CPU only). Measured on 2 CPU threads (docs/benchmarks.md), µs per chain-step, sequential →
vmap: 8 chains of a 1.4k-parameter MLP 126 → 76; 4.8k: 158 → 115; 18k: 210 → 185; 68k: 421 → 559 (a loss);
4 chains of the 1.4k MLP: 127 → 131 (no gain). Transformers: slower (SDPA has no batching rule)."""


def auto_batchable(model: torch.nn.Module, num_params: int, device: torch.device, num_chains: int) -> bool:
    """Whether ``chain_batching="auto"`` batches: CPU, many chains, a tiny model made only of plain layers (so the
    loss function has only the model to call; a bare ``nn.Module`` used as a parameter holder is not batched)."""
    if device.type != "cpu" or num_chains < AUTO_MIN_CHAINS or num_params > AUTO_MAX_PARAMS:
        return False
    return all(type(m) in _PLAIN for m in model.modules())


class ChainWorkspace(Protocol):
    """What :class:`BatchedChains` uses of a :class:`~llc_service.estimate.chains.Workspace` (typed here, not
    imported: chains.py imports this module)."""

    cfg: SamplerConfig
    device: torch.device
    model: torch.nn.Module
    loss_fn: Callable
    flat: Any  # llc_service.sampler.FlatParams, bound
    collated: Any
    init: Callable
    update: Callable

    def autocast(self) -> Any: ...

    def stream(self, chain: int, stream: int) -> batches.BatchStream: ...


class BatchedChains:
    """Run several chains of one workspace (a :class:`~llc_service.estimate.chains.Workspace`) side by side."""

    def __init__(self, ws: ChainWorkspace):
        from torch.func import functional_call, vmap

        self.ws = ws
        flat = ws.flat
        wrapper = batches.LossModule(ws.model, ws.loss_fn)
        layout, offset = [], 0
        for name, p in zip(flat.names, flat.params):
            layout.append(("model." + name, offset, p.numel(), p.shape))
            offset += p.numel()

        def chain_loss(w: torch.Tensor, batch: Any) -> torch.Tensor:
            params = {name: w[o:o + n].view(shape) for name, o, n, shape in layout}
            return functional_call(wrapper, params, (batch,))

        # vmap only the forward; plain autograd differentiates the batched ops (the chains are independent, so the
        # gradient of the summed losses is each chain's own gradient, row by row). Measured ~25 % cheaper per step
        # than vmap(grad(...)) on the 1.4k-parameter MLP.
        self._losses = vmap(chain_loss, in_dims=(0, 0))

    def gradients(self, w: torch.Tensor, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(C, P) gradients and (C,) losses of the chains' rows ``w`` (a leaf that requires grad) on their stacked
        minibatches."""
        with self.ws.autocast():
            loss = self._losses(self.ws.flat.full_rows(w), batch)  # masked: frozen elements filled in at w*
        loss.sum().backward()
        grads, w.grad = w.grad, None
        return grads, loss.detach()

    def run(self, chains: Sequence[int], bar=None) -> tuple[np.ndarray, list[int | None]]:
        """Run ``chains`` from w*; returns (len(chains), draws) draw losses (NaN after divergence) and the step at
        which each diverged (None if it did not)."""
        ws, cfg, flat = self.ws, self.ws.cfg, self.ws.flat
        chains = list(chains)
        num = len(chains)
        # (C, P): row i is chain i's moving weights (all of them, or the masked-in elements only)
        w = flat.sampled_anchor.unsqueeze(0).repeat(num, 1).requires_grad_(True)
        rows = w.detach()  # the same storage, for the in-place steps
        states = [ws.init(rows[i], flat.sampled_anchor) for i in range(num)]
        gens = [seeding.generator(cfg.seed, c, seeding.NOISE, ws.device) for c in chains]
        streams = [ws.stream(c, seeding.DATA) for c in chains]

        extra = _BatchedExtras(self, states, chains)  # paired baseline and MALA acceptance
        counter = itertools.count()

        def step(active: list[int]) -> torch.Tensor:
            t = next(counter)
            idx = torch.stack([s.indices() for s in streams])  # (C, B): each chain's own data order
            batch = batches.to_device(batches.take(ws.collated, idx), ws.device)
            grads, loss = self.gradients(w, batch)
            extra.at_step(t, batch, loss)
            for i in active:
                extra.before_update(i, grads[i], loss)
                ws.update(states[i], grads[i], gens[i])
                extra.after_update(i)
            return loss

        def retire(i: int) -> None:  # park a diverged chain's row at w*: no NaN arithmetic in the later steps
            rows[i].copy_(flat.sampled_anchor)

        out = run_loop(step, num, cfg, ws.device, bar, retire)
        extra.finish()
        return out

    def anchor_losses(self, batch: Any, num: int) -> torch.Tensor:
        """(C,) loss at w* on each chain's minibatch: the batched forward with w* broadcast (no copy, no grad)."""
        with torch.no_grad(), self.ws.autocast():
            return self._losses(self.ws.flat.anchor.expand(num, -1), batch).detach().float()


class _BatchedExtras:
    """The paired baseline and MALA acceptance of the batched chains (see ``chains._StepHooks``, the sequential
    twin): one MALA tracker (one saved row) per chain, one batched forward at w* per paired step."""

    def __init__(self, runner: BatchedChains, states: list, chains: list[int]):
        from llc_service.estimate.paired import is_draw_step
        from llc_service.sampler.mala import MalaTracker

        ws, cfg = runner.ws, runner.ws.cfg
        self.runner, self.ws, self.states, self.chains, self.cfg = runner, ws, states, chains, cfg
        self.total = cfg.num_burnin + cfg.num_draws * cfg.num_steps_bw_draws
        self.trackers = [MalaTracker(cfg, s.w) for s in states] if ws.mala is not None else None
        self.paired = [t >= cfg.num_burnin and ((self.trackers is not None and self.trackers[0].involves(t))
                                                 or is_draw_step(t, cfg))
                       for t in range(self.total)] if ws.anchor_loss is not None else None
        self.base = (torch.full((len(chains), self.total), float("nan"), dtype=torch.float64, device=ws.device)
                     if self.paired is not None else None)
        self.step_base = None

    def at_step(self, t: int, batch: Any, loss: torch.Tensor) -> None:
        self.step_base = None
        if self.paired is not None and self.paired[t]:
            self.step_base = self.runner.anchor_losses(batch, len(self.chains))
            self.base[:, t] = self.step_base

    def before_update(self, i: int, grad: torch.Tensor, loss: torch.Tensor) -> None:
        if self.trackers is not None:
            value = loss[i] - self.step_base[i] if self.step_base is not None else loss[i]
            self.trackers[i].before_update(self.states[i], grad, value)

    def after_update(self, i: int) -> None:
        if self.trackers is not None:
            self.trackers[i].after_update(self.states[i])

    def finish(self) -> None:
        cfg = self.cfg
        base = None if self.base is None else self.base.cpu().numpy()[:, cfg.num_burnin::cfg.num_steps_bw_draws][
            :, : cfg.num_draws]
        for i, c in enumerate(self.chains):
            acc = self.trackers[i].mean() if self.trackers is not None else math.nan
            self.ws.extras[c] = (None if base is None else base[i], acc)
