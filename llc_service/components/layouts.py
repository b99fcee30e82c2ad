"""Where each attention head and each MLP neuron lives in the weights of the supported architectures.

A *role* says how a head (or neuron) index h maps to slices of one tensor:

- ``qkv_interleaved``: GPT-NeoX ``query_key_value``, Linear weight (3·H, in) and bias (3·H) whose output rows are
  laid out per head ``[head][q, k, v][head_dim]``: head h is rows h·3d … (h+1)·3d.
- ``qkv_blocks``: GPT-2 ``c_attn``, Conv1D weight (in, 3·H) and bias (3·H), columns ``q | k | v``: head h is
  columns {0, H, 2H} + h·d … + (h+1)·d.
- ``q_rows``: Llama/Mistral ``q_proj`` (weight (H, in), bias if any): rows h·d … (h+1)·d.
- ``kv_rows``: ``k_proj`` / ``v_proj`` with grouped-query attention: rows of kv head g = h // G.
- ``out_cols`` / ``out_rows``: the output projection as Linear (``dense``, ``o_proj``: weight (out, H), columns
  h·d … (h+1)·d) or as Conv1D (GPT-2 ``c_proj``: weight (H, out), rows h·d … (h+1)·d).
- ``in_rows`` / ``in_cols``: MLP input as Linear (``dense_h_to_4h``, ``gate_proj``, ``up_proj``: row h and bias
  entry h) or Conv1D (GPT-2 ``mlp.c_fc``: column h and bias entry h).
- ``down_cols`` / ``down_rows``: MLP output as Linear (``dense_4h_to_h``, ``down_proj``: column h) or Conv1D
  (GPT-2 ``mlp.c_proj``: row h).

(H = heads·d, d = head_dim, G = query heads per kv head, F = MLP width.) The output projection's bias is shared
by all heads (and the MLP output bias by all neurons), so a head or neuron component leaves it out; a whole-MLP
or whole-layer component includes it.

Grouped-query attention (Llama/Mistral with ``num_key_value_heads`` < ``num_attention_heads``): a query head
reads the key and value rows of its kv head, which the other G − 1 query heads of its group read too. A head's
component includes them (it is the head's whole computation), so the components of the heads of one group
overlap in those rows and their λ̂ are not additive. Restrict a component to ``q_proj``/``o_proj`` with a custom
``param_filter`` to measure a query head's own weights only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Arch:
    model_types: tuple[str, ...]
    layer: str
    """Regex with one group: the layer index in a parameter name."""
    attention: tuple[tuple[str, str], ...]
    """(regex on the name after the layer prefix, role) of the attention tensors carrying heads."""
    attention_prefix: str
    mlp: tuple[tuple[str, str], ...]
    mlp_prefix: str


ARCHS = (
    Arch(("gpt_neox",), r"(?:^|\.)layers\.(\d+)\.",
         ((r"^attention\.query_key_value\.(weight|bias)$", "qkv_interleaved"),
          (r"^attention\.dense\.weight$", "out_cols")), "attention.",
         ((r"^mlp\.dense_h_to_4h\.(weight|bias)$", "in_rows"), (r"^mlp\.dense_4h_to_h\.weight$", "down_cols")),
         "mlp."),
    Arch(("gpt2",), r"(?:^|\.)h\.(\d+)\.",
         ((r"^attn\.c_attn\.(weight|bias)$", "qkv_blocks"), (r"^attn\.c_proj\.weight$", "out_rows")), "attn.",
         ((r"^mlp\.c_fc\.(weight|bias)$", "in_cols"), (r"^mlp\.c_proj\.weight$", "down_rows")), "mlp."),
    Arch(("llama", "mistral"), r"(?:^|\.)layers\.(\d+)\.",
         ((r"^self_attn\.q_proj\.(weight|bias)$", "q_rows"), (r"^self_attn\.[kv]_proj\.(weight|bias)$", "kv_rows"),
          (r"^self_attn\.o_proj\.weight$", "out_cols")), "self_attn.",
         ((r"^mlp\.(gate|up)_proj\.(weight|bias)$", "in_rows"), (r"^mlp\.down_proj\.weight$", "down_cols")), "mlp."),
)
SUPPORTED = tuple(t for a in ARCHS for t in a.model_types)


def arch_for(config) -> Arch:
    model_type = getattr(config, "model_type", None)
    for arch in ARCHS:
        if model_type in arch.model_types:
            return arch
    raise ValueError(f"components: model type {model_type!r} has no known head/MLP layout (supported: "
                     f"{', '.join(SUPPORTED)}); give components as a list of {{name, param_filter}} (whole tensors) "
                     "instead")


@dataclass(frozen=True)
class Heads:
    """Attention geometry read from the model's config."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden: int

    @classmethod
    def of(cls, config) -> Heads:
        heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head")
        hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd")
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        kv = getattr(config, "num_key_value_heads", None) or heads
        return cls(int(heads), int(kv), int(head_dim), int(hidden))


def split_name(arch: Arch, name: str) -> tuple[int | None, str]:
    """(layer index, rest of the name after the layer prefix), or (None, name) outside the layers."""
    m = re.search(arch.layer, name)
    return (int(m.group(1)), name[m.end():]) if m else (None, name)


def role_of(table, rest: str) -> str | None:
    for pattern, role in table:
        if re.search(pattern, rest):
            return role
    return None


def _index_mask(shape, dim: int, idx: list[int]) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    sel = torch.tensor(sorted(set(idx)), dtype=torch.long)
    if sel.numel() and (sel.min() < 0 or sel.max() >= shape[dim]):
        raise ValueError(f"components: index out of range for a tensor of shape {tuple(shape)}")
    mask.index_fill_(dim, sel, True)
    return mask


def head_mask(role: str, shape: tuple, heads: list[int], geo: Heads) -> torch.Tensor:
    """The elements of one attention tensor that belong to ``heads``."""
    d, H = geo.head_dim, geo.num_heads * geo.head_dim
    bad = [h for h in heads if not 0 <= h < geo.num_heads]
    if bad:
        raise ValueError(f"components: head(s) {bad} out of range (the model has {geo.num_heads} heads per layer)")
    vector = len(shape) == 1
    if role == "qkv_interleaved":
        idx = [h * 3 * d + j for h in heads for j in range(3 * d)]
        return _index_mask(shape, 0, idx)
    if role == "qkv_blocks":
        idx = [block * H + h * d + j for block in range(3) for h in heads for j in range(d)]
        return _index_mask(shape, 0 if vector else 1, idx)
    if role == "q_rows":
        return _index_mask(shape, 0, [h * d + j for h in heads for j in range(d)])
    if role == "kv_rows":
        group = geo.num_heads // geo.num_kv_heads
        kv = sorted({h // group for h in heads})
        return _index_mask(shape, 0, [g * d + j for g in kv for j in range(d)])
    if role in ("out_cols", "out_rows"):
        return _index_mask(shape, 1 if role == "out_cols" else 0, [h * d + j for h in heads for j in range(d)])
    raise AssertionError(role)


def neuron_mask(role: str, shape: tuple, neurons: list[int]) -> torch.Tensor:
    """The elements of one MLP tensor that belong to ``neurons`` (hidden units of the MLP)."""
    vector = len(shape) == 1
    if role == "in_rows":
        return _index_mask(shape, 0, neurons)
    if role == "in_cols":
        return _index_mask(shape, 0 if vector else 1, neurons)
    if role == "down_cols":
        return _index_mask(shape, 1, neurons)
    if role == "down_rows":
        return _index_mask(shape, 0, neurons)
    raise AssertionError(role)
