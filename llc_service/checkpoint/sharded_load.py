"""Load a checkpoint straight into an FSDP2-sharded model: no process holds a full copy it only needs a shard of.

Every rank builds the architecture on the ``meta`` device (no memory), shards it (``shard``), and allocates only its
shards (``to_empty``). Then, by preference, **each rank reads its own slices** from the safetensors files
(``safe_open(...).get_slice``: only those bytes are read): the file keys are mapped to the model's names with
transformers' own renamings for the architecture (GPT-NeoX ``embed_out`` -> ``lm_head``, legacy ``gamma``/``beta``,
a missing or extra base-model prefix), and the rotary ``inv_freq`` buffers that meta construction leaves unset are
recomputed by transformers' ``_init_weights``, as ``from_pretrained`` does. Where that mapping cannot be trusted (an
architecture whose loading *converts* tensors (fused or split experts), or a non-persistent buffer other than a
rotary one) rank 0 reads the whole model with ``from_pretrained`` and ``set_model_state_dict(...,
full_state_dict=True, broadcast_from_rank0=True)`` sends each rank its slices (rank 0 then holds one full fp32 copy
while loading). :class:`ShardedLoad` says which way was taken and why.

Checks on the weights (missing tensors, non-finite values, the weight statistics) are the caller's, on the sharded
model: :func:`llc_service.worker.weights.sharded_weight_checks`. The worker uses this through
:mod:`llc_service.worker.sharded`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable

import torch

SLICES, RANK0 = "slices", "rank0"


@dataclass
class ShardedLoad:
    model: torch.nn.Module
    how: str  # SLICES (each rank read its own) or RANK0 (rank 0 read everything and scattered)
    missing: list[str] = field(default_factory=list)  # weights the architecture needs that the files lack
    reason: str | None = None  # why RANK0 was needed
    narrowed: int = 0  # frozen parameters (elements) kept in the files' bf16/fp16


@dataclass
class SlicePlan:
    """Where each of the model's tensors lives in the files: ``{model name: (file path, file key)}``, and its dtype
    there (``{model name: safetensors dtype name}``, e.g. ``"BF16"``)."""
    sources: dict[str, tuple[str, str]]
    missing: list[str]
    refused: str | None = None  # why the slices cannot be trusted (then nothing else is filled in)
    dtypes: dict[str, str] = field(default_factory=dict)


def load_sharded(local_dir: str, mesh, shard: Callable, dtype=torch.float32, device: str = "cpu",
                 prefer: str = SLICES, frozen: Callable[[str], bool] | None = None) -> ShardedLoad:
    """The checkpoint in ``local_dir`` as an eval model in ``dtype``, sharded over ``mesh`` by
    ``shard(model, mesh, compute_dtype)``.

    Every rank must call it (collectives on the rank-0 path; every rank decides the same path from the same files).
    ``prefer=RANK0`` forces the rank-0 path (for comparisons). ``frozen(name)``: parameters that will never move;
    on the slices path those stored in bf16/fp16 in the files stay in that dtype (lossless, half the memory) and
    ``compute_dtype`` is ``dtype``, so that ``shard`` has FSDP2 compute in ``dtype`` (it casts them when it gathers a
    layer); otherwise None."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(local_dir, local_files_only=True, trust_remote_code=False)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=False)
    model.tie_weights()
    plan = slice_plan(model, local_dir) if prefer == SLICES else SlicePlan({}, [], refused="rank-0 load requested")
    narrowed = _narrow_frozen(model, plan, frozen) if plan.refused is None and frozen is not None else 0
    shard(model, mesh, dtype if narrowed else None)
    model.to_empty(device=device)
    if plan.refused is None:
        _read_slices(model, plan, dtype)
        _init_rotary_buffers(model)
        out = ShardedLoad(model, SLICES, plan.missing, narrowed=narrowed)
    else:
        out = ShardedLoad(model, RANK0, _broadcast_from_rank0(model, local_dir, dtype, device), plan.refused)
    model.eval()
    return out


# ---- each rank its slices -----------------------------------------------------------------------------------------

