"""Parquet results: round trips (local, S3), retries that overwrite, failures, hidden temp files, DuckDB."""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pytest

from llc_service.sinks import ParquetSink, existing_results, get_sink, read_draws, read_summary
from llc_service.sinks.schema import DRAWS_COLUMNS, SUMMARY_COLUMNS
from llc_service.sinks.store import result_relpath, safe_component
from tests.sinks.records import failed_record, ok_record


def files_under(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def check_ok_row(row: pd.Series, rec, **overrides) -> None:
    s = {**rec.summary, **overrides}
    for key in ("run_id", "checkpoint_step", "checkpoint_uri", "checkpoint_fingerprint", "config_hash", "status",
                "attempt", "llc_mean", "llc_std", "init_loss", "sampler", "epsilon", "num_params", "config_json"):
        assert row[key] == s[key], key
    assert row["schema_version"] == 2 and pd.isna(row["wbic"]) and pd.isna(row["error"])
    assert list(row["llc_per_chain"][:2]) == [12.0, 13.0] and math.isnan(row["llc_per_chain"][2])
    assert list(row["chain_status"]) == ["ok", "ok", "diverged"] and list(row["chains_used"]) == [0, 1]
    np.testing.assert_array_equal(row["weight_sketch"], s["weight_sketch"])
    assert row["started_at"] == pd.Timestamp(s["started_at"]) and str(row["started_at"].tz) == "UTC"


def test_local_round_trip(tmp_path):
    rec = ok_record()
    sink = get_sink("parquet", results_uri=str(tmp_path))
    sink.write(rec)
    sink.close()
    assert files_under(tmp_path) == [
        "draws/run-a/cfg000000001/step-000000000100-fp0123456789abcd-data-dddddddddddddddd.parquet",
        "summary/run-a/cfg000000001/step-000000000100-fp0123456789abcd-data-dddddddddddddddd.parquet",
    ]
    summary = read_summary(str(tmp_path))
    assert list(summary.columns) == list(SUMMARY_COLUMNS) and len(summary) == 1
    assert str(summary["checkpoint_step"].dtype) == "Int64"
    check_ok_row(summary.iloc[0], rec)

    draws = read_draws(str(tmp_path))
    assert list(draws.columns) == list(DRAWS_COLUMNS) and len(draws) == 15
    np.testing.assert_array_equal(draws["loss"].to_numpy(), rec.loss_trace.reshape(-1))
    np.testing.assert_array_equal(draws["running_llc"].to_numpy(), rec.running_llc.reshape(-1))
    assert (draws["run_id"] == "run-a").all() and (draws["checkpoint_step"] == 100).all()


def test_retry_overwrites_instead_of_duplicating(tmp_path):
    sink = ParquetSink(str(tmp_path))
    sink.write(ok_record(attempt=1, seed=1))
    sink.write(ok_record(attempt=2, seed=2))
    sink.write(ok_record(step=300))
    summary = read_summary(str(tmp_path))
    assert summary["checkpoint_step"].tolist() == [100, 300]
    assert summary.loc[summary.checkpoint_step == 100, "attempt"].item() == 2
    draws = read_draws(str(tmp_path))
    assert len(draws) == 2 * 15
    expected = ok_record(attempt=2, seed=2).loss_trace.reshape(-1)
    np.testing.assert_array_equal(draws[draws.checkpoint_step == 100]["loss"].to_numpy(), expected)


def test_failed_measurement_round_trips_without_draws(tmp_path):
    sink = ParquetSink(str(tmp_path))
    sink.write(ok_record(step=200))  # an earlier attempt that left draws behind
    sink.write(failed_record(step=200))
    summary = read_summary(str(tmp_path))
    row = summary.iloc[0]
    assert len(summary) == 1 and row["status"] == "failed" and row["error_kind"] == "permanent"
    assert row["error"].startswith("CheckpointError") and pd.isna(row["llc_mean"]) and row["weight_sketch"] is None
    assert read_draws(str(tmp_path)).empty  # the stale draws are gone: draws always match their summary
    assert existing_results(str(tmp_path)) == {("run-a", "cfg000000001", "fp0123456789abcd", "failed")}


def test_step_none_and_unsafe_run_ids(tmp_path):
    rec = ok_record(run_id="team/run:1 #final", step=None)
    ParquetSink(str(tmp_path)).write(rec)
    rel = result_relpath("summary", rec.summary)
    assert rel.startswith("summary/team_run_1_final-")
    assert rel.endswith("/step-none-stepNone-fp0123456789abcd-data-dddddddddddddddd.parquet")
    assert (tmp_path / rel).exists()
    summary = read_summary(str(tmp_path))
    assert summary["run_id"].item() == "team/run:1 #final" and pd.isna(summary["checkpoint_step"].item())
    assert read_draws(str(tmp_path))["checkpoint_step"].isna().all()
    assert safe_component("a/b") != safe_component("a_b")  # no collisions between distinct run ids
    assert safe_component(".hidden")[0] not in "._" and safe_component("..") not in (".", "..")
    assert safe_component("run-a") == "run-a"


def test_local_write_goes_through_a_hidden_temp_file(tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace

    def spy(src, dst):
        renames.append((os.path.basename(src), os.path.basename(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    ParquetSink(str(tmp_path)).write(ok_record())
    assert len(renames) == 2
    for src, dst in renames:
        assert src.startswith(".") and not src.endswith(".parquet") and dst.endswith(".parquet")
    assert all(not f.rsplit("/", 1)[-1].startswith(".") for f in files_under(tmp_path))  # nothing left behind


def test_readers_ignore_hidden_temp_files_and_tolerate_missing_results(tmp_path):
    assert read_summary(str(tmp_path / "nothing")).empty
    assert list(read_summary(str(tmp_path / "nothing")).columns) == list(SUMMARY_COLUMNS)
    assert list(read_draws(str(tmp_path / "nothing")).columns) == list(DRAWS_COLUMNS)
    assert existing_results(str(tmp_path / "nothing")) == set()
    ParquetSink(str(tmp_path)).write(ok_record())
    folder = tmp_path / "summary" / "run-a" / "cfg000000001"
    (folder / ".step-000000000200-x.parquet.1234.tmp").write_bytes(b"PAR1 torn")  # a writer mid-flight
    (folder / ".step-000000000300-x.parquet").write_bytes(b"PAR1 torn")  # hidden, even if named .parquet
    (tmp_path / "summary" / ".staging").mkdir()
    ParquetSink(str(tmp_path / "summary" / ".staging")).write(ok_record(step=400))
    assert read_summary(str(tmp_path))["checkpoint_step"].tolist() == [100]


def test_files_of_an_older_schema_and_corrupt_files(tmp_path, caplog):
    import pyarrow.parquet as pq

    from llc_service.sinks.schema import summary_table

    old = summary_table([ok_record(step=5).summary]).drop_columns(["weight_sketch", "code_version"])
    folder = tmp_path / "summary" / "run-a" / "cfg000000001"
    folder.mkdir(parents=True)
    pq.write_table(old, folder / "step-000000000005-old.parquet")
    (folder / "step-000000000006-corrupt.parquet").write_bytes(b"not parquet")
    ParquetSink(str(tmp_path)).write(ok_record(step=7))
    summary = read_summary(str(tmp_path))
    assert summary["checkpoint_step"].tolist() == [5, 7] and list(summary.columns) == list(SUMMARY_COLUMNS)
    assert summary["weight_sketch"].iloc[0] is None and len(summary["weight_sketch"].iloc[1]) == 1024
    assert "skipping unreadable result file" in caplog.text and "corrupt" in caplog.text


def test_duckdb_reads_the_results(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    sink = ParquetSink(str(tmp_path))
    sink.write(ok_record(step=100))
    sink.write(ok_record(step=200, seed=3))
    sink.write(failed_record(step=300))
    (tmp_path / "summary" / "run-a" / "cfg000000001" / ".step-x.parquet.tmp").write_bytes(b"torn")
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT checkpoint_step, status, llc_mean, list_count(chains_used) FROM read_parquet("
        f"'{tmp_path}/summary/**/*.parquet', union_by_name = true) ORDER BY checkpoint_step").fetchall()
    assert rows == [(100, "ok", 12.5, 2), (200, "ok", 12.5, 2), (300, "failed", None, None)]
    per_chain = con.execute(
        f"SELECT checkpoint_step, chain, count(*), max(draw) FROM read_parquet('{tmp_path}/draws/**/*.parquet') "
        "GROUP BY ALL ORDER BY ALL").fetchall()
    assert per_chain == [(s, c, 5, 4) for s in (100, 200) for c in range(3)]


def test_s3_round_trip_with_one_put_per_file(s3_bucket, monkeypatch):
    import s3fs

    bucket, options = s3_bucket
    puts = []
    real_pipe = s3fs.S3FileSystem.pipe_file

    def spy(self, path, data, *a, **kw):
        puts.append(path)
        return real_pipe(self, path, data, *a, **kw)

    monkeypatch.setattr(s3fs.S3FileSystem, "pipe_file", spy)
    uri = f"{bucket}/results"
    sink = ParquetSink(uri, storage_options=options)
    rec = ok_record()
    sink.write(rec)
    sink.write(ok_record(attempt=2))  # retry: same keys, overwritten
    sink.write(failed_record(step=200))
    assert sorted(p.split("/results/")[1] for p in puts) == sorted([
        "draws/run-a/cfg000000001/step-000000000100-fp0123456789abcd-data-dddddddddddddddd.parquet",
        "summary/run-a/cfg000000001/step-000000000100-fp0123456789abcd-data-dddddddddddddddd.parquet"] * 2 + [
        "summary/run-a/cfg000000001/step-000000000200-fp0123456789abcd-data-dddddddddddddddd.parquet"])
    summary = read_summary(uri, storage_options=options)
    assert summary["checkpoint_step"].tolist() == [100, 200] and summary["attempt"].tolist() == [2, 1]
    check_ok_row(summary.iloc[0], rec, attempt=2)
    assert len(read_draws(uri, storage_options=options)) == 15
    assert existing_results(uri, options) == {("run-a", "cfg000000001", "fp0123456789abcd", "ok"),
                                              ("run-a", "cfg000000001", "fp0123456789abcd", "failed")}
    # a second writer's result is seen at once (no stale listing caches)
    ParquetSink(uri, storage_options=options).write(ok_record(step=300))
    assert read_summary(uri, storage_options=options)["checkpoint_step"].tolist() == [100, 200, 300]


def _to_legacy_name(root, rec) -> None:
    """Rename a measurement's files to the names versions before the data fingerprint wrote (the row keeps its
    ``data_fingerprint`` column, as those versions wrote it)."""
    for kind in ("summary", "draws"):
        new = root / result_relpath(kind, rec.summary)
        new.rename(new.with_name(new.name.replace("-data-" + rec.summary["data_fingerprint"], "")))


def test_files_of_older_versions_are_found_by_their_data_and_replaced_not_duplicated(tmp_path):
    from llc_service.sinks.store import ResultKey, ResultsStore

    rec = ok_record(step=100)
    other = ok_record(step=200, data_fingerprint="e" * 16)  # measured on another data set by the old version
    for r in (rec, other):
        ParquetSink(str(tmp_path)).write(r)
        _to_legacy_name(tmp_path, r)
    key = ResultKey.from_summary(rec.summary)
    assert key.data == "d" * 16 and key.stem().endswith("-data-" + "d" * 16)
    store = ResultsStore(str(tmp_path))
    other_data = ResultKey.from_summary({**rec.summary, "data_fingerprint": "f" * 16})
    found = store.outcomes([key, other_data])
    assert list(found) == [key] and found[key].status == "ok"  # same data: done; other data: not measured yet
    # step 200's old file names data e...: it is no result of data d
    assert store.outcomes([ResultKey.from_summary({**other.summary, "data_fingerprint": "d" * 16})]) == {}

    ParquetSink(str(tmp_path)).write(ok_record(step=100, attempt=2))  # re-measured: now under the new name
    summary = read_summary(str(tmp_path))
    assert summary["checkpoint_step"].tolist() == [100, 200]  # one row per measurement, never two
    assert summary.loc[summary.checkpoint_step == 100, "attempt"].item() == 2
    assert len(read_draws(str(tmp_path))) == 2 * 15
    names = sorted(p.name for p in (tmp_path / "summary").rglob("*.parquet"))
    assert names == ["step-000000000100-fp0123456789abcd-data-" + "d" * 16 + ".parquet",
                     "step-000000000200-fp0123456789abcd.parquet"]  # another data set's old file stays
