"""The report of refined-LLC results: one trajectory per component, read back from real Parquet files."""

from __future__ import annotations

from llc_service.report import run_report
from llc_service.sinks import MeasurementRecord, ParquetSink, read_summary
from tests.sinks.records import ok_record


def write_measurement(root, step, components, value_of):
    """One measurement (one checkpoint) with a row per component, as the worker writes it."""
    base = ok_record(step=step, fingerprint=f"fp{step:04d}")
    records = []
    for comp in components:
        s = {**base.summary, "component": comp, "llc_mean": value_of(comp, step), "component_params": 100,
             "component_seconds": 1.5}
        records.append(MeasurementRecord(s, base.loss_trace, base.running_llc))
    ParquetSink(str(root)).write_group(records)


def test_report_draws_one_trajectory_per_component_and_keeps_all_in_the_main_table(tmp_path):
    comps = ["layer0.head0", "layer0.head1", "layer1.head0", "all"]
    value = lambda comp, step: (10.0 if comp == "all" else 1.0 + comps.index(comp)) + step / 100  # noqa: E731
    for step in (10, 100, 1000):
        write_measurement(tmp_path, step, comps, value)
    s = read_summary(str(tmp_path))
    assert len(s) == 12 and set(s.component) == set(comps)
    text = run_report(str(tmp_path), plot=str(tmp_path / "llc.png"), echo=False)
    assert "components of run-a" in text
    lines = {ln.split()[0]: ln.split()[1:] for ln in text.splitlines() if ln.startswith("layer")}
    assert lines["layer1.head0"] == ["3.1", "4", "13"] and lines["layer0.head0"] == ["1.1", "2", "11"]
    # the whole-model ("all") rows are the main trajectory (table and plot), not a component panel
    assert "all " not in text.split("components of")[1]
    assert (tmp_path / "llc.png").stat().st_size > 1000
    assert (tmp_path / "llc-components.png").stat().st_size > 1000


def test_many_components_become_a_heat_map_and_retries_do_not_duplicate(tmp_path):
    comps = [f"layer{i}.head{h}" for i in range(4) for h in range(4)]  # 16 > MAX_PANELS
    for step in (1, 2):
        write_measurement(tmp_path, step, comps, lambda c, s: float(s))
    write_measurement(tmp_path, 2, comps, lambda c, s: 5.0)  # a retry of step 2 overwrites its file
    text = run_report(str(tmp_path), plot=str(tmp_path / "p.png"), echo=False)
    rows = [ln.split() for ln in text.splitlines() if ln.startswith("layer")]
    assert len(rows) == 16 and all(r[1:] == ["1", "5"] for r in rows)
    assert (tmp_path / "p-components.png").exists()


def test_component_series_in_the_wandb_trajectory(tmp_path, monkeypatch):
    from tests.sinks.wandb_records import wait_for_exit

    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    (tmp_path / "wb").mkdir()
    comps = ["layer0.mlp", "layer1.mlp"]
    for step in (10, 20):
        write_measurement(tmp_path / "r", step, comps, lambda c, s: s + comps.index(c))
    text = run_report(str(tmp_path / "r"), wandb_project="p", echo=False)
    assert "wandb component trajectory runs: " in text
    files = sorted((tmp_path / "wb").rglob("run-*.wandb"))
    assert len(files) == 1
    history = []
    for rec in wait_for_exit(files[0]):
        if rec.WhichOneof("record_type") == "history":
            history.append({item.nested_key[0] if item.nested_key else item.key: item.value_json
                            for item in rec.history.item})
    logged = [{k: v for k, v in h.items() if k.startswith("llc/")} for h in history]
    assert {"llc/layer0.mlp": "10", "llc/layer1.mlp": "11"} in logged
    assert {"llc/layer0.mlp": "20", "llc/layer1.mlp": "21"} in logged
