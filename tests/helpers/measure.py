"""A small measurement config and real token data for end-to-end tests (the fixture lives in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.checkpoints import tiny_tokenizer

# small enough for ~1 s per measurement on one CPU core, large enough that λ̂ is a real number
SMALL = dict(num_chains=3, num_draws=12, num_burnin=2, batch_size=8, seq_len=32, epsilon=1e-4, nbeta=10.0,
             gamma=100.0, init_loss_batches=4, progress=False, wandb_project="llc-test", seed=3)


def small_config(**overrides):
    from llc_service.config import MeasureConfig, build_config

    return build_config(MeasureConfig, {**SMALL, **overrides})


def set_args(**overrides) -> list[str]:
    """``--set k=v`` arguments for the CLI equivalent of :func:`small_config` (``None`` as ``null``)."""
    out = []
    for k, v in {**SMALL, **overrides}.items():
        out += ["--set", f"{k}={'null' if v is None else v}"]
    return out


def write_token_parquet(path, rows: int = 64, seq_len: int = 32) -> str:
    """``rows`` rows of ``seq_len`` real stdlib-source tokens as a Parquet ``input_ids`` column."""
    from llc_service.demo.train import write_data

    return str(write_data(Path(path), tiny_tokenizer(), seq_len=seq_len, max_blocks=rows))
