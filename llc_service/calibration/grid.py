"""The calibration grid: ε log-spaced over four decades around the config's ε; nβ and γ from the config.

``--grid epsilon=1e-6,3e-6,1e-5`` (or ``nbeta=``, ``gamma=``) replaces one axis; every other axis keeps its default.
"""

from __future__ import annotations

import itertools
import math

from llc_service.config import split_setting
from llc_service.errors import UsageError

AXES = ("epsilon", "nbeta", "gamma")
HALF_DECADES = 8
"""Default ε axis: the config's ε × 10^(k/2) for k = −4 … 4 (nine points, 1e-2× … 1e2×)."""


def default_grid(cfg) -> dict[str, list[float]]:
    eps = [float(f"{cfg.epsilon * 10 ** (k / 2):.3g}") for k in range(-HALF_DECADES // 2, HALF_DECADES // 2 + 1)]
    return {"epsilon": eps, "nbeta": [float(cfg.nbeta)], "gamma": [float(cfg.gamma)]}


def parse_grid(items: list[str] | None) -> dict[str, list[float]]:
    """``["epsilon=1e-5,1e-4", "gamma=100"]`` → {"epsilon": [1e-5, 1e-4], "gamma": [100.0]}."""
    out: dict[str, list[float]] = {}
    for item in items or []:
        key, values = split_setting(item, "--grid", "AXIS=v1,v2,...")
        if key not in AXES:
            raise UsageError(f"--grid axis {key!r} is not one of {AXES}")
        try:
            vals = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"--grid {key} expects numbers, got {values!r}") from None
        if not vals or any(not math.isfinite(v) or v <= 0 and key != "gamma" or v < 0 for v in vals):
            raise UsageError(f"--grid {key} expects positive finite numbers, got {values!r}")
        out[key] = sorted(set(vals))
    return out


def resolve(cfg, grid: dict | None) -> dict[str, list[float]]:
    full = default_grid(cfg)
    for key, vals in (grid or {}).items():
        if key not in AXES:
            raise UsageError(f"grid axis {key!r} is not one of {AXES}")
        full[key] = sorted(set(float(v) for v in vals))
    return full


def points(grid: dict[str, list[float]]) -> list[dict[str, float]]:
    """Every (ε, nβ, γ) combination, ε fastest."""
    return [{"nbeta": b, "gamma": g, "epsilon": e}
            for b, g, e in itertools.product(grid["nbeta"], grid["gamma"], grid["epsilon"])]
