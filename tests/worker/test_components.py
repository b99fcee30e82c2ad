"""Refined LLC end to end: one checkpoint measurement with ``components`` writes one row per component."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import numpy as np

from llc_service import read_draws, read_summary
from llc_service.worker.measure import measure_checkpoint
from tests.helpers.checkpoints import make_checkpoint
from tests.helpers.measure import set_args, small_config


def test_attention_heads_and_all_give_one_row_each_sharing_one_init_loss(tmp_path, token_parquet, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    (tmp_path / "wb").mkdir()
    ckpt = make_checkpoint(tmp_path / "bucket" / "tiny" / "step100")  # GPT-NeoX, 2 layers, 2 heads
    out = str(tmp_path / "results")
    cfg = small_config(components=["attention_heads", "mlps", "all"], num_chains=2, num_draws=6)
    row = measure_checkpoint(str(ckpt), token_parquet, out, cfg)
    names = ["layer0.head0", "layer0.head1", "layer1.head0", "layer1.head1", "layer0.mlp", "layer1.mlp", "all"]
    assert [r["component"] for r in row["component_rows"]] == names
    s = read_summary(out)
    assert list(s.component) == names and set(s.status) == {"ok"}
    assert s.init_loss.nunique() == 1  # L(w*) computed once, shared
    assert s.config_hash.nunique() == 1 and s.checkpoint_fingerprint.nunique() == 1
    heads = s[s.component.str.contains("head")]
    hidden = 32  # the fixture model: hidden 32, 2 heads of 16
    assert set(heads.component_params) == {3 * 16 * (hidden + 1) + 16 * hidden}
    whole = s[s.component == "all"].iloc[0]
    assert whole.component_params == whole.num_params
    assert (s.component_seconds > 0).all() and (s.component_seconds <= s.wall_seconds).all()
    # every component has its own chains in the draws file; the running λ̂ ends at that component's λ̂
    d = read_draws(out)
    assert sorted(d.component.unique()) == sorted(names)
    for _, r in s.iterrows():
        last = d[(d.component == r.component) & (d.draw == cfg.num_draws - 1)].sort_values("chain")
        np.testing.assert_allclose(last.running_llc.to_numpy(), np.asarray(r.llc_per_chain), rtol=1e-9)
    assert all(math.isfinite(v) for v in s.llc_mean)
    # one wandb run per component
    assert len(list((tmp_path / "wb").rglob("run-*.wandb"))) == len(names)


def test_the_all_component_equals_a_plain_measurement(tmp_path, token_parquet):
    ckpt = make_checkpoint(tmp_path / "b" / "run" / "step5")
    small = dict(num_chains=2, num_draws=6)
    plain = measure_checkpoint(str(ckpt), token_parquet, str(tmp_path / "r1"), small_config(**small),
                               use_wandb=False)
    emb = {"name": "embeddings", "param_filter": "embed_in"}
    refined = measure_checkpoint(str(ckpt), token_parquet, str(tmp_path / "r2"),
                                 small_config(components=[emb, "all"], **small), use_wandb=False)
    whole = refined["component_rows"][-1]
    assert whole["component"] == "all"
    assert whole["llc_per_chain"] == plain["llc_per_chain"] and whole["init_loss"] == plain["init_loss"]
    assert plain["config_hash"] != refined["config_hash"]  # another measurement, next to the plain one


# an explicit entry naming the slice of the preset's layer1.head1: the same elements, so the same estimate
EXPLICIT = '{"name": "l1.h1", "param_filter": "layers\\\\.1\\\\.attention\\\\.", "heads": [1]}'


def test_cli_components_over_two_processes_write_the_rows_of_one(tmp_path, token_parquet):
    """``llc-service measure --processes 2 --set components=...`` (torchrun, 2 gloo processes, one chain each) writes
    the rows one process writes: same components in the same order, same elements per component, the same
    per-chain λ̂ bit for bit (chains are seeded by chain index, never by rank), under the same config hash."""
    ckpt = make_checkpoint(tmp_path / "b" / "run" / "step5")
    small = dict(num_chains=2, num_draws=8)
    spec = f'[{EXPLICIT}, "attention_heads", "all"]'
    one = measure_checkpoint(str(ckpt), token_parquet, str(tmp_path / "r1"),
                             small_config(components=json.loads(spec), **small), use_wandb=False)
    proc = subprocess.run([sys.executable, "-m", "llc_service.cli", "measure", str(ckpt), "--data", token_parquet,
                           "--out", str(tmp_path / "r2"), "--no-wandb", "--processes", "2", *set_args(**small),
                           "--set", f"components={spec}"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = ["l1.h1", "layer0.head0", "layer0.head1", "layer1.head0", "layer1.head1", "all"]
    for name in names:  # one printed line per component
        assert re.search(rf"run step 5 \[{re.escape(name)}\]:  λ̂ = \S+ ± .*\[ok\]", proc.stdout), proc.stdout
    s1, s2 = read_summary(str(tmp_path / "r1")), read_summary(str(tmp_path / "r2"))
    assert list(s1.component) == list(s2.component) == names
    assert set(s1.world_size) == {1} and set(s2.world_size) == {2} and set(s2.status) == {"ok"}
    assert list(s2.component_params) == list(s1.component_params)
    assert set(s2.component_params[:-1]) == {3 * 16 * (32 + 1) + 16 * 32}  # a head of the hidden-32 fixture
    assert s2.component_params.iloc[-1] == s2.num_params.iloc[-1] == one["num_params"]
    assert s2.config_hash.nunique() == 1 and s2.config_hash.iloc[0] == one["config_hash"]
    assert (s2.init_loss == one["init_loss"]).all()
    for a, b in zip(s1.llc_per_chain, s2.llc_per_chain):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert all(math.isfinite(v) for v in s2.llc_mean)
    # the explicit entry and the preset's layer1.head1 sample the same elements: the same chains, bit for bit
    np.testing.assert_array_equal(np.asarray(s2.llc_per_chain.iloc[0]), np.asarray(s2.llc_per_chain.iloc[4]))


def test_data_refined_llc_keeps_each_data_set(tmp_path, token_parquet):
    """One checkpoint on two data sets under ONE run id: two rows, one per data fingerprint (the data is part of
    the result identity), with different L(w*) and λ̂; measuring again on one data set replaces only its row."""
    from tests.helpers.measure import write_token_parquet

    other = write_token_parquet(tmp_path / "other.parquet", rows=48)
    ckpt = make_checkpoint(tmp_path / "b" / "run" / "step5")
    out = str(tmp_path / "results")
    cfg = small_config(num_chains=2, num_draws=6)
    a = measure_checkpoint(str(ckpt), token_parquet, out, cfg, run_id="run", use_wandb=False)
    b = measure_checkpoint(str(ckpt), other, out, cfg, run_id="run", use_wandb=False)
    s = read_summary(out)
    assert len(s) == 2 and s.data_fingerprint.nunique() == 2 and set(s.data_uri) == {token_parquet, other}
    assert a["init_loss"] != b["init_loss"] and a["llc_mean"] != b["llc_mean"]
    again = measure_checkpoint(str(ckpt), other, out, cfg, run_id="run", attempt=2, use_wandb=False)
    s = read_summary(out)
    assert len(s) == 2 and sorted(s.attempt) == [1, 2]
    assert s.loc[s.attempt == 2, "data_fingerprint"].item() == again["data_fingerprint"] == b["data_fingerprint"]
