"""Measure one checkpoint end to end through the Python entry point: bucket → load → data → chains → Parquet/wandb.

Real tiny checkpoints (``save_pretrained``), real token data, Parquet read back with the package's readers, wandb in
offline mode with its run files parsed, S3 through a moto server on 127.0.0.1.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from llc_service import read_draws, read_summary
from llc_service.worker.measure import chains_for_rank, measure_checkpoint
from tests.helpers.checkpoints import (
    Store,
    make_checkpoint,
    make_pickle_checkpoint,
    moto_s3,
    set_config,
    shard_files,
    write_nan_weights,
)
from tests.helpers.measure import small_config


def _wandb_files(wandb_dir) -> list:
    return sorted(wandb_dir.rglob("run-*.wandb"))


def test_local_checkpoint_to_parquet_and_wandb(tmp_path, token_parquet, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    (tmp_path / "wb").mkdir()
    ckpt = make_checkpoint(tmp_path / "bucket" / "pythia-tiny" / "step100")
    out = tmp_path / "results"
    cfg = small_config()
    row = measure_checkpoint(str(ckpt), token_parquet, str(out), cfg)

    assert row["status"] == "ok", row["error"]
    summary = read_summary(str(out))
    assert len(summary) == 1
    s = summary.iloc[0]
    assert (s.run_id, int(s.checkpoint_step), s.status) == ("pythia-tiny", 100, "ok")
    assert s.model_type == "gpt_neox" and s.num_params > 10_000
    assert math.isfinite(s.llc_mean) and math.isfinite(s.init_loss) and s.init_loss > 0
    assert list(s.chains_used) == [0, 1, 2] and len(s.llc_per_chain) == 3
    assert s.llc_mean == pytest.approx(float(np.mean(s.llc_per_chain)))
    assert s.config_hash == cfg.config_hash() and s.world_size == 1
    assert s.data_fingerprint and s.checkpoint_fingerprint and s.checkpoint_fingerprint != "unknown"
    assert json.loads(s.config_json)["epsilon"] == cfg.epsilon
    # chain diagnostics (schema 2): R̂ and ESS from ArviZ, per-chain MALA acceptance, the baseline used
    assert s.baseline == "init" and math.isfinite(s.rhat) and s.rhat > 0.9 and 0 < s.ess_bulk
    assert len(s.mala_per_chain) == 3 and all(0 <= a <= 1 for a in s.mala_per_chain)
    assert s.mala_acceptance == pytest.approx(float(np.mean(s.mala_per_chain)))

    draws = read_draws(str(out))
    assert len(draws) == cfg.num_chains * cfg.num_draws
    assert sorted(draws.chain.unique()) == [0, 1, 2]
    # the running λ̂ of the last draw of each chain is that chain's λ̂
    last = draws[draws.draw == cfg.num_draws - 1].sort_values("chain")
    np.testing.assert_allclose(last.running_llc.to_numpy(), np.asarray(s.llc_per_chain), rtol=1e-9)

    files = _wandb_files(tmp_path / "wb")
    assert len(files) == 1, files  # one offline run for this measurement
    from tests.sinks.wandb_records import wait_for_exit

    kinds = {r.WhichOneof("record_type") for r in wait_for_exit(files[0])}
    assert {"run", "history", "summary"} <= kinds


def test_retry_overwrites_instead_of_duplicating(tmp_path, token_parquet):
    ckpt = make_checkpoint(tmp_path / "run" / "step7")
    out = str(tmp_path / "results")
    cfg = small_config(num_chains=2, num_draws=6)
    first = measure_checkpoint(str(ckpt), token_parquet, out, cfg, use_wandb=False)
    second = measure_checkpoint(str(ckpt), token_parquet, out, cfg, use_wandb=False, attempt=2)
    assert first["status"] == second["status"] == "ok"
    summary = read_summary(out)
    assert len(summary) == 1 and int(summary.attempt.iloc[0]) == 2
    assert first["llc_mean"] == second["llc_mean"]  # same seed, same device: bit-identical
    assert len(read_draws(out)) == 2 * 6
    # another config is another measurement, next to the first
    measure_checkpoint(str(ckpt), token_parquet, out, small_config(num_chains=2, num_draws=6, seed=4),
                       use_wandb=False)
    assert len(read_summary(out)) == 2


def test_trainer_style_sharded_llama_on_s3(tmp_path, token_parquet):
    local = make_checkpoint(tmp_path / "local", arch="llama", sharded=True, trainer_step=250)
    assert len(shard_files(local)) >= 2
    with moto_s3(buckets=("ckpts", "results")) as (_, so):
        store = Store("s3://ckpts/exp-llama", so)
        uri = store.put(local, "checkpoint-250")
        Store("s3://ckpts/data", so).put_file(token_parquet, "val.parquet")
        cfg = small_config(storage_options=so, cache_dir=str(tmp_path / "cache"))
        row = measure_checkpoint(uri, "s3://ckpts/data/val.parquet", "s3://results/llc", cfg, use_wandb=False)
        assert row["status"] == "ok", row["error"]
        summary = read_summary("s3://results/llc", storage_options=so)
        assert len(summary) == 1
        s = summary.iloc[0]
        assert (s.run_id, int(s.checkpoint_step), s.model_type) == ("exp-llama", 250, "llama")
        assert len(read_draws("s3://results/llc", storage_options=so)) == cfg.num_chains * cfg.num_draws
        # credentials never reach the stored config
        stored = json.loads(s.config_json)["storage_options"]
        assert stored["secret"] == "<redacted>" and stored["key"] == "<redacted>"
    # the remote checkpoint was copied into the node cache and its lease released afterwards
    leases = [p for p in (tmp_path / "cache" / ".leases").rglob("*") if p.is_file()]
    assert list((tmp_path / "cache").iterdir()) and not leases


@pytest.mark.parametrize("breakage, reason", [
    ("pickle", "pickle"),
    ("custom_code", "custom code"),
    ("nan", "non-finite"),
    ("missing_shard", "shard"),
    ("truncated", "truncated"),
])
def test_refused_checkpoint_gets_a_failed_row(tmp_path, token_parquet, breakage, reason):
    folder = tmp_path / "run" / "step3"
    if breakage == "pickle":
        make_pickle_checkpoint(folder)
        (folder / "trainer_state.json").write_text('{"global_step": 3}')
    else:  # the trainer's marker file says "finished": a short file or a missing shard is damage, not progress
        make_checkpoint(folder, sharded=breakage == "missing_shard", trainer_step=3)
    if breakage == "custom_code":
        set_config(folder, auto_map={"AutoModelForCausalLM": "modeling_evil.EvilLM"})
    elif breakage == "nan":
        write_nan_weights(folder)
    elif breakage == "missing_shard":
        shard_files(folder)[-1].unlink()
    elif breakage == "truncated":
        w = folder / "model.safetensors"
        w.write_bytes(w.read_bytes()[:-1000])
    out = str(tmp_path / "results")
    cfg = small_config(marker_file="trainer_state.json")
    row = measure_checkpoint(str(folder), token_parquet, out, cfg, use_wandb=False)
    assert row["status"] == "failed"
    summary = read_summary(out)
    assert len(summary) == 1
    s = summary.iloc[0]
    assert s.status == "failed" and reason in s.error.lower(), s.error
    assert int(s.checkpoint_step) == 3 and s.run_id == "run"
    assert s.error_kind == "permanent"  # retrying will not help
    assert len(read_draws(out)) == 0


def test_checkpoint_still_being_written_is_a_transient_failure(tmp_path, token_parquet):
    folder = make_checkpoint(tmp_path / "run" / "step4")
    w = folder / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-1000])  # no marker configured: maybe the trainer is still writing it
    row = measure_checkpoint(str(folder), token_parquet, str(tmp_path / "out"), small_config(), use_wandb=False)
    assert row["status"] == "failed" and row["error_kind"] == "transient"
    assert "incomplete" in row["error"] and "bytes" in row["error"]


def test_unreadable_checkpoints_do_not_share_a_failed_row(tmp_path, token_parquet):
    out = str(tmp_path / "results")
    for name in ("a", "b"):
        row = measure_checkpoint(str(tmp_path / "nowhere" / name), token_parquet, out, small_config(),
                                 use_wandb=False)
        assert row["status"] == "failed"
    summary = read_summary(out)
    assert len(summary) == 2 and summary.checkpoint_fingerprint.nunique() == 2


def test_bad_data_is_a_clear_failure(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ckpt = make_checkpoint(tmp_path / "run" / "step1")
    data = tmp_path / "few.parquet"
    pq.write_table(pa.table({"input_ids": [[1, 2, 3, 4]] * 3}), data)
    row = measure_checkpoint(str(ckpt), str(data), str(tmp_path / "out"), small_config(), use_wandb=False)
    assert row["status"] == "failed" and "fewer than the 8 required" in row["error"]


def test_all_chains_diverging_is_recorded_not_a_number(tmp_path, token_parquet):
    ckpt = make_checkpoint(tmp_path / "run" / "step1")
    out = str(tmp_path / "out")
    row = measure_checkpoint(str(ckpt), token_parquet, out, small_config(epsilon=1e3, nbeta=1e4), use_wandb=False)
    assert row["status"] == "diverged" and row.get("llc_mean") is None
    s = read_summary(out).iloc[0]
    assert s.status == "diverged" and "diverged" in s.error.lower()
    assert s.llc_mean is None or not math.isfinite(s.llc_mean)


@pytest.mark.parametrize("chains, world, expect", [
    (4, 2, [[0, 1], [2, 3]]), (5, 2, [[0, 1, 2], [3, 4]]), (3, 3, [[0], [1], [2]]), (7, 3, [[0, 1, 2], [3, 4], [5, 6]]),
])
def test_chain_split_is_contiguous_and_complete(chains, world, expect):
    assert [chains_for_rank(chains, r, world) for r in range(world)] == expect


def test_more_processes_than_chains_is_a_usage_error(tmp_path, token_parquet):
    ckpt = make_checkpoint(tmp_path / "run" / "step1")
    with pytest.raises(ValueError, match="more than num_chains"):
        measure_checkpoint(str(ckpt), token_parquet, str(tmp_path / "out"), small_config(num_chains=2, processes=3))
    assert not (tmp_path / "out").exists()
