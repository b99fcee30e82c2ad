"""Sink protocol, registry and the stdout line."""

from __future__ import annotations

import io

import pytest

from llc_service.sinks import MeasurementRecord, ParquetSink, Sink, StdoutSink, get_sink, register_sink
from llc_service.sinks.base import summary_line
from tests.sinks.records import failed_record, ok_record


def test_stdout_line_for_ok_and_failed(capsys):
    sink = get_sink("stdout")
    sink.write(ok_record())
    sink.write(failed_record())
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "run-a step 100:  λ̂ = 12.5 ± 0.75  L(w*) = 2.2500  chains 2/3  3.0 s  [ok]"
    assert out[1] == ("run-a step 200:  0.5 s  [failed]  (permanent) CheckpointError: model.safetensors is missing")


def test_stdout_to_a_stream_and_step_none():
    buf = io.StringIO()
    rec = ok_record(step=None)
    StdoutSink(stream=buf).write(MeasurementRecord({**rec.summary, "status": "diverged", "llc_mean": None,
                                                    "error": "AllChainsDivergedError: 3 of 3"}))
    assert buf.getvalue() == ("run-a step -:  λ̂ = n/a ± 0.75  L(w*) = 2.2500  chains 2/3  3.0 s  [diverged]  "
                              "AllChainsDivergedError: 3 of 3\n")
    assert summary_line({"run_id": "r"}).startswith("r step -:")


def test_registry(tmp_path, monkeypatch):
    from llc_service.sinks import base

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # the test's sink does not outlive the test
    assert isinstance(get_sink("parquet", results_uri=str(tmp_path)), ParquetSink)
    with pytest.raises(ValueError, match="unknown sink 'csv'; known sinks: parquet, stdout, wandb"):
        get_sink("csv")

    @register_sink("memory-test")
    class Memory:
        def __init__(self, into):
            self.into = into

        def write(self, record):
            self.into.append(record)

        def close(self):
            pass

    got = []
    sink = get_sink("memory-test", into=got)
    sink.write(ok_record())
    assert isinstance(sink, Sink) and len(got) == 1
    assert isinstance(StdoutSink(), Sink) and isinstance(ParquetSink(str(tmp_path)), Sink)


def test_sinks_from_the_config_parquet_first_views_after_and_their_errors_caught(tmp_path, monkeypatch, caplog):
    from llc_service.config import MeasureConfig, build_config
    from llc_service.sinks import base, read_summary, sinks_for, write_all

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))

    @register_sink("broken")
    class Broken:
        @classmethod
        def from_config(cls, cfg, results_uri):
            return cls()

        def write(self, record):
            raise RuntimeError("view down (on purpose)")

        def close(self):
            pass

    cfg = build_config(MeasureConfig, {}, ["sinks=broken,stdout,wandb", "wandb_project=null"])
    specs = sinks_for(cfg, str(tmp_path))
    assert [name for name, _ in specs] == ["parquet", "broken", "stdout"]  # wandb: no project, so no view
    assert [n for n, _ in sinks_for(build_config(MeasureConfig, {}, []), str(tmp_path), use_wandb=False)] == \
        ["parquet"]
    write_all(specs, ok_record())
    assert len(read_summary(str(tmp_path))) == 1  # the source of truth is written whatever the views do
    assert "broken logging failed" in caplog.text and "the Parquet result is written" in caplog.text
    with pytest.raises(ValueError, match="unknown sink"):
        build_config(MeasureConfig, {}, ["sinks=csv"])


def test_parquet_errors_propagate(tmp_path):
    from llc_service.config import MeasureConfig
    from llc_service.sinks import sinks_for, write_all

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OSError):
        write_all(sinks_for(MeasureConfig(sinks=[]), str(tmp_path / "file" / "results")), ok_record())
