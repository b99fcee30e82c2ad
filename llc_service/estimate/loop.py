"""The chain loop shared by both ways of running chains: one chain at a time (:meth:`.chains.Workspace.run_chain`)
and several side by side (:meth:`.batched.BatchedChains.run`).

Both differ only in how one SGLD step of their chains is taken; :func:`run_loop` owns everything around the step:
the number of steps, the loss trace and its divergence check, the progress bar, and the draws kept from the trace.
"""

from __future__ import annotations

import math
import sys
from typing import Callable

import numpy as np
import torch

from llc_service.config import SamplerConfig

CHECK_EVERY = 32
"""On a GPU, losses stay on the device and are checked for finiteness every this many steps (a check is a host
sync); a divergence is therefore noticed up to CHECK_EVERY - 1 steps late: the steps in between are taken and their
losses discarded."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def total_steps(cfg: SamplerConfig) -> int:
    """SGLD steps of one chain: the burn-in, then ``num_steps_bw_draws`` per draw."""
    return cfg.num_burnin + cfg.num_draws * cfg.num_steps_bw_draws


def draws(losses: np.ndarray, cfg: SamplerConfig) -> np.ndarray:
    """The draws kept from per-step losses (the last axis): after the burn-in, every ``num_steps_bw_draws``-th."""
    return losses[..., cfg.num_burnin::cfg.num_steps_bw_draws][..., : cfg.num_draws]


class LossTrace:
    """The (chains, steps) float64 loss trace of a chain loop, with its divergence check.

    On CPU each step's losses are read as Python floats (no sync to avoid) and checked at once; on a GPU they are
    kept in a (chains, CHECK_EVERY) device buffer and copied to the host trace, and checked, when it is full. A
    chain's losses from its first non-finite one on stay NaN.
    """

    def __init__(self, num_chains: int, total: int, device: torch.device):
        self.total = total
        self.losses = np.full((num_chains, total), np.nan)
        self.diverged_at: list[int | None] = [None] * num_chains
        self.on_host = device.type == "cpu"
        if not self.on_host:
            self.pending = torch.full((num_chains, CHECK_EVERY), float("nan"), dtype=torch.float64, device=device)

    def record(self, t: int, loss: torch.Tensor, active: list[int]) -> list[int]:
        """Record step ``t``'s (chains,) losses (0-d for one chain) of the ``active`` chains; returns the chains
        found diverged now."""
        if self.on_host:
            values = loss.tolist()  # fp32 losses, exactly, as Python floats
            if not isinstance(values, list):  # one chain's 0-d loss
                values = [values]
            found = []
            for i in active:
                if math.isfinite(values[i]):
                    self.losses[i, t] = values[i]
                else:
                    self.diverged_at[i] = t
                    found.append(i)
            return found
        self.pending[:, t % CHECK_EVERY] = loss.detach()
        if (t + 1) % CHECK_EVERY and t + 1 != self.total:
            return []
        lo = t - (t % CHECK_EVERY)
        block = self.pending[:, : t - lo + 1].cpu().numpy()
        found = []
        for i in active:
            bad = np.flatnonzero(~np.isfinite(block[i]))
            if bad.size:
                self.losses[i, lo:lo + bad[0]] = block[i, : bad[0]]
                self.diverged_at[i] = lo + int(bad[0])
                found.append(i)
            else:
                self.losses[i, lo:t + 1] = block[i]
        return found


def run_loop(step: Callable[[list[int]], torch.Tensor], num_chains: int, cfg: SamplerConfig,
             device: torch.device, bar=None, retire: Callable[[int], None] | None = None,
             ) -> tuple[np.ndarray, list[int | None]]:
    """Run ``num_chains`` chains for :func:`total_steps` steps; returns their (num_chains, draws) draw losses (NaN
    after a divergence) and the step at which each diverged (None if it did not).

    ``step(active)`` takes one SGLD step of the ``active`` chains (indices into ``range(num_chains)``) and returns
    the (num_chains,) minibatch losses (0-d for one chain) of the forward that produced the gradient; rows of
    inactive chains are ignored. A diverged chain leaves ``active`` and ``retire(i)`` is called for it; the loop
    ends early when no chain is left.
    """
    total = total_steps(cfg)
    trace = LossTrace(num_chains, total, device)
    ticker = _Ticker(bar, per_tick=num_chains)
    active = list(range(num_chains))
    for t in range(total):
        loss = step(active)
        for i in trace.record(t, loss, active):
            active.remove(i)
            if retire is not None:
                retire(i)
        ticker.tick()
        if not active:
            break
    ticker.finish(total * num_chains)
    return draws(trace.losses, cfg), trace.diverged_at


class _Ticker:
    """Advances a progress bar every ``every`` steps instead of every step (a tqdm update costs microseconds)."""

    def __init__(self, bar, every: int = 16, per_tick: int = 1):
        self.bar, self.every, self.per_tick, self.pending, self.done = bar, every, per_tick, 0, 0

    def tick(self) -> None:
        if self.bar is not None:
            self.pending += self.per_tick
            if self.pending >= self.every:
                self.bar.update(self.pending)
                self.done += self.pending
                self.pending = 0

    def finish(self, total: int) -> None:
        """Account for every step of the chain, run or skipped after a divergence."""
        if self.bar is not None and total > self.done:
            self.bar.update(total - self.done)
            self.done = total


def progress_bar(total: int, enabled: bool | None, desc: str = "SGLD", position: int = 0):
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="step", disable=not enabled, position=position, leave=False,
                dynamic_ncols=True)
