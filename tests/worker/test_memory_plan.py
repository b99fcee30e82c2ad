"""The memory plan: numbers from headers alone, checked by hand and against a measured peak; refusal before loading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from llc_service.worker import memory_plan as mp
from tests.helpers.checkpoints import make_checkpoint
from tests.helpers.measure import small_config

MB = 2**20

# the tiny GPT-NeoX of tests/helpers (hidden 32, 2 layers, 2 heads, vocab 512, MLP 128), counted by hand:
EMBED = 512 * 32                       # embed_in, and embed_out (untied) the same
LAYER = (2 * 32 + 2 * 32               # two layer norms (weight + bias)
         + 32 * 96 + 96                # query_key_value
         + 32 * 32 + 32                # attention.dense
         + 32 * 128 + 128              # dense_h_to_4h
         + 128 * 32 + 32)              # dense_4h_to_h
P = EMBED + 2 * LAYER + 2 * 32 + EMBED  # + final layer norm
ATTENTION = 2 * (32 * 96 + 96 + 32 * 32 + 32)


@pytest.fixture(scope="module")
def neox(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("plan") / "run" / "step1", arch="gpt_neox", sharded=True)


def test_shape_is_read_from_headers_and_matches_the_model(neox):
    shape = mp.read_shape(str(neox))
    assert P == 58240
    assert shape.num_params == P and shape.dtype == "F32"
    assert (shape.hidden, shape.layers, shape.heads, shape.vocab) == (32, 2, 2, 512)
    assert shape.largest_layer() == EMBED  # an embedding outweighs one tiny block
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(neox))
    assert sum(p.numel() for p in model.parameters()) == P


def test_plan_numbers_by_hand(neox):
    shape = mp.read_shape(str(neox))
    b, s, h, L, heads, V = 8, 32, 32, 2, 2, 512
    act = (mp.ACT_BYTES_PER_HIDDEN * b * s * h * L + mp.ATTN_BYTES * b * heads * s * s * L
           + mp.LOGIT_BYTES * b * s * V)
    one = mp.plan_bytes(shape, set(shape.tensors), 1, sampler="sgld", batch_size=b, seq_len=s, device="cpu")
    assert one == {"loaded": 4 * P, "weights": 4 * P, "grad": 4 * P, "anchor": 4 * P, "scratch": 4 * P,
                   "rmsprop": 0, "frozen": 0, "gathered": 0, "activations": act,
                   "runtime": mp.WORKSPACE_BYTES + mp.RUNTIME_CPU_BYTES}
    # sharded over 2 with only the attention sampled, RMSProp: state /2, frozen fp32 /2, half the rows each
    names = mp.sampled_tensor_names(shape, r"\.attention\.")
    two = mp.plan_bytes(shape, names, 2, sampler="rmsprop_sgld", batch_size=b, seq_len=s, device="cuda")
    half_act = (mp.ACT_BYTES_PER_HIDDEN * 4 * s * h * L + mp.ATTN_BYTES * 4 * heads * s * s * L
                + mp.LOGIT_BYTES * 4 * s * V)
    assert two == {"loaded": 0, "weights": 2 * ATTENTION, "grad": 2 * ATTENTION, "anchor": 2 * ATTENTION,
                   "scratch": 2 * ATTENTION, "rmsprop": 2 * ATTENTION, "frozen": 2 * (P - ATTENTION),
                   "gathered": 8 * EMBED, "activations": half_act, "runtime": mp.WORKSPACE_BYTES}


def test_bf16_checkpoint_keeps_w_star_in_bf16_when_sharded(tmp_path):
    import copy

    import torch

    from llc_service.demo import assets
    from tests.helpers.checkpoints import tiny_model

    model = copy.deepcopy(tiny_model("gpt_neox")).to(torch.bfloat16)
    ckpt = assets.save_checkpoint(model, tmp_path / "bf16", tokenizer=None)
    shape = mp.read_shape(str(ckpt))
    assert shape.dtype == "BF16" and shape.num_params == P
    two = mp.plan_bytes(shape, set(shape.tensors), 2, sampler="sgld", batch_size=2, seq_len=8, device="cuda")
    assert two["anchor"] == P and two["weights"] == 2 * P  # 2 B vs 4 B per parameter, over 2 processes


def _budget_between(neox, cfg, processes, lo_k, hi_k):
    """A device_memory_gb under which shard size ``hi_k`` fits and ``lo_k`` does not."""
    shape = mp.read_shape(str(neox))
    names = set(shape.tensors)
    need = {k: sum(mp.plan_bytes(shape, names, k, sampler=cfg.sampler, batch_size=cfg.batch_size,
                                 seq_len=cfg.seq_len, device="cpu").values()) for k in (lo_k, hi_k)}
    assert need[hi_k] < need[lo_k]
    return (need[lo_k] + need[hi_k]) / 2 / (1 - mp.SAFETY_MARGIN) / 2**30


def test_auto_picks_the_smallest_shard_size_that_fits(neox):
    cfg = small_config(device="cpu")
    cfg.device_memory_gb = _budget_between(neox, cfg, 2, 1, 2)
    plan = mp.plan_memory(mp.read_shape(str(neox)), cfg, 2)
    assert [r.k for r in plan.rows] == [1, 2] and [r.fits for r in plan.rows] == [False, True]
    assert plan.chosen == 2
    assert "<-" in plan.table().splitlines()[-1]
    cfg.device_memory_gb = 100.0
    assert mp.plan_memory(mp.read_shape(str(neox)), cfg, 4).chosen == 1
    cfg.device_memory_gb = 0.1  # below the runtime alone: nothing fits
    plan = mp.plan_memory(mp.read_shape(str(neox)), cfg, 4)
    assert plan.chosen is None and "shard_size=4 (the largest possible with 4" in mp.refusal(plan)


def test_a_budget_nothing_fits_is_refused_before_loading(tmp_path, token_parquet):
    """From S3 (moto): a loaded checkpoint leaves an entry in the node cache; a refused one must not."""
    from llc_service.sinks import read_summary
    from llc_service.worker.measure import measure_checkpoint
    from tests.helpers.checkpoints import moto_s3, upload

    cache = tmp_path / "cache"
    with moto_s3(buckets=("plans",)) as (_, opts):
        uri = upload(make_checkpoint(tmp_path / "ck"), "s3://plans/run/step7", opts)
        cfg = small_config(device="cpu", device_memory_gb=0.25, processes=2, cache_dir=str(cache),
                           storage_options=opts)
        t0 = time.perf_counter()
        row = measure_checkpoint(uri, token_parquet, str(tmp_path / "out"), cfg, use_wandb=False)
        seconds = time.perf_counter() - t0
    assert row["status"] == "failed" and row["error_type"] == "MemoryPlanError" and row["error_kind"] == "permanent"
    msg = row["error"]
    assert "shard_size=2 (the largest possible with 2 process(es))" in msg and "256 MB are available" in msg
    assert "--processes" in msg and "param_filter" in msg
    assert seconds < 30  # no process was launched, no model built (the cache below is the proof)
    assert not cache.exists() or not any(cache.rglob("*.safetensors"))
    assert read_summary(str(tmp_path / "out"))["error_type"].tolist() == ["MemoryPlanError"]


def test_auto_needing_shards_measures_sharded(neox, tmp_path, token_parquet):
    """One copy does not fit the device budget, half a copy does: ``auto`` picks 2 and the measurement runs over a
    shard group of 2 processes (tests/worker/test_sharded_measure.py checks its numbers against one process)."""
    from llc_service.worker.measure import measure_checkpoint

    cfg = small_config(device="cpu", processes=2, chain_batching="off")
    cfg.device_memory_gb = _budget_between(neox, cfg, 2, 1, 2)
    row = measure_checkpoint(str(neox), token_parquet, str(tmp_path / "out"), cfg, use_wandb=False)
    assert row["status"] == "ok" and row["shard_size"] == 2 and row["world_size"] == 2, row.get("error")
    assert len(row["llc_per_chain"]) == cfg.num_chains and np.isfinite(row["llc_mean"])


def test_a_measurement_records_shard_size_and_peak_memory(neox, tmp_path, token_parquet):
    from llc_service.sinks import read_summary
    from llc_service.worker.measure import measure_checkpoint

    row = measure_checkpoint(str(neox), token_parquet, str(tmp_path / "out"),
                             small_config(device="cpu", num_chains=1, num_draws=4), use_wandb=False)
    assert row["status"] == "ok" and row["shard_size"] == 1
    # torch alone keeps more than 100 MB resident; a peak above 64 GB would be nonsense on this machine
    assert 100 < row["peak_memory_mb"] < 64 * 1024
    stored = read_summary(str(tmp_path / "out")).iloc[0]
    assert stored["shard_size"] == 1 and stored["peak_memory_mb"] == pytest.approx(row["peak_memory_mb"])
    assert json.loads(stored["config_json"])["shard_size"] == 1


def test_dry_run_prints_the_plan_and_measures_nothing(neox, tmp_path, capsys):
    from llc_service.cli import main

    out = tmp_path / "out"
    code = main(["measure", str(neox), "--data", str(tmp_path / "nowhere.parquet"), "--out", str(out),
                 "--dry-run", "--processes", "2", "--set", "device=cpu", "--set", "device_memory_gb=64"])
    text = capsys.readouterr().out
    assert code == 0 and not out.exists()
    assert f"{P:,} parameters" in text and "shard_size: 1" in text
    rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == ["1", "2"] and rows[0][-2] == "yes"


_PEAK = r"""
import json, resource, sys
from llc_service.config import MeasureConfig, build_config
from llc_service.worker.measure import measure_checkpoint
ckpt, data, out, batch, seq = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
cfg = build_config(MeasureConfig, dict(num_chains=1, num_draws=3, batch_size=batch, seq_len=seq, progress=False,
                   wandb_project=None, chain_batching="off", init_loss_batches=4, device="cpu"))
