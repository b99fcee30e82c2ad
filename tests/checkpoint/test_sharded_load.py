"""Meta-device build + FSDP2 shard + rank-0 broadcast loads exactly what from_pretrained loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.checkpoints import make_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("prefer", ["slices", "rank0"])
@pytest.mark.parametrize("arch", ["gpt_neox", "llama", "gpt2"])
def test_sharded_load_equals_from_pretrained_bit_for_bit(tmp_path, arch, prefer):
    """GPT-NeoX (renamed embed_out, rotary inv_freq), Llama (rotary inv_freq), GPT-2 (tied lm_head); each rank
    reading its own slices, and rank 0 reading everything and scattering."""
    ckpt = make_checkpoint(tmp_path / arch, arch=arch, tokenizer=False)
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(ROOT / "tests" / "checkpoint" / "sharded_load_prog.py"), str(ckpt), str(out), prefer],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["keys"] > 10 and got["mismatched"] == []
    assert got["bad_buffers"] == [] and got["same_logits"]
    if arch != "gpt2":
        assert got["buffers"] >= 1  # the rotary inv_freq was there to get wrong
    assert got["how"] == prefer, got["reason"]  # these architectures never need the rank-0 fallback
    assert got["missing"] == [] and got["nonfinite"] == []
    assert got["norm"][0] == pytest.approx(got["norm"][1], rel=1e-12)  # the shards' parts add up to the whole
    assert got["sketch_diff"] < 1e-6


@pytest.mark.slow
def test_frozen_weights_of_a_bf16_checkpoint_stay_bf16(tmp_path):
    """``param_filter`` leaves most of a bf16 checkpoint frozen: those parameters are sharded in bf16 (2 bytes per
    element, what the memory plan counts), the sampled ones in fp32, and FSDP2 computes in fp32: the same logits as
    ``from_pretrained(dtype=float32)`` bit for bit."""
    import copy

    import torch

    from tests.helpers.checkpoints import tiny_model

    ckpt = tmp_path / "bf16"
    copy.deepcopy(tiny_model("llama")).to(torch.bfloat16).save_pretrained(ckpt, safe_serialization=True)
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(ROOT / "tests" / "checkpoint" / "sharded_load_prog.py"), str(ckpt), str(out), "slices",
                           "narrow"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["how"] == "slices" and got["narrowed"] > 0
    assert got["frozen_dtypes"] == ["torch.bfloat16"] and got["sampled_dtypes"] == ["torch.float32"]
    assert got["mismatched"] == [] and got["bad_buffers"] == [] and got["same_logits"]
