"""One chain's SGLD with the model sharded over the k processes of a shard group (torch FSDP2).

Each process of the group holds 1/k of every parameter (``fully_shard`` per transformer block, then the root,
over the group's 1-D device mesh: the ``"shard"`` dimension of a ``("chain", "shard")`` mesh), takes 1/k of each
minibatch's rows, and FSDP2 averages the gradients over the group: the gradient of the whole minibatch's mean loss
(``batch_size`` must divide by k). The step is the sampler core of :mod:`llc_service.sampler` applied in place to
each parameter's local shard, and the noise is :class:`~llc_service.sampler.noise.NoiseSlices`: the values the
unsharded sampler draws, so a chain's draws do not depend on k (up to the order of float reductions).

w* is kept in bf16 or fp16 where that is lossless (a checkpoint saved in that dtype), fp32 otherwise.

Pitfalls this module avoids: DTensor's random ops are not used (noise is drawn here, per chain); a ``no_grad``
forward leaves the root's parameters unsharded, so every step reshards before updating; accelerate's FSDP plugin
does not shard on CPU, so ``fully_shard`` is called directly. The worker runs it through
:mod:`llc_service.worker.sharded` (``shard_size`` > 1).
"""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np
import torch

from llc_service.estimate import batches, seeding
from llc_service.sampler import build_sampler
from llc_service.sampler.noise import NoiseSlices
from llc_service.shards import flat_start


def blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated transformer blocks (each one FSDP unit): the children of the first ``ModuleList``."""
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0:
            return list(module)
    return []


def shard_model(model: torch.nn.Module, mesh, compute_dtype: torch.dtype | None = None) -> torch.nn.Module:
    """FSDP2 over ``mesh``: each transformer block, then the root. ``compute_dtype``: the dtype FSDP2 gathers every
    parameter in for compute (for frozen parameters kept in bf16/fp16 beside fp32 sampled ones); None: as stored."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    kw = {} if compute_dtype is None else {"mp_policy": MixedPrecisionPolicy(param_dtype=compute_dtype,
                                                                             reduce_dtype=compute_dtype)}
    for block in blocks(model):
        fully_shard(block, mesh=mesh, **kw)
    fully_shard(model, mesh=mesh, **kw)
    return model


def reshard(model: torch.nn.Module) -> None:
    for module in model.modules():
        if hasattr(module, "reshard") and type(module).__name__.startswith("FSDP"):
            module.reshard()


