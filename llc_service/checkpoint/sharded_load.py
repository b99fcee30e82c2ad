"""Load a checkpoint straight into an FSDP2-sharded model: no process but rank 0 ever holds a full copy.

Every rank builds the architecture on the ``meta`` device (no memory), shards it (``shard_model``), allocates only
its shards (``to_empty``), then rank 0 reads the weights with ``from_pretrained`` (which keeps transformers' key
renames and converters, e.g. GPT-NeoX ``embed_out`` -> ``lm_head``) and ``set_model_state_dict(...,
full_state_dict=True, broadcast_from_rank0=True)`` sends each rank its slices. Buffers that are not in the state
dict (rotary ``inv_freq``) are left uninitialised by the meta build: they are copied from the reference model on
rank 0 and broadcast too. The worker uses it through :mod:`llc_service.worker.sharded`.
"""

from __future__ import annotations

from typing import Callable

import torch


def load_sharded(local_dir: str, mesh, shard: Callable, dtype=torch.float32,
                 inspect: Callable | None = None, device: str = "cpu") -> torch.nn.Module:
    """The checkpoint in ``local_dir`` as an fp32 eval model sharded over ``mesh`` by ``shard(model, mesh)``.

    ``inspect(full_model, loading_info)`` runs on (global) rank 0 with the full model read from the files, before it
    is scattered (checks, weight statistics); what it raises is raised on rank 0 only, after the scatter, so the
    other ranks never wait on a broadcast that does not come (callers agree on failures afterwards). The scatter
    goes over the default process group, so any mesh (several shard groups too) gets its shards from rank 0."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(local_dir, local_files_only=True, trust_remote_code=False)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=False)
    model.tie_weights()
    shard(model, mesh)
    model.to_empty(device=device)
    rank = dist.get_rank()
    full = None
    if rank == 0:
        full, info = AutoModelForCausalLM.from_pretrained(local_dir, dtype=dtype, use_safetensors=True,
                                                          trust_remote_code=False, local_files_only=True,
                                                          output_loading_info=True)
    problem = None
    if full is not None and inspect is not None:
        try:
            inspect(full, info)
        except Exception as exc:  # noqa: BLE001 - re-raised below, once every rank has left the collectives
            problem = exc
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
    model.eval()
    del full
    if problem is not None:
        raise problem
    return model
