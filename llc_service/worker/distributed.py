"""Several processes on one node for one checkpoint, as an accelerate program launched with torchrun.

Each process loads the checkpoint itself (weights never travel through Ray), takes a contiguous share of the
chains (seeded by chain index, never by rank, so results do not depend on the number of processes) and rank 0
gathers the traces and writes the results once. On CPU, ``Accelerator(cpu=True)`` is required: without it every
process silently believes it is rank 0 of 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from llc_service.config import MeasureConfig, build_config
from llc_service.worker.rank import run_measurement
from llc_service.worker.record import write_failure
from llc_service.worker.unit import MeasureUnit


def resolve_processes(cfg: MeasureConfig) -> int:
    """``cfg.processes``, or one per visible GPU when the device is (or may be) CUDA, else 1."""
    if cfg.processes:
        return cfg.processes
    if cfg.device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return max(torch.cuda.device_count(), 1)
    return 1


def launch(unit: MeasureUnit, cfg: MeasureConfig, world: int) -> dict:
    """Run ``world`` processes with ``torchrun --standalone`` (a free rendezvous port) and return rank 0's row."""
    import torch

    with tempfile.TemporaryDirectory(prefix="llc-measure-") as tmp:
        spec, out = os.path.join(tmp, "request.json"), os.path.join(tmp, "row.json")
        with open(spec, "w") as f:
            json.dump({"unit": unit.to_dict(), "config": cfg.to_dict()}, f, default=str)
        env = dict(os.environ)
        if not torch.cuda.is_available() or cfg.device == "cpu":
            env["ACCELERATE_USE_CPU"] = "1"
        env.setdefault("OMP_NUM_THREADS", "1")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}",
               "-m", "llc_service.worker.distributed", spec, out]
        proc = subprocess.run(cmd, env=env)
        if proc.returncode == 0 and os.path.exists(out):
            with open(out) as f:
                return json.load(f)
        return write_failure(unit, cfg, RuntimeError(
            f"the {world} measurement processes exited with code {proc.returncode} before writing a result"), world)


def main(spec_path: str, out_path: str) -> None:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    with open(spec_path) as f:
        spec = json.load(f)
    unit, cfg = MeasureUnit.from_dict(spec["unit"]), build_config(MeasureConfig, spec["config"])
    acc = Accelerator(cpu=not torch.cuda.is_available() or cfg.device == "cpu")
    if acc.num_processes != int(os.environ.get("WORLD_SIZE", "1")):
        raise RuntimeError(f"accelerate sees {acc.num_processes} processes but torchrun started "
                           f"{os.environ.get('WORLD_SIZE')}: refusing to measure with overlapping chains")
    device = "cpu" if acc.device.type == "cpu" else str(acc.device)
    row = run_measurement(unit, cfg, rank=acc.process_index, world=acc.num_processes,
                          gather=lambda mine: gather_object([mine]), device=device)
    if acc.is_main_process:
        with open(out_path, "w") as f:
            json.dump(row, f, default=str)
    acc.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
