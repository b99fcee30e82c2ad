"""Bind a model's sampled parameters to views of one flat fp32 buffer (and their gradients to another).

After :meth:`FlatParams.bind`, ``flat.w`` *is* the model's weights: a step on it is seen by the next forward,
and autograd accumulates gradients straight into ``flat.grad``. The sampler then updates all parameters with a
few whole-vector kernels instead of a Python loop of small kernels per tensor.

With element ``masks`` (see :mod:`.masks`) the sampler works on ``sampled_w``, a compact vector of the k moving
elements: :meth:`sampled_grad` gathers their gradient before a step and :meth:`publish` scatters the new values into
the model's weights after it. Without masks ``sampled_w`` *is* ``w`` and both are no-ops.
"""

from __future__ import annotations

import re
from typing import Mapping

import torch


class FlatParams:
    def __init__(self, model: torch.nn.Module, param_filter: str | None = None,
                 masks: Mapping[str, object] | None = None):
        from llc_service.sampler import masks as M

        pattern = re.compile(param_filter) if param_filter else None
        checked = M.normalize_masks(model, masks) if masks is not None else None
        matched: set[str] = set()
        self.names: list[str] = []
        self.params: list[torch.nn.Parameter] = []
        frozen = 0
        for name, p in model.named_parameters():  # tied weights appear once
            if pattern is None or pattern.search(name):
                matched.add(name)
                if checked is None or (name in checked and bool(checked[name].any())):
                    self.names.append(name)
                    self.params.append(p)
                    continue
            p.requires_grad_(False)
            frozen += 1
        if checked is not None:
            M.check_filter(checked, matched, param_filter)
        if not self.params:
            raise ValueError(f"config field 'param_filter' {param_filter!r} matches no parameter of the model")
        self.num_frozen = frozen
        first = self.params[0]
        self.w = torch.empty(sum(p.numel() for p in self.params), dtype=torch.float32, device=first.device)
        self.grad = torch.zeros_like(self.w)
        offset = 0
        for p in self.params:
            n = p.numel()
            self.w[offset:offset + n].copy_(p.detach().reshape(-1))
            offset += n
        self.anchor = self.w.clone()
        self.index: torch.Tensor | None = None
        """Positions of the moving elements in ``w`` (None: every element of ``w`` moves)."""
        if checked is None:
            self.sampled_w, self.sampled_anchor, self._grad_c = self.w, self.anchor, None
        else:
            self.index = M.flat_index(list(zip(self.names, self.params)), checked, first.device)
            self.sampled_w = self.w.index_select(0, self.index)
            self.sampled_anchor = self.sampled_w.clone()
            self._grad_c = torch.zeros_like(self.sampled_w)
        self.numel = self.sampled_w.numel()
        """Elements the sampler moves (the ``num_params`` of the result)."""

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

    def sampled_grad(self) -> torch.Tensor:
        """The gradient of the moving elements (``grad`` itself without masks)."""
        if self.index is None:
            return self.grad
        return torch.index_select(self.grad, 0, self.index, out=self._grad_c)

    def publish(self) -> None:
        """Write the moving elements' new values into the model's weights (no-op without masks)."""
        if self.index is not None:
            self.w.index_copy_(0, self.index, self.sampled_w)

    def full_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """(C, k) rows of moving elements -> (C, P) full weight rows, frozen elements at w* (differentiable)."""
        if self.index is None:
            return rows
        return self.anchor.unsqueeze(0).expand(rows.shape[0], -1).index_copy(1, self.index, rows)

    def reset(self) -> None:
        """Back to w* (the start of every chain)."""
        self.w.copy_(self.anchor)
        if self.index is not None:
            self.sampled_w.copy_(self.sampled_anchor)
        self.grad.zero_()
