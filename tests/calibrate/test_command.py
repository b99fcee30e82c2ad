"""``llc-service calibrate`` end to end on a tiny real checkpoint: the three files, and the YAML measure accepts."""

import math

import pandas as pd
import pytest
import yaml

from llc_service.cli import main
from tests.helpers.checkpoints import make_checkpoint
from tests.helpers.measure import set_args


@pytest.mark.slow  # 90 s on the loaded 2-core box (three grid points and one measurement)
def test_calibrate_writes_files_and_recommended_yaml_loads_in_measure(tmp_path, token_parquet, capsys):
    ckpt = make_checkpoint(tmp_path / "bucket" / "run" / "step100")
    out = tmp_path / "cal"
    # a grid where the tiny model's λ̂ settles: three ε, each a ~1 s measurement
    args = ["calibrate", str(ckpt), "--data", token_parquet, "--out", str(out), "-q",
            "--grid", "epsilon=1e-7,3e-7,1e-6", *set_args(num_draws=40, num_burnin=20, num_chains=2)]
    code = main(args)
    text = capsys.readouterr().out
    table = pd.read_parquet(out / "calibration.parquet")
    assert len(table) == 3 and list(table["epsilon"]) == [1e-7, 3e-7, 1e-6]
    assert {"llc_mean", "llc_se", "rhat", "ess_bulk", "mala_acceptance", "verdict", "recommended"} <= set(table)
    assert (out / "calibration.png").stat().st_size > 10_000
    assert "verdict" in text.splitlines()[0]
    if code == 0:
        rec = yaml.safe_load((out / "recommended.yaml").read_text())
        chosen = table[table["recommended"]].iloc[0]
        assert math.isclose(rec["epsilon"], chosen.epsilon) and "storage_options" not in rec
        assert "recommended ε=" in text
        res = tmp_path / "results"
        assert main(["measure", str(ckpt), "--data", token_parquet, "--out", str(res), "--config",
                     str(out / "recommended.yaml"), "--no-wandb", "-q"]) == 0
    else:
        assert code == 1 and "no recommendation" in text and not (out / "recommended.yaml").exists()


def test_no_plateau_exits_1_with_advice(tmp_path, token_parquet, capsys):
    ckpt = make_checkpoint(tmp_path / "bucket" / "run" / "step100")
    out = tmp_path / "cal"
    code = main(["calibrate", str(ckpt), "--data", token_parquet, "--out", str(out), "-q",
                 "--grid", "epsilon=1e-1,1", *set_args(num_draws=20, num_burnin=0, num_chains=2)])
    text = capsys.readouterr().out
    assert code == 1 and "no recommendation" in text and "Try:" in text
    assert (out / "calibration.parquet").exists() and not (out / "recommended.yaml").exists()


def test_bad_grid_is_a_usage_error(tmp_path, token_parquet, capsys):
    assert main(["calibrate", "x", "--data", token_parquet, "--out", str(tmp_path), "--grid", "eps=1"]) == 2
    assert "--grid axis 'eps'" in capsys.readouterr().err


def test_recommended_yaml_round_trips_through_measure(tmp_path, token_parquet):
    """What write_outputs writes for a chosen point is a config `measure --config` accepts, credentials left out."""
    from llc_service.calibration.command import write_outputs
    from llc_service.calibration.run import TABLE_COLUMNS, CalibrationResult
    from tests.helpers.measure import small_config

    cfg = small_config(epsilon=2e-4, storage_options={"key": "secret"})
    row = {c: 0.0 for c in TABLE_COLUMNS} | {"epsilon": 2e-4, "nbeta": cfg.nbeta, "gamma": cfg.gamma,
                                              "chains_diverged": 0, "stationary": True}
    table = pd.DataFrame([row]).assign(verdict="recommended", recommended=True)
    paths = write_outputs(CalibrationResult(table, cfg, "test reason", {}), str(tmp_path / "cal"), cfg)
    text = (tmp_path / "cal" / "recommended.yaml").read_text()
    assert "secret" not in text and yaml.safe_load(text)["epsilon"] == 2e-4 and paths["plot"].endswith(".png")
    ckpt = make_checkpoint(tmp_path / "bucket" / "run" / "step100")
    assert main(["measure", str(ckpt), "--data", token_parquet, "--out", str(tmp_path / "res"), "--config",
                 paths["recommended"], "--no-wandb", "-q"]) == 0
    assert pd.read_parquet(next((tmp_path / "res").rglob("*.parquet"))).shape[0] >= 1


def test_calibrate_reads_and_writes_s3_like_measure(tmp_path, token_parquet, capsys, monkeypatch):
    """Checkpoint, data and outputs on S3 (moto on 127.0.0.1), endpoint through --storage-options and credentials
    through the environment, as for measure: the table, the plot (and the YAML when there is a choice) land there."""
    import io
    import json

    from tests.helpers.checkpoints import Store, moto_s3, upload

    with moto_s3(buckets=("calib",)) as (_, opts):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", opts["key"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", opts["secret"])
        ckpt = upload(make_checkpoint(tmp_path / "ck"), "s3://calib/run/step100", opts)
        Store("s3://calib", opts).put_file(token_parquet, "data/tokens.parquet")
        code = main(["calibrate", ckpt, "--data", "s3://calib/data/tokens.parquet", "--out", "s3://calib/cal", "-q",
                     "--storage-options", json.dumps({"client_kwargs": opts["client_kwargs"]}),
                     "--grid", "epsilon=1e-7,1e-6", *set_args(num_draws=12, num_burnin=0, num_chains=2)])
        text = capsys.readouterr().out
        fs, _ = Store("s3://calib", opts)._fs()
        names = {p.rsplit("/", 1)[-1] for p in fs.find("calib/cal")}
        assert code in (0, 1) and {"calibration.parquet", "calibration.png"} <= names, (code, names, text)
        table = pd.read_parquet(io.BytesIO(fs.cat_file("calib/cal/calibration.parquet")))
        assert list(table["epsilon"]) == [1e-7, 1e-6] and table["llc_mean"].notna().all()
        assert ("recommended.yaml" in names) == (code == 0)
