"""Element masks: restrict the sampler to chosen elements of chosen parameters (a weight-restricted LLC).

``masks`` maps parameter names to boolean tensors of the parameter's shape (True = sampled). Only the True elements
move, get noise, enter the sampler state and count in ``num_params``; every other weight stays exactly at w*.
A parameter without a mask is frozen whole. With ``param_filter`` set too, every masked parameter must also match
it (a mask on a parameter the filter excludes is a contradiction, refused).

The sampler cores are not changed: :class:`~llc_service.sampler.flat.FlatParams` keeps the sampled elements in a
compact vector (the "moving" elements, in parameter order then row-major order) and scatters it into the model's
weights after each step; the gradient is gathered from the full gradient buffer before each step. So the noise is
one ``randn`` of k values per step for a mask of k elements, whatever surrounds them.
"""

from __future__ import annotations

import difflib
from typing import Mapping

import torch


def normalize_masks(model: torch.nn.Module, masks: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """``masks`` checked against ``model`` and keyed by the names ``named_parameters()`` yields.

    Accepts bool tensors (or anything ``torch.as_tensor`` turns into a bool tensor, e.g. a NumPy bool array); a tied
    weight may be named by any of its aliases. Raises ``ValueError`` for an unknown name, a non-boolean mask, a shape
    that does not match, two masks for one tied weight, or masks that select no element at all.
    """
    if masks is None:
        raise ValueError("masks is None")
    canonical: dict[str, str] = {}
    by_id: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        canonical[name] = by_id.setdefault(id(p), name)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    out: dict[str, torch.Tensor] = {}
    for name, mask in masks.items():
        if name not in canonical:
            close = difflib.get_close_matches(str(name), list(canonical), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"masks: {name!r} is not a parameter of the model{hint}")
        key = canonical[name]
        if key in out:
            raise ValueError(f"masks: {name!r} and another name of the same (tied) parameter {key!r} both have a mask")
        t = torch.as_tensor(mask)
        if t.dtype != torch.bool:
            raise ValueError(f"masks[{name!r}] must be a boolean tensor (True = sampled), got dtype {t.dtype}")
        if tuple(t.shape) != shapes[key]:
            raise ValueError(f"masks[{name!r}] has shape {tuple(t.shape)} but the parameter has shape {shapes[key]}")
        out[key] = t
    if not any(bool(t.any()) for t in out.values()):
        raise ValueError("masks select no element: at least one mask needs a True element (True = sampled)")
    return out


def check_filter(masks: Mapping[str, torch.Tensor], selected: set[str], param_filter: str | None) -> None:
    """Every masked parameter must be among those ``param_filter`` selects."""
    excluded = sorted(n for n in masks if n not in selected)
    if excluded:
        raise ValueError(f"masks name parameter(s) {excluded} that config field 'param_filter' {param_filter!r} "
                         "excludes: widen the filter or drop those masks")


def flat_index(params: list[tuple[str, torch.nn.Parameter]], masks: Mapping[str, torch.Tensor],
               device) -> torch.Tensor:
    """Positions of the masked-in elements in the flat buffer of ``params`` (concatenated in this order)."""
    parts, offset = [], 0
    for name, p in params:
        n = p.numel()
        m = masks.get(name)
        if m is not None:
            parts.append(torch.nonzero(m.reshape(-1), as_tuple=False).reshape(-1) + offset)
        offset += n
    return torch.cat(parts).to(device=device, dtype=torch.long)
