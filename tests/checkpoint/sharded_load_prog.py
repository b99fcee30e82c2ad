"""Under torchrun: load a tiny checkpoint sharded (meta build + broadcast), gather it back, compare with
from_pretrained bit for bit (parameters, buffers, and the logits of one forward)."""

import json
import sys

import torch
import torch.distributed as dist


def main(ckpt: str, out: str) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from transformers import AutoModelForCausalLM

    from llc_service.checkpoint.sharded_load import load_sharded
    from llc_service.estimate.sharded import shard_model

    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    mesh = init_device_mesh("cpu", (1, world), mesh_dim_names=("chain", "shard"))
    model = load_sharded(ckpt, mesh["shard"], shard_model)
    got = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    ref = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    want = ref.state_dict()
    mismatched = sorted(k for k in want if k not in got or not torch.equal(got[k], want[k]))
    buffers = {n: b for n, b in model.named_buffers()}
    bad_buffers = sorted(n for n, b in ref.named_buffers() if not torch.equal(buffers[n], b))
    ids = torch.randint(0, ref.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        same_logits = bool(torch.equal(model(input_ids=ids).logits, ref(input_ids=ids).logits))
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"mismatched": mismatched, "keys": len(want), "bad_buffers": bad_buffers,
                       "buffers": len(buffers), "same_logits": same_logits}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
