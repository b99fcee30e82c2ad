"""Run under torchrun: one chain with the tiny GPT-NeoX sharded over the ranks, and the unsharded chain, to JSON."""

import json
import os
import sys

import torch
import torch.distributed as dist


def main(out: str, arch: str, sampler: str, lean: str = "fp32") -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.utils.data import TensorDataset

    from llc_service.config import SamplerConfig
    from llc_service.estimate.chains import Workspace
    from llc_service.estimate.sharded import ShardedChains, shard_model
    from tests.helpers.checkpoints import tiny_model

    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    mesh = init_device_mesh("cpu", (1, world), mesh_dim_names=("chain", "shard"))
    ids = torch.randint(0, 512, (32, 16), generator=torch.Generator().manual_seed(0))
    data = TensorDataset(ids)
    cfg = SamplerConfig(num_chains=2, num_draws=8, batch_size=4, sampler=sampler, device="cpu", seed=5,
                        epsilon=1e-3, nbeta=20.0, gamma=100.0, chain_batching="off", progress=False)
    model = tiny_model(arch).float().eval()
    if lean == "bf16":  # a bf16 checkpoint's values: w* is kept in bf16 by the sharded chains, losslessly
        model = model.to(torch.bfloat16).float()
    ref = Workspace(model, data, cfg)
    expected = [ref.run_chain(c)[0].tolist() for c in range(2)]
    import copy

    sharded = shard_model(copy.deepcopy(model), mesh["shard"])
    from torch.distributed.tensor import DTensor

    is_sharded = all(isinstance(p, DTensor) for p in sharded.parameters())
    local = sum(p.to_local().numel() for p in sharded.parameters())
    chains = ShardedChains(sharded, data, cfg, mesh["shard"])
    got = [chains.run_chain(c)[0].tolist() for c in range(2)]
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"expected": expected, "got": got, "sharded": is_sharded, "local": local,
                   "anchor_dtypes": sorted({str(a.dtype) for a in chains.anchors}),
                   "total": sum(p.numel() for p in model.parameters())}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main(*sys.argv[1:5])
