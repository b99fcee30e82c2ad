"""The canonical schema is the one in docs/ARCHITECTURE.md, and the builders refuse what it does not hold."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from llc_service.sinks.schema import DRAWS_SCHEMA, SCHEMA_VERSION, SUMMARY_SCHEMA, conform, draws_table, summary_table
from tests.sinks.records import failed_record, ok_record

TS = pa.timestamp("us", tz="UTC")
EXPECTED_SUMMARY = {
    "schema_version": pa.int32(), "run_id": pa.string(), "checkpoint_step": pa.int64(), "checkpoint_uri": pa.string(),
    "checkpoint_fingerprint": pa.string(), "config_hash": pa.string(), "component": pa.string(), "status": pa.string(),
    "error": pa.string(), "error_kind": pa.string(), "error_type": pa.string(), "attempt": pa.int32(),
    "llc_mean": pa.float64(), "llc_std": pa.float64(),
    "init_loss": pa.float64(), "llc_per_chain": pa.list_(pa.float64()), "chain_status": pa.list_(pa.string()),
    "chains_used": pa.list_(pa.int32()), "num_chains_used": pa.int32(), "wbic": pa.float64(), "sampler": pa.string(),
    "epsilon": pa.float64(), "nbeta": pa.float64(), "gamma": pa.float64(), "num_chains": pa.int32(),
    "num_draws": pa.int32(), "num_burnin": pa.int32(), "batch_size": pa.int32(), "seed": pa.int64(),
    "config_json": pa.string(), "data_uri": pa.string(), "data_fingerprint": pa.string(), "model_type": pa.string(),
    "num_params": pa.int64(), "weight_norm": pa.float64(), "weight_sketch": pa.list_(pa.float32()),
    "device": pa.string(), "world_size": pa.int32(), "shard_size": pa.int32(),
    "peak_memory_mb": pa.float64(), "code_version": pa.string(), "started_at": TS, "ended_at": TS,
    "wall_seconds": pa.float64(), "component_params": pa.int64(), "component_seconds": pa.float64(),
}
EXPECTED_SUMMARY_V2 = {"baseline": pa.string(), "rhat": pa.float64(), "ess_bulk": pa.float64(),
                       "mala_acceptance": pa.float64(), "mala_per_chain": pa.list_(pa.float64())}
_at = list(EXPECTED_SUMMARY).index("wbic") + 1
EXPECTED_SUMMARY = dict(list(EXPECTED_SUMMARY.items())[:_at] + list(EXPECTED_SUMMARY_V2.items())
                        + list(EXPECTED_SUMMARY.items())[_at:])
EXPECTED_DRAWS = {
    "schema_version": pa.int32(), "run_id": pa.string(), "checkpoint_step": pa.int64(),
    "checkpoint_fingerprint": pa.string(), "config_hash": pa.string(), "component": pa.string(), "chain": pa.int32(),
    "draw": pa.int32(),
    "loss": pa.float64(), "running_llc": pa.float64(),
}


def test_schemas_match_the_architecture_doc():
    assert SCHEMA_VERSION == 2
    assert {f.name: f.type for f in SUMMARY_SCHEMA} == EXPECTED_SUMMARY
    assert list(SUMMARY_SCHEMA.names) == list(EXPECTED_SUMMARY)
    assert {f.name: f.type for f in DRAWS_SCHEMA} == EXPECTED_DRAWS
    for nullable in ("checkpoint_step", "error", "error_kind", "wbic", "llc_mean"):
        assert SUMMARY_SCHEMA.field(nullable).nullable


def test_summary_table_fills_nulls_and_version():
    table = summary_table([failed_record().summary, ok_record().summary])
    assert table.schema.equals(SUMMARY_SCHEMA)
    failed, ok = table.to_pylist()
    assert failed["schema_version"] == ok["schema_version"] == 2
    assert failed["llc_mean"] is None and failed["weight_sketch"] is None and failed["status"] == "failed"
    assert ok["chains_used"] == [0, 1] and len(ok["weight_sketch"]) == 1024


@pytest.mark.parametrize("change, message", [
    ({"llc_mea": 1.0}, r"unknown column\(s\) \['llc_mea'\]"),
    ({"config_hash": None}, r"required column\(s\) \['config_hash'\]"),
    ({"status": "done"}, "status 'done' not in"),
    ({"error_kind": "maybe"}, "error_kind 'maybe' not in"),
    ({"schema_version": 1}, "schema_version 1 != 2"),
])
def test_summary_table_rejects(change, message):
    with pytest.raises(ValueError, match=message):
        summary_table([{**ok_record().summary, **change}])


def test_draws_table_is_chain_major_and_keeps_nan():
    rec = ok_record(chains=2, draws=3)
    table = draws_table(rec.summary, rec.loss_trace, rec.running_llc)
    assert table.schema.equals(DRAWS_SCHEMA) and table.num_rows == 6
    assert table.column("chain").to_pylist() == [0, 0, 0, 1, 1, 1]
    assert table.column("draw").to_pylist() == [0, 1, 2, 0, 1, 2]
    np.testing.assert_array_equal(table.column("loss").to_numpy(), rec.loss_trace.reshape(-1))
    no_running = draws_table({**rec.summary, "checkpoint_step": None}, rec.loss_trace)
    assert no_running.column("running_llc").null_count == 6
    assert no_running.column("checkpoint_step").null_count == 6
    with pytest.raises(ValueError, match="shape"):
        draws_table(rec.summary, rec.loss_trace, rec.running_llc[:, :2])
    with pytest.raises(ValueError, match=r"\(chains, draws\)"):
        draws_table(rec.summary, rec.loss_trace[0])


def test_conform_reads_other_versions_of_a_file():
    old = pa.table({"run_id": ["r"], "checkpoint_step": pa.array([5], pa.int32()), "future_column": [1]})
    table = conform(old, SUMMARY_SCHEMA)
    assert table.schema.names == SUMMARY_SCHEMA.names
    assert table.column("checkpoint_step").type == pa.int64() and table.column("llc_mean").null_count == 1


def test_a_version_1_file_reads_with_null_diagnostics(tmp_path):
    """Results written before the diagnostics existed still read, with the new columns null."""
    import pyarrow.parquet as pq

    from llc_service.sinks import read_summary

    v2 = summary_table([ok_record().summary])
    v1 = v2.drop_columns(list(EXPECTED_SUMMARY_V2)).replace_schema_metadata({b"llc_service.schema_version": b"1"})
    v1 = v1.set_column(0, "schema_version", pa.array([1], pa.int32()))
    (tmp_path / "summary").mkdir()
    pq.write_table(v1, tmp_path / "summary" / "old.parquet")
    df = read_summary(str(tmp_path))
    assert len(df) == 1 and df["schema_version"].iloc[0] == 1 and df["rhat"].isna().all()
    assert df["llc_mean"].iloc[0] == ok_record().summary["llc_mean"]
