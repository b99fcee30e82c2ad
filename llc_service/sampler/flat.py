"""Bind a model's sampled parameters to views of one flat fp32 buffer (and their gradients to another).

After :meth:`FlatParams.bind`, ``flat.w`` *is* the model's weights: a step on it is seen by the next forward,
and autograd accumulates gradients straight into ``flat.grad``. The sampler then updates all parameters with a
few whole-vector kernels instead of a Python loop of small kernels per tensor.
"""

from __future__ import annotations

import re

import torch


class FlatParams:
    def __init__(self, model: torch.nn.Module, param_filter: str | None = None):
        pattern = re.compile(param_filter) if param_filter else None
        self.names: list[str] = []
        self.params: list[torch.nn.Parameter] = []
        frozen = 0
        for name, p in model.named_parameters():  # tied weights appear once
            if pattern is None or pattern.search(name):
                self.names.append(name)
                self.params.append(p)
            else:
                p.requires_grad_(False)
                frozen += 1
        if not self.params:
            raise ValueError(f"config field 'param_filter' {param_filter!r} matches no parameter of the model")
        self.num_frozen = frozen
        first = self.params[0]
        self.numel = sum(p.numel() for p in self.params)
        self.w = torch.empty(self.numel, dtype=torch.float32, device=first.device)
        self.grad = torch.zeros_like(self.w)
        offset = 0
        for p in self.params:
            n = p.numel()
            self.w[offset:offset + n].copy_(p.detach().reshape(-1))
            offset += n
        self.anchor = self.w.clone()

    def bind(self) -> "FlatParams":
        """Make every sampled parameter (and its .grad) a view into the flat buffers."""
        offset = 0
        for p in self.params:
            n = p.numel()
            p.data = self.w[offset:offset + n].view(p.shape)
            p.requires_grad_(True)
            p.grad = self.grad[offset:offset + n].view(p.shape)
            offset += n
        return self

    def reset(self) -> None:
        """Back to w* (the start of every chain)."""
        self.w.copy_(self.anchor)
        self.grad.zero_()
