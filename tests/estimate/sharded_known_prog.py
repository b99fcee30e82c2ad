"""Run under torchrun: λ̂ of a model of known learning coefficient, its parameters sharded over the ranks (FSDP2)."""

import json
import os
import sys

import torch.distributed as dist


def main(out: str, case: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    from llc_service.config import SamplerConfig
    from llc_service.estimate import result_from_runs
    from llc_service.estimate.sharded import run_sharded_chains, shard_model
    from tests.estimate import known_models as km

    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    mesh = init_device_mesh("cpu", (1, world), mesh_dim_names=("chain", "shard"))
    if case == "regular":
        model, data, loss_fn, lam, nbeta = km.regular(d=4, seed=0)
        draws, burnin = 1000, 300
    else:
        model, data, loss_fn, lam, nbeta = km.reduced_rank(5, 3, 5, seed=0)
        draws, burnin = 2000, 500
    cfg = SamplerConfig(epsilon=1e-3, nbeta=nbeta, gamma=1.0, num_chains=4, num_draws=draws, num_burnin=burnin,
                        batch_size=len(data), seed=0, init_loss_batches=4, progress=False, chain_batching="off")
    sharded = shard_model(model, mesh["shard"])
    run = run_sharded_chains(sharded, data, cfg, mesh["shard"], list(range(cfg.num_chains)), loss_fn=loss_fn,
                             report=True)
    res = result_from_runs([run], cfg)
    local = sum(p.to_local().numel() for p in sharded.parameters())
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"llc": res.llc_mean, "lam": lam, "local": local, "total": run.num_params,
                   "status": list(res.chain_status)}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main(*sys.argv[1:3])
