"""Several processes on one node for one checkpoint, as an accelerate program launched with torchrun.

Each process loads the checkpoint itself (weights never travel through Ray), takes a contiguous share of the
chains (seeded by chain index, never by rank, so results do not depend on the number of processes) and rank 0
gathers the traces and writes the results once. On CPU, ``Accelerator(cpu=True)`` is required: without it every
process silently believes it is rank 0 of 1.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile

from llc_service.config import MeasureConfig


def resolve_processes(cfg: MeasureConfig) -> int:
    """``cfg.processes``, or one per visible GPU when the device is (or may be) CUDA, else 1."""
    if cfg.processes:
        return cfg.processes
    if cfg.device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return max(torch.cuda.device_count(), 1)
    return 1


def launch(req, world: int) -> dict:
    """Run ``world`` processes with ``torchrun --standalone`` (a free rendezvous port) and return rank 0's row."""
    from llc_service.worker.measure import write_failure

    with tempfile.TemporaryDirectory(prefix="llc-measure-") as tmp:
        spec, out = os.path.join(tmp, "request.json"), os.path.join(tmp, "row.json")
        with open(spec, "w") as f:
            json.dump(dataclasses.asdict(req), f, default=str)
        env = dict(os.environ)
        import torch

        if not torch.cuda.is_available() or req.config.get("device") == "cpu":
            env["ACCELERATE_USE_CPU"] = "1"
        env.setdefault("OMP_NUM_THREADS", "1")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
               "-m", "llc_service.worker.distributed", spec, out]
        proc = subprocess.run(cmd, env=env)
        if proc.returncode == 0 and os.path.exists(out):
            with open(out) as f:
                return json.load(f)
        return write_failure(req, RuntimeError(
            f"the {world} measurement processes exited with code {proc.returncode} before writing a result"), world)


def main(spec_path: str, out_path: str) -> None:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    from llc_service.worker.measure import MeasureRequest, run_measurement

    with open(spec_path) as f:
        req = MeasureRequest(**json.load(f))
    acc = Accelerator(cpu=not torch.cuda.is_available() or req.config.get("device") == "cpu")
    if acc.num_processes != int(os.environ.get("WORLD_SIZE", "1")):
        raise RuntimeError(f"accelerate sees {acc.num_processes} processes but torchrun started "
                           f"{os.environ.get('WORLD_SIZE')}: refusing to measure with overlapping chains")
    device = "cpu" if acc.device.type == "cpu" else str(acc.device)
    row = run_measurement(req, rank=acc.process_index, world=acc.num_processes,
                          gather=lambda payload: gather_object([payload]), device=device)
    if acc.is_main_process:
        with open(out_path, "w") as f:
            json.dump(row, f, default=str)
    acc.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
