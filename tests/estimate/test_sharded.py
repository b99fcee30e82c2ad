"""FSDP2 on CPU/gloo: a chain sharded over 2 processes takes the same draws as the unsharded chain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _torchrun(tmp_path, nproc: int, arch: str, sampler: str, lean: str = "fp32") -> list[dict]:
    out = tmp_path / "result"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc-per-node={nproc}", str(ROOT / "tests" / "estimate" / "sharded_prog.py"),
                           str(out), arch, sampler, lean], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(Path(f"{out}.{r}").read_text()) for r in range(nproc)]


@pytest.mark.slow
@pytest.mark.parametrize("arch, sampler, lean", [("gpt_neox", "sgld", "fp32"), ("llama", "rmsprop_sgld", "fp32"),
                                                 ("gpt_neox", "sgld", "bf16")])
def test_sharded_chain_draws_equal_the_unsharded_ones(tmp_path, arch, sampler, lean):
    """Tolerance: relative 1e-5 on every step's minibatch loss (8 steps, 2 chains); float reduction order differs
    (the gradient is averaged over 2 half-batches, the loss of each half reduced apart), nothing else does. With
    bf16 values (a bf16 checkpoint) w* is kept in bf16 (2 bytes per element) and the draws are the same."""
    ranks = _torchrun(tmp_path, 2, arch, sampler, lean)
    for r in ranks:
        # fp32 weights keep an fp32 w* (layer-norm ones and zero biases are exact in bf16 and may be kept so)
        assert r["anchor_dtypes"] == ["torch.bfloat16"] if lean == "bf16" else "torch.float32" in r["anchor_dtypes"]
        assert r["sharded"] and r["local"] < r["total"]  # every parameter is a DTensor, each rank holds a part
        expected, got = np.array(r["expected"]), np.array(r["got"])
        assert expected.shape == got.shape == (2, 8) and np.isfinite(got).all()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=0)
        assert not np.allclose(got[0], got[1])  # two chains, two noise and data streams
    assert sum(r["local"] for r in ranks) >= ranks[0]["total"]
    np.testing.assert_array_equal(ranks[0]["got"], ranks[1]["got"])  # one loss per step for the whole group


@pytest.mark.slow
@pytest.mark.parametrize("case, low, high", [("regular", 0.92, 1.12), ("reduced_rank", 0.65, 1.05)])
def test_sharded_chains_reach_the_known_learning_coefficient(tmp_path, case, low, high):
    """λ of a regular regression (d/2 = 2) and of a reduced-rank regression (5, 3, 5) (Aoyagi & Watanabe), with the
    parameters sharded over 2 processes: the bands of tests/estimate/test_known_truth.py (their reasons there)."""
    out = tmp_path / "known"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(ROOT / "tests" / "estimate" / "sharded_known_prog.py"), str(out), case],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(2)]
    for r in ranks:
        assert r["local"] < r["total"] and r["status"] == ["ok"] * 4  # each rank holds a part; no chain diverged
        assert low * r["lam"] < r["llc"] < high * r["lam"], r
    assert ranks[0]["llc"] == ranks[1]["llc"]
