"""``shard_size`` > 1: one model copy sharded over the processes of a shard group (FSDP2, CPU/gloo under torchrun).

The truth here is the unsharded measurement of the same checkpoint, data and config: chains are seeded by index and
the sharded step draws the unsharded noise (``NoiseSlices``), so every draw agrees up to the order of float
reductions (the gradient of a minibatch is the mean of k partial means). Known-truth λ under sharding follows:
the same draws give the same λ̂ (see tests/estimate/test_known_truth.py for the truths themselves).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from llc_service.sinks import read_draws, read_summary
from llc_service.worker.measure import measure_checkpoint
from tests.helpers.checkpoints import make_checkpoint
from tests.helpers.measure import small_config

SETTINGS = dict(device="cpu", num_chains=2, num_draws=12, batch_size=8, chain_batching="off", mala_acceptance=False,
                progress=False)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("sharded") / "run" / "step3", arch="gpt_neox", sharded=True)


def _measure(ckpt, data, out, **overrides):
    row = measure_checkpoint(str(ckpt), data, str(out), small_config(**{**SETTINGS, **overrides}), use_wandb=False)
    return row, read_draws(str(out))


def _agree(sharded, plain, draws_s, draws_p):
    """Same chains, same draws (relative 1e-5), same L(w*), hence the same λ̂ per chain."""
    assert sharded["status"] == plain["status"] == "ok", (sharded.get("error"), plain.get("error"))
    assert sharded["config_hash"] == plain["config_hash"] and sharded["num_params"] == plain["num_params"]
    assert sharded["init_loss"] == pytest.approx(plain["init_loss"], rel=1e-6)
    a = draws_s.sort_values(["chain", "draw"])["loss"].to_numpy()
    b = draws_p.sort_values(["chain", "draw"])["loss"].to_numpy()
    assert a.shape == b.shape == (SETTINGS["num_chains"] * SETTINGS["num_draws"],) and np.isfinite(a).all()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=0)
    # λ̂ = nβ (mean draw loss − L(w*)): its error is nβ times the loss error, about 1e-5 of the loss
    tol = plain["nbeta"] * 2e-5 * plain["init_loss"]
    np.testing.assert_allclose(sharded["llc_per_chain"], plain["llc_per_chain"], rtol=0, atol=tol)
    assert sharded["llc_mean"] == pytest.approx(plain["llc_mean"], abs=tol)


def test_a_model_sharded_over_two_processes_measures_what_one_process_does(ckpt, token_parquet, tmp_path):
    sharded, draws_s = _measure(ckpt, token_parquet, tmp_path / "sharded", processes=2, shard_size=2)
    plain, draws_p = _measure(ckpt, token_parquet, tmp_path / "plain", processes=1)
    assert sharded["shard_size"] == 2 and sharded["world_size"] == 2 and plain["shard_size"] == 1
    _agree(sharded, plain, draws_s, draws_p)
    stored = read_summary(str(tmp_path / "sharded")).iloc[0]
    assert stored["shard_size"] == 2 and json.loads(stored["config_json"])["shard_size"] == 2
    assert stored["weight_norm"] == pytest.approx(plain["weight_norm"], rel=1e-9)  # the shards' parts add up
    assert stored["peak_memory_mb"] > 0


def test_a_bad_checkpoint_is_a_recorded_failure_not_a_hang(tmp_path, token_parquet):
    """A NaN in the last row of a tensor lies in the last process's shard only (each process reads its own slices):
    the weight checks on the shards tell every process, none waits in a collective, and the row names the real
    cause (not "another process failed")."""
    import time

    from tests.helpers.checkpoints import write_nan_weights

    bad = make_checkpoint(tmp_path / "run" / "step9", arch="gpt_neox")
    write_nan_weights(bad, index=-1)
    t0 = time.perf_counter()
    row, _ = _measure(bad, token_parquet, tmp_path / "out", processes=2, shard_size=2)
    assert time.perf_counter() - t0 < 120
    assert row["status"] == "failed" and row["error_type"] == "CheckpointError", row["error"]
    assert "non-finite" in row["error"] and row["error_kind"] == "permanent"
    assert read_summary(str(tmp_path / "out"))["status"].tolist() == ["failed"]


@pytest.mark.slow  # ~60 s: two measurements of four components
def test_components_sharded_over_two_processes_measure_what_one_process_does(ckpt, token_parquet, tmp_path):
    """Refined LLC on the sharded path: element masks sliced to each shard, the same moving elements and noise."""
    spec = [{"name": "l0.h1", "param_filter": "layers\\.0\\.attention\\.", "heads": [1]}, "mlps", "all"]
    sharded, draws_s = _measure(ckpt, token_parquet, tmp_path / "sharded", processes=2, shard_size=2,
                                components=spec)
    plain, draws_p = _measure(ckpt, token_parquet, tmp_path / "plain", processes=1, components=spec)
    rows_s, rows_p = sharded["component_rows"], plain["component_rows"]
    names = ["l0.h1", "layer0.mlp", "layer1.mlp", "all"]
    assert [r["component"] for r in rows_s] == [r["component"] for r in rows_p] == names
    for a, b in zip(rows_s, rows_p):
        assert a["component_params"] == b["component_params"] and a["shard_size"] == 2
        da, db = (d[d["component"] == a["component"]] for d in (draws_s, draws_p))
        _agree(a, b, da, db)
    assert rows_s[-1]["component_params"] == rows_s[-1]["num_params"]


@pytest.mark.parametrize("overrides, words", [
    (dict(baseline="paired"), "baseline"),
    (dict(batch_size=7), "batch_size=7 must divide by shard_size=2"),
    (dict(num_chains=1, processes=4), "2 shard groups"),
])
def test_what_the_sharded_path_cannot_do_is_a_usage_error(ckpt, token_parquet, tmp_path, capsys, overrides, words):
    from llc_service.cli import main
    from tests.helpers.measure import set_args

    settings = {**SETTINGS, "processes": 2, "shard_size": 2, **overrides}
    code = main(["measure", str(ckpt), "--data", token_parquet, "--out", str(tmp_path / "out"), "--no-wandb",
                 *set_args(**settings)])
    err = capsys.readouterr().err
    assert code == 2 and words in err, err
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.slow
def test_two_shard_groups_of_two_processes_measure_what_one_process_does(ckpt, token_parquet, tmp_path):
    """4 processes as a 2 × 2 ("chain", "shard") mesh: two model copies, each over two processes, two chains each."""
    sharded, draws_s = _measure(ckpt, token_parquet, tmp_path / "mesh", processes=4, shard_size=2, num_chains=4)
    plain, draws_p = _measure(ckpt, token_parquet, tmp_path / "plain", processes=1, num_chains=4)
    assert sharded["world_size"] == 4 and sharded["shard_size"] == 2
    global SETTINGS
    saved, SETTINGS = SETTINGS, {**SETTINGS, "num_chains": 4}
    try:
        _agree(sharded, plain, draws_s, draws_p)
    finally:
        SETTINGS = saved


@pytest.mark.slow
def test_weight_restricted_llc_of_a_bf16_checkpoint_sharded_measures_what_one_process_does(token_parquet, tmp_path):
    """``param_filter`` on a bf16 checkpoint: the frozen weights stay bf16 on the shards (FSDP2 gathers them in fp32)
    and the sampled ones are fp32 as everywhere: the same draws as one process."""
    import copy

    import torch

    from tests.helpers.checkpoints import tiny_model, tiny_tokenizer

    ckpt = tmp_path / "run" / "step5"
    copy.deepcopy(tiny_model("gpt_neox")).to(torch.bfloat16).save_pretrained(ckpt, safe_serialization=True)
    tiny_tokenizer().save_pretrained(ckpt)
    only = dict(param_filter="layers\\.1\\.attention\\.")
    sharded, draws_s = _measure(ckpt, token_parquet, tmp_path / "sharded", processes=2, shard_size=2, **only)
    plain, draws_p = _measure(ckpt, token_parquet, tmp_path / "plain", processes=1, **only)
    _agree(sharded, plain, draws_s, draws_p)
