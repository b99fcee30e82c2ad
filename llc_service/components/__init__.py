"""Named components for the refined LLC (Wang et al. 2024, arXiv 2410.02984): λ̂ of one head, MLP or layer.

A component is a name and the element masks (:mod:`llc_service.sampler.masks`) that restrict the sampler to it.
The config field ``components`` lists them: presets expanded from the model's architecture
(:mod:`.layouts`) and/or explicit entries::

    components: attention_heads                      # every head of every layer: layer0.head0, layer0.head1, ...
    components: [mlps, layers, all]                  # layer<i>.mlp, layer<i>, and the whole model
    components:
      - {name: early-heads, param_filter: 'layers\\.[01]\\.attention\\.', heads: [0, 2]}
      - {name: l3-neurons, param_filter: 'layers\\.3\\.mlp\\.', neurons: [5, 17, 99]}

``heads`` / ``neurons`` restrict the tensors ``param_filter`` matches to those heads' / neurons' slices (every
matched tensor must then have a head / neuron layout; the output projections' biases, shared by all heads or
neurons, are left out); without them the matched tensors are sampled whole, which
works on any architecture. ``all`` is the unrestricted whole-model measurement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from llc_service.components import layouts

PRESETS = ("attention_heads", "mlps", "layers", "all")
_KEYS = {"name", "param_filter", "heads", "neurons"}


@dataclass
class Component:
    name: str
    masks: dict[str, torch.Tensor] | None
    """{parameter name: bool mask}; None = the whole model (no restriction)."""

    @property
    def num_elements(self) -> int | None:
        return None if self.masks is None else int(sum(int(m.sum()) for m in self.masks.values()))


def validate_spec(spec: Any) -> list:
    """The config value as a list of preset names and entry dicts; ``ValueError`` naming what is wrong."""
    if spec is None:
        return []
    items = [spec] if isinstance(spec, (str, dict)) else list(spec)
    out, names = [], set()
    for item in items:
        if isinstance(item, str):
            for part in (p.strip() for p in item.split(",")):
                if part and part not in PRESETS:
                    raise ValueError(f"config field 'components': unknown preset {part!r} (presets: "
                                     f"{', '.join(PRESETS)}; or an entry {{name, param_filter, heads, neurons}})")
                if part:
                    out.append(part)
            continue
        if not isinstance(item, dict):
            raise ValueError(f"config field 'components': entries are preset names or mappings, got {item!r}")
        unknown = sorted(set(item) - _KEYS)
        if unknown or "name" not in item or "param_filter" not in item:
            raise ValueError(f"config field 'components': entry {item!r} needs 'name' and 'param_filter' (optional "
                             f"'heads', 'neurons'){'; unknown key(s) ' + str(unknown) if unknown else ''}")
        if item["name"] in PRESETS or item["name"] in names:
            raise ValueError(f"config field 'components': entry name {item['name']!r} is a preset or used twice")
        names.add(item["name"])
        try:
            re.compile(item["param_filter"])
        except re.error as e:
            raise ValueError(f"config field 'components': param_filter {item['param_filter']!r}: {e}") from None
        for key in ("heads", "neurons"):
            v = item.get(key)
            if v is not None and (not isinstance(v, list) or not v or not all(isinstance(i, int) for i in v)):
                raise ValueError(f"config field 'components': {key!r} of {item['name']!r} must be a non-empty list "
                                 f"of integers (got {v!r})")
        out.append(dict(item))
    if len([p for p in out if isinstance(p, str)]) != len({p for p in out if isinstance(p, str)}):
        raise ValueError(f"config field 'components': a preset is listed twice ({spec!r})")
    return out


def resolve_components(model: torch.nn.Module, spec: Any) -> list[Component]:
    """The components of ``spec`` (the config field) for ``model``, in order; presets need a known architecture."""
    out: list[Component] = []
    for item in validate_spec(spec):
        if item == "all":
            out.append(Component("all", None))
        elif isinstance(item, str):
            out.extend(_preset(model, item))
        else:
            out.append(_entry(model, item))
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ValueError(f"config field 'components': component names collide: {names}")
    return out


def _params(model) -> list[tuple[str, torch.nn.Parameter]]:
    return list(model.named_parameters())


def _preset(model, preset: str) -> list[Component]:
    arch = layouts.arch_for(model.config)
    geo = layouts.Heads.of(model.config)
    by_layer: dict[int, list[tuple[str, str, torch.nn.Parameter]]] = {}
    for name, p in _params(model):
        layer, rest = layouts.split_name(arch, name)
        if layer is not None:
            by_layer.setdefault(layer, []).append((name, rest, p))
    if not by_layer:
        raise ValueError(f"components: found no layers in the parameters of this {model.config.model_type} model")
    out = []
    for layer in sorted(by_layer):
        params = by_layer[layer]
        if preset == "layers":
            out.append(Component(f"layer{layer}", {n: torch.ones(p.shape, dtype=torch.bool) for n, _, p in params}))
        elif preset == "mlps":
            masks = {n: torch.ones(p.shape, dtype=torch.bool) for n, rest, p in params
                     if rest.startswith(arch.mlp_prefix)}
            if masks:
                out.append(Component(f"layer{layer}.mlp", masks))
        elif preset == "attention_heads":
            roles = [(n, layouts.role_of(arch.attention, rest), p) for n, rest, p in params]
            roles = [(n, r, p) for n, r, p in roles if r is not None]
            for h in range(geo.num_heads):
                out.append(Component(f"layer{layer}.head{h}",
                                     {n: layouts.head_mask(r, tuple(p.shape), [h], geo) for n, r, p in roles}))
    return out


def _entry(model, item: dict) -> Component:
    pattern = re.compile(item["param_filter"])
    matched = [(n, p) for n, p in _params(model) if pattern.search(n)]
    if not matched:
        raise ValueError(f"components: param_filter {item['param_filter']!r} of {item['name']!r} matches no "
                         "parameter of the model")
    heads, neurons = item.get("heads"), item.get("neurons")
    masks = {}
    if heads is None and neurons is None:
        return Component(item["name"], {n: torch.ones(p.shape, dtype=torch.bool) for n, p in matched})
    arch = layouts.arch_for(model.config)
    geo = layouts.Heads.of(model.config)
    for n, p in matched:
        _, rest = layouts.split_name(arch, n)
        head_role, mlp_role = layouts.role_of(arch.attention, rest), layouts.role_of(arch.mlp, rest)
        if rest.endswith(".bias") and _shared_bias(arch, rest):
            continue  # the output projection's bias belongs to no single head or neuron
        if heads is not None and head_role is not None:
            masks[n] = layouts.head_mask(head_role, tuple(p.shape), heads, geo)
        elif neurons is not None and mlp_role is not None:
            masks[n] = layouts.neuron_mask(mlp_role, tuple(p.shape), neurons)
        else:
            what = "heads" if heads is not None else "neurons"
            raise ValueError(f"components: {item['name']!r} selects {what} but its param_filter matches {n!r}, "
                             f"which has no {what[:-1]} layout (narrow the param_filter)")
    return Component(item["name"], masks)


def _shared_bias(arch, rest: str) -> bool:
    weight = rest[: -len(".bias")] + ".weight"
    role = layouts.role_of(arch.attention, weight) or layouts.role_of(arch.mlp, weight)
    return role in ("out_cols", "out_rows", "down_cols", "down_rows")