def slice_plan(model: torch.nn.Module, local_dir: str) -> SlicePlan:
    """Map the files' keys to ``model``'s state-dict names the way ``from_pretrained`` does (on a meta model: no
    weights read, only the safetensors headers). Refused (``SlicePlan.refused``) where the slices cannot be trusted."""
    from safetensors import safe_open

    from llc_service.checkpoint.validate import weight_files

    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming, rename_source_key
    except ImportError as exc:  # another transformers layout: the general path still works
        return SlicePlan({}, [], refused=f"transformers' key mapping is not importable ({exc})")
    transforms = get_model_conversion_mapping(model) or []
    converting = [type(t).__name__ for t in transforms if not isinstance(t, WeightRenaming)]
    if converting:
        return SlicePlan({}, [], refused=f"loading this architecture converts tensors ({', '.join(converting[:3])})")
    nonpersistent = _nonpersistent_buffer_owners(model)
    odd = sorted(name for name, owner in nonpersistent.items() if not _is_rotary(owner))
    if odd:
        return SlicePlan({}, [], refused=f"buffers outside the state dict that are not rotary ({', '.join(odd[:3])})")

    state = model.state_dict(keep_vars=True)
    prefix = getattr(model, "base_model_prefix", None) or None
    sources: dict[str, tuple[str, str]] = {}
    dtypes: dict[str, str] = {}
    for file in sorted(weight_files(local_dir, local_dir)):  # the files the worker has already checked
        path = os.path.join(local_dir, file)
        with safe_open(path, framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                name, _ = rename_source_key(key, transforms, [], prefix, state)
                if name in state and name not in sources:
                    sources[name] = (path, key)
                    dtypes[name] = f.get_slice(key).get_dtype()
    # tied weights are one tensor under several names: one name in the files is enough
    present = {id(state[n]) for n in sources}
    ignore = [re.compile(p) for p in getattr(model, "_keys_to_ignore_on_load_missing", None) or []]
    missing = sorted(n for n, t in state.items() if n not in sources and id(t) not in present
                     and not any(p.search(n) for p in ignore))
    buffers = {n for n, _ in model.named_buffers()}
    unfilled = [n for n in missing if n in buffers]
    if unfilled:  # from_pretrained initialises those itself: let it
        return SlicePlan({}, [], refused=f"buffers that the files do not hold ({', '.join(unfilled[:3])})")
    return SlicePlan(sources, missing, dtypes=dtypes)


_NARROW = {"BF16": torch.bfloat16, "F16": torch.float16}


def _narrow_frozen(model: torch.nn.Module, plan: SlicePlan, frozen: Callable[[str], bool]) -> int:
    """Give every frozen parameter stored in bf16/fp16 that dtype (on the meta model, before sharding); returns how
    many elements were narrowed. A tied parameter is narrowed only if every name it has is frozen."""
    names: dict[int, list[str]] = {}
    params: dict[int, torch.nn.Parameter] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
        params[id(p)] = p
    count = 0
    for pid, p in params.items():
        found = [plan.dtypes[n] for n in names[pid] if n in plan.dtypes]
        if not found or found[0] not in _NARROW or not all(frozen(n) for n in names[pid]):
            continue
        p.data = p.data.to(_NARROW[found[0]])
        p.requires_grad_(False)  # frozen for good; FSDP2 wants one dtype among the parameters that train
        count += p.numel()
    return count


def _own_nonpersistent(module: torch.nn.Module) -> list[str]:
    """Names of the buffers ``module`` itself holds outside its state dict."""
    return [n for n, _ in module.named_buffers(recurse=False)
            if n in module._non_persistent_buffers_set]  # noqa: SLF001 - torch's own record of them


def _nonpersistent_buffer_owners(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {f"{mod_name}.{buf}" if mod_name else buf: module for mod_name, module in model.named_modules()
            for buf in _own_nonpersistent(module)}


def _is_rotary(module: torch.nn.Module) -> bool:
    return "RotaryEmbedding" in type(module).__name__ and hasattr(module, "original_inv_freq")


@torch.no_grad()
def _read_slices(model: torch.nn.Module, plan: SlicePlan, dtype) -> None:
    from safetensors import safe_open

    from llc_service.shards import local_box

    state = model.state_dict(keep_vars=True)
    by_file: dict[str, list[tuple[str, str]]] = {}
    for name, (path, key) in plan.sources.items():
        by_file.setdefault(path, []).append((name, key))
    done: set[int] = set()
    for path, pairs in sorted(by_file.items()):
        with safe_open(path, framework="pt") as f:
            for name, key in pairs:
                target = state[name]
                if id(target) in done:  # a tied weight, already read under another name
                    continue
                done.add(id(target))
                local, shape, offset = local_box(target)
                if local.numel() == 0:
                    continue
                if len(shape) == 0:
                    part = f.get_tensor(key)
                else:
                    part = f.get_slice(key)[tuple(slice(o, o + s) for o, s in zip(offset, shape))]
                local.copy_(part.to(dtype=local.dtype if local.is_floating_point() else part.dtype))


@torch.no_grad()
def _init_rotary_buffers(model: torch.nn.Module) -> None:
    """The rotary buffers, computed from the config exactly as ``from_pretrained`` computes them."""
    owners = {id(m): m for m in _nonpersistent_buffer_owners(model).values()}
    for module in owners.values():
        names = _own_nonpersistent(module)
        for name in names:
            buf = getattr(module, name)
            if buf.is_floating_point():
                buf.fill_(float("nan"))
        model._init_weights(module)  # noqa: SLF001 - what from_pretrained itself runs on these modules
        unset = [n for n in names if getattr(module, n).is_floating_point()
                 and not torch.isfinite(getattr(module, n)).all()]
        if unset:
            raise RuntimeError(f"{type(module).__name__}: buffers {unset} were not initialised by _init_weights")


# ---- rank 0 reads all, scatters -----------------------------------------------------------------------------------

def _broadcast_from_rank0(model: torch.nn.Module, local_dir: str, dtype, device: str) -> list[str]:
    """Fill the sharded ``model`` from a full ``from_pretrained`` copy on rank 0; the missing weights (rank 0 knows
    them, the other ranks get [])."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from transformers import AutoModelForCausalLM

    rank = dist.get_rank()
    full, missing = None, []
    if rank == 0:
        full, info = AutoModelForCausalLM.from_pretrained(local_dir, dtype=dtype, use_safetensors=True,
                                                          trust_remote_code=False, local_files_only=True,
                                                          output_loading_info=True)
        missing = sorted((info or {}).get("missing_keys") or [])
    state = full.state_dict() if full is not None else {}
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    # buffers outside the state dict (non-persistent: rotary inv_freq, causal masks) come from rank 0 too
    persistent = set(model.state_dict())
    ref_buffers = dict(full.named_buffers()) if full is not None else {}
    for name, buf in model.named_buffers():
        if name in persistent:
            continue
        if rank == 0:
            buf.copy_(ref_buffers[name].to(device=buf.device, dtype=buf.dtype))
        dist.broadcast(buf, src=0)
    del state, full
    return missing
