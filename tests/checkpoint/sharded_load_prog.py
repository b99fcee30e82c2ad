"""Under torchrun: load a tiny checkpoint sharded (meta build, then each rank's slices or rank 0's broadcast), gather
it back, compare with from_pretrained bit for bit (parameters, buffers, the logits of one forward), and the weight
checks on the shards with those of the whole model."""

import json
import sys

import torch
import torch.distributed as dist


def main(ckpt: str, out: str, prefer: str, narrow: str = "") -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from transformers import AutoModelForCausalLM

    from llc_service.checkpoint.sharded_load import load_sharded
    from llc_service.estimate.sharded import shard_model
    from llc_service.worker.weights import sharded_weight_checks, weight_stats

    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    mesh = init_device_mesh("cpu", (1, world), mesh_dim_names=("chain", "shard"))
    frozen = None
    if narrow:  # everything but the attention is frozen: kept in the files' bf16 where they are bf16
        frozen = lambda name: not any(w in name for w in (".attention.", ".attn.", ".self_attn."))  # noqa: E731
    load = load_sharded(ckpt, mesh["shard"], shard_model, prefer=prefer, frozen=frozen)
    model = load.model
    nonfinite, norm, sketch = sharded_weight_checks(model, mesh["shard"].get_group())
    got = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    ref = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    want = ref.state_dict()
    mismatched = sorted(k for k in want if k not in got or not torch.equal(got[k].to(want[k].dtype), want[k]))
    narrow_dtypes = sorted({str(p.dtype) for n, p in model.named_parameters() if frozen is not None and frozen(n)})
    sampled_dtypes = sorted({str(p.dtype) for n, p in model.named_parameters() if frozen is not None
                             and not frozen(n)})
    buffers = {n: b for n, b in model.named_buffers()}
    bad_buffers = sorted(n for n, b in ref.named_buffers() if not torch.equal(buffers[n], b))
    ids = torch.randint(0, ref.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    want_norm, want_sketch = weight_stats(ref)
    with torch.no_grad():
        same_logits = bool(torch.equal(model(input_ids=ids).logits, ref(input_ids=ids).logits))
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"mismatched": mismatched, "keys": len(want), "bad_buffers": bad_buffers,
                       "buffers": len(buffers), "same_logits": same_logits,
                       "how": load.how, "reason": load.reason, "narrowed": load.narrowed,
                       "frozen_dtypes": narrow_dtypes, "sampled_dtypes": sampled_dtypes, "missing": load.missing,
                       "nonfinite": nonfinite,
                       "norm": [norm, want_norm],
                       "sketch_diff": float(abs(sketch - want_sketch).max() / abs(want_sketch).max())}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:5])
