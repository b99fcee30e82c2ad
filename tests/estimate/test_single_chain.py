"""With one chain the spread across chains is undefined: llc_std is NaN (null in Parquet, "n/a" on screen), never 0."""

import math

import pandas as pd

from llc_service import estimate_llc, read_summary
from llc_service.report.trajectory import format_table, trajectory_table
from llc_service.sinks.base import summary_line
from tests.sampler.test_invariances import cfg, mlp_problem, mse


def test_one_chain_has_undefined_std_everywhere_it_is_shown(tmp_path, token_parquet, capsys):
    model, data = mlp_problem()
    res = estimate_llc(model, data, cfg(num_chains=1), loss_fn=mse)
    assert math.isnan(res.llc_std) and math.isfinite(res.llc_mean)
    assert "± n/a" in str(res)
    two = estimate_llc(model, data, cfg(num_chains=2), loss_fn=mse)
    assert two.llc_std > 0

    from llc_service.cli import main
    from tests.helpers.checkpoints import make_checkpoint
    from tests.helpers.measure import set_args

    ckpt = make_checkpoint(tmp_path / "b" / "run" / "step3")
    out = tmp_path / "results"
    code = main(["measure", str(ckpt), "--data", token_parquet, "--out", str(out), "--no-wandb", "-q",
                 *set_args(num_chains=1)])
    assert code == 0
    assert "± n/a" in capsys.readouterr().out
    s = read_summary(str(out))
    assert pd.isna(s.llc_std.iloc[0]) and s.num_chains_used.iloc[0] == 1
    row = s.iloc[0].to_dict()
    assert "± n/a" in summary_line(row)
    table = format_table(trajectory_table(s))
    assert "n/a" in table.splitlines()[2]
