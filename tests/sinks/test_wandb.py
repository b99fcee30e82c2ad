"""wandb sink, offline: one run per checkpoint with a deterministic id, per-draw history, results in the summary."""

from __future__ import annotations

import json
import logging

import pytest

from llc_service.sinks import MeasurementRecord, ParquetSink, get_sink, read_summary
from llc_service.sinks.wandb import WandbSink, wandb_run_id
from tests.sinks.records import failed_record, ok_record
from tests.sinks.wandb_records import read_run


@pytest.fixture
def wandb_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    yield tmp_path
    import wandb

    wandb.teardown()  # wandb caches its settings per process; the next test starts clean


def run_files(root, run_id):
    return sorted((root / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))


def test_run_id_is_deterministic_and_valid():
    a = wandb_run_id("run-a", 100, "cfg")
    assert a == wandb_run_id("run-a", 100, "cfg") and len(a) == 16 and a.isalnum()
    assert len({a, wandb_run_id("run-a", 200, "cfg"), wandb_run_id("run-a", 100, "cfg2"),
                wandb_run_id("run-b", 100, "cfg"), wandb_run_id("run-a", None, "cfg")}) == 5
    # one checkpoint measured on two data sets (data-refined LLC): two runs
    on_a = wandb_run_id("run-a", 100, "cfg", "fp", data_fingerprint="a" * 16)
    assert len({on_a, wandb_run_id("run-a", 100, "cfg", "fp", data_fingerprint="b" * 16),
                wandb_run_id("run-a", 100, "cfg", "fp")}) == 3


def test_offline_run_with_history_summary_and_config(wandb_dir):
    rec = ok_record(chains=3, draws=5)
    sink = get_sink("wandb", project="llc-test", results_uri="s3://results/llc")
    sink.write(rec)
    sink.close()
    rid = wandb_run_id("run-a", 100, "cfg000000001", "fp0123456789abcd", data_fingerprint="d" * 16)
    assert sink.last_run_id == rid
    (path,) = run_files(wandb_dir, rid)
    run = read_run(path)
    assert run["run"].run_id == rid and run["run"].run_group == "run-a" and run["run"].job_type == "llc"
    assert run["run"].display_name == "run-a-step100"

    history = [h for h in run["history"] if "draw" in h]
    assert [h["draw"] for h in history] == [0, 1, 2, 3, 4]
    assert history[2]["loss/chain1"] == pytest.approx(rec.loss_trace[1, 2])
    assert history[4]["llc/chain0"] == pytest.approx(rec.running_llc[0, 4])
    assert history[4]["llc/mean"] == pytest.approx(rec.running_llc[[0, 1], 4].mean())  # chains used only

    assert run["summary"]["llc_mean"] == 12.5 and run["summary"]["status"] == "ok"
    assert run["summary"]["init_loss"] == 2.25 and run["exit_code"] == 0
    cfg = run["config"]
    assert cfg["nbeta"] == 30.0 and cfg["config_hash"] == "cfg000000001"
    assert cfg["checkpoint_fingerprint"] == "fp0123456789abcd"
    assert cfg["results_summary_file"] == (
        "s3://results/llc/summary/run-a/cfg000000001/step-000000000100-fp0123456789abcd-data-dddddddddddddddd.parquet")


def test_config_never_carries_credentials():
    rec = ok_record()
    opts = {"key": "AKIA", "secret": "s3cr3t", "anon": False,
            "client_kwargs": {"endpoint_url": "http://minio:9000", "aws_session_token": "tok"}}
    summary = {**rec.summary, "config_json": json.dumps({"nbeta": 30.0, "storage_options": opts})}
    cfg = WandbSink("p").config_for(summary)
    assert cfg["storage_options"] == {"key": "<redacted>", "secret": "<redacted>", "anon": False,
                                      "client_kwargs": {"endpoint_url": "http://minio:9000",
                                                        "aws_session_token": "<redacted>"}}
    assert cfg["nbeta"] == 30.0 and cfg["run_id"] == "run-a"


def test_failed_measurement_is_a_failed_run(wandb_dir):
    sink = WandbSink("llc-test")
    sink.write(failed_record(step=200))
    (path,) = run_files(wandb_dir, wandb_run_id("run-a", 200, "cfg000000001", "fp0123456789abcd",
                                                  data_fingerprint="d" * 16))
    run = read_run(path)
    assert run["summary"]["status"] == "failed" and run["summary"]["error"].startswith("CheckpointError")
    assert run["exit_code"] == 1 and not [h for h in run["history"] if "draw" in h]


def test_wandb_failure_never_raises_and_parquet_survives(wandb_dir, tmp_path, monkeypatch, caplog):
    import wandb

    def broken_init(*a, **k):
        raise wandb.errors.UsageError("api_key not configured (no-tty)")

    monkeypatch.setattr(wandb, "init", broken_init)
    rec: MeasurementRecord = ok_record()
    ParquetSink(str(tmp_path / "results")).write(rec)
    with caplog.at_level(logging.WARNING, logger="llc_service.sinks.wandb"):
        WandbSink("llc-test").write(rec)
    assert "wandb logging of run-a step 100 failed (UsageError" in caplog.text
    assert read_summary(str(tmp_path / "results"))["llc_mean"].item() == 12.5