row = measure_checkpoint(ckpt, data, out, cfg, use_wandb=False)
print(json.dumps({"status": row["status"],
                  "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


@pytest.mark.slow
def test_plan_matches_the_measured_peak_on_cpu(tmp_path):
    """A 26M-parameter GPT-NeoX (hidden 1024, 2 layers), one chain, batch 4 × 32 tokens, in a fresh process: its
    peak resident set is within ±20% of the plan's total (the plan's runtime constant included; calibrated at
    0.92-0.99 of the plan, see docs/large-models.md)."""
    from llc_service.demo import assets
    from tests.helpers.checkpoints import tiny_model, tiny_tokenizer
    from tests.helpers.measure import write_token_parquet

    model = tiny_model("gpt_neox", hidden=1024, layers=2, heads=4)
    ckpt = assets.save_checkpoint(model, tmp_path / "run" / "step1", tokenizer=tiny_tokenizer())
    data = write_token_parquet(tmp_path / "tokens.parquet", rows=64, seq_len=32)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _PEAK, str(ckpt), data, str(tmp_path / "out"), "4", "32"],
                          env=env, capture_output=True, text=True, timeout=600)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["status"] == "ok", proc.stderr[-2000:]
    shape = mp.read_shape(str(ckpt))
    planned = sum(mp.plan_bytes(shape, set(shape.tensors), 1, sampler="sgld", batch_size=4, seq_len=32,
                                device="cpu").values())
    assert 0.8 * planned <= got["peak"] <= 1.2 * planned, (got["peak"] / MB, planned / MB)