class ShardedChains:
    """Run chains one after another on a model already sharded over ``mesh`` (a 1-D shard mesh)."""

    def __init__(self, model: torch.nn.Module, data: Any, cfg, mesh, loss_fn: Callable | None = None,
                 masks: dict | None = None):
        from torch.distributed.tensor import DTensor

        from llc_service.sampler.masks import normalize_masks

        self.cfg, self.mesh, self.model = cfg, mesh, model
        self.k, self.rank = mesh.size(), mesh.get_local_rank()
        if cfg.batch_size % self.k:
            raise ValueError(f"batch_size={cfg.batch_size} must divide by shard_size={self.k}")
        self.loss_fn = loss_fn or batches.causal_lm_loss
        self.collated, self.n = batches.materialize(data), batches.num_rows(data)
        pattern = re.compile(cfg.param_filter) if cfg.param_filter else None
        masks = normalize_masks(model, masks) if masks is not None else None
        # per sampled parameter: its local shard, the positions of its moving elements in the shard (None: all), the
        # vector the sampler updates (the shard itself, or a compact copy of the moving elements), and where that
        # vector's noise sits in the chain's noise vector over all moving elements (the unsharded sampler's order:
        # parameters in order, then row-major; with masks, only the masked-in elements)
        self.locals, self.index, self.moving, self.ranges, self.params = [], [], [], [], []
        offset = 0
        for name, p in model.named_parameters():
            sampled = (pattern is None or pattern.search(name)) and (masks is None or name in masks)
            if masks is not None and name in masks and pattern is not None and not pattern.search(name):
                raise ValueError(f"masks: {name!r} is excluded by param_filter {cfg.param_filter!r}")
            p.requires_grad_(bool(sampled))
            if not sampled:
                continue
            with torch.no_grad():  # the shard's own storage, outside autograd (the step writes into it in place)
                local = (p.to_local() if isinstance(p, DTensor) else p).detach()
            start = flat_start(p)
            if masks is None:
                idx, lo, count, size = None, offset + start, local.numel(), p.numel()
            else:
                flat = masks[name].reshape(-1)
                idx = flat[start:start + local.numel()].nonzero().squeeze(1)
                lo, count, size = offset + int(flat[:start].sum()), idx.numel(), int(flat.sum())
            self.params.append(p)
            self.locals.append(local)
            self.index.append(idx)
            self.ranges.append((lo, lo + count))
            offset += size
        self.total = offset
        """Elements sampled (all ranks together): ``num_params`` of the estimate."""
        self.anchors = [_lean_copy(t) if i is None else t.reshape(-1).index_select(0, i)
                        for t, i in zip(self.locals, self.index)]
        self.moving = [t if i is None else a.clone() for t, i, a in zip(self.locals, self.index, self.anchors)]
        self.init, self.update = build_sampler(cfg)

    def _reset(self) -> None:
        """Every sampled element back at w*."""
        with torch.no_grad():
            for t, i, m, a in zip(self.locals, self.index, self.moving, self.anchors):
                m.copy_(a)
                if i is not None:
                    t.view(-1).index_copy_(0, i, m)

    def _loss(self, batch) -> torch.Tensor:
        rows = self.cfg.batch_size // self.k
        mine = batches.take(batch, torch.arange(self.rank * rows, (self.rank + 1) * rows))
        return self.loss_fn(self.model, mine)

    def _all_reduce_mean(self, loss: torch.Tensor) -> torch.Tensor:
        """The whole minibatch's mean loss (float64) from each rank's mean over its rows (equal row lengths)."""
        import torch.distributed as dist

        value = loss.detach().double().clone()
        dist.all_reduce(value, group=self.mesh.get_group())
        return value / self.k

    def init_loss(self) -> float:
        """L(w*): the mean loss over ``init_loss_batches`` minibatches of the INIT stream, as the unsharded
        :meth:`~llc_service.estimate.chains.Workspace.init_loss` computes it (the same batches)."""
        stream = batches.BatchStream(self.collated, self.n, self.cfg.batch_size,
                                     seeding.generator(self.cfg.seed, 0, seeding.INIT))
        total = 0.0
        with torch.no_grad():
            for _ in range(self.cfg.init_loss_batches):
                total += float(self._all_reduce_mean(self._loss(next(stream))))
        reshard(self.model)  # a no_grad forward leaves the root unsharded
        value = total / self.cfg.init_loss_batches
        if not np.isfinite(value):
            raise ValueError(f"the loss at w* is not finite ({value}): the model or the data is broken")
        return value

    def run_chain(self, chain: int, bar=None) -> tuple[np.ndarray, int | None]:
        """Run one chain from w*: its draw losses of the whole minibatch (the same on every rank of the group; NaN
        after a divergence) and the divergence step, through the shared loop (:func:`~.loop.run_loop`)."""
        from llc_service.estimate.loop import run_loop

        cfg = self.cfg
        self._reset()
        states = [self.init(m.view(-1), a.view(-1)) for m, a in zip(self.moving, self.anchors)]
        noise = NoiseSlices(seeding.generator(cfg.seed, chain, seeding.NOISE), self.total)
        data = batches.BatchStream(self.collated, self.n, cfg.batch_size,
                                   seeding.generator(cfg.seed, chain, seeding.DATA))

        def step(active: list[int]) -> torch.Tensor:
            loss = self._loss(next(data))
            loss.backward()
            value = self._all_reduce_mean(loss)
            reshard(self.model)
            with torch.no_grad():
                noise.begin()
                for p, state, (lo, hi), t, i in zip(self.params, states, self.ranges, self.locals, self.index):
                    grad = (p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad).reshape(-1)
                    noise.select(lo, hi)
                    self.update(state, grad if i is None else grad.index_select(0, i), noise)
                    if i is not None:
                        t.view(-1).index_copy_(0, i, state.w)
                    p.grad = None
                noise.end()
            return value

        trace, diverged = run_loop(step, 1, cfg, torch.device("cpu"), bar)
        return trace[0], diverged[0]

    def restore(self) -> None:
        """Put w* back into the model (after the last chain)."""
        self._reset()


def run_sharded_chains(model: torch.nn.Module, data: Any, cfg, mesh, chains: list[int], desc: str = "SGLD",
                       report: bool = True, loss_fn: Callable | None = None, masks: dict | None = None,
                       init_loss: float | None = None):
    """Run ``chains`` one after another on ``model`` sharded over ``mesh`` (this process's shard group); returns the
    :class:`~llc_service.estimate.chains.ChainRun` of the group when ``report`` (its first rank), else an empty one
    (the other ranks of the group computed the same chains). ``masks``: element masks (refined LLC, see
    :mod:`llc_service.sampler.masks`); ``init_loss``: L(w*) already computed for this model and data."""
    import time

    from llc_service.estimate.chains import ChainRun
    from llc_service.estimate.loop import progress_bar, total_steps

    t0 = time.perf_counter()
    sc = ShardedChains(model, data, cfg, mesh, loss_fn, masks)
    init_loss = sc.init_loss() if init_loss is None else float(init_loss)
    traces, diverged = [], []
    with progress_bar(total_steps(cfg) * len(chains), cfg.progress if report else False, desc) as bar:
        for c in chains:
            bar.set_postfix_str(f"chain {c} (sharded over {sc.k})")
            trace, d = sc.run_chain(c, bar)
            traces.append(trace)
            diverged.append(d)
    sc.restore()
    if not report:
        chains, traces, diverged = [], [], []
    loss_trace = np.stack(traces) if traces else np.zeros((0, cfg.num_draws))
    return ChainRun(chains=list(chains), loss_trace=loss_trace, diverged_at=diverged, init_loss=init_loss,
                    num_params=sc.total, steps=total_steps(cfg) * len(chains), seconds=time.perf_counter() - t0,
                    acceptance=[float("nan")] * len(chains))


def _lean_copy(t: torch.Tensor) -> torch.Tensor:
    """w* for one local shard, in bf16 or fp16 when that holds its values exactly (a bf16/fp16 checkpoint: w* *is*
    those values; 2 bytes per element instead of 4), else an fp32 copy. The sampler promotes it in ``w − w*``."""
    for dtype in (torch.bfloat16, torch.float16):
        if t.dtype == torch.float32 and t.numel():
            half = t.detach().to(dtype)
            if torch.equal(half.float(), t):
                return half
    return t.detach().clone()
