"""Summary frames built by hand, shaped like ``read_summary`` output (only the columns the report reads + a few)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def summary_frame(rows: list[dict]) -> pd.DataFrame:
    base = {"schema_version": 2, "checkpoint_uri": "s3://b/x", "checkpoint_fingerprint": "fp", "error": None,
            "attempt": 1, "num_chains_used": 4, "nbeta": 30.0, "weight_norm": 10.0, "weight_sketch": None,
            "init_loss": 3.0, "llc_std": 0.5, "status": "ok", "ended_at": pd.NaT}
    df = pd.DataFrame([{**base, **r} for r in rows])
    df["checkpoint_step"] = df["checkpoint_step"].astype("Int64")
    df["num_chains_used"] = df["num_chains_used"].astype("Int32")
    return df


def curve_frame(steps, llc, run_id="run-a", config_hash="cfg000000001", sketch_dim=16, seed=0) -> pd.DataFrame:
    """A trajectory whose weights walk away from the first checkpoint (sketch i = i·e₀, so distance = i)."""
    rows = []
    for i, (s, v) in enumerate(zip(steps, llc)):
        sketch = np.zeros(sketch_dim, dtype=np.float32)
        sketch[0] = i
        rows.append({"run_id": run_id, "config_hash": config_hash, "checkpoint_step": int(s), "llc_mean": float(v),
                     "init_loss": 5.0 / (1 + i), "weight_sketch": sketch, "checkpoint_fingerprint": f"fp{s}"})
    return summary_frame(rows)
