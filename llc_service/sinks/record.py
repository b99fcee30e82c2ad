"""What a measurement hands to its sinks: one summary row plus the optional per-draw traces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class MeasurementRecord:
    summary: dict
    """One row of the summary table (keys: columns of ``sinks.schema.SUMMARY_SCHEMA``)."""
    loss_trace: Any = None
    """(chains, draws) float64 losses, NaN after a chain diverged; None when not kept or the measurement failed."""
    running_llc: Any = None
    """(chains, draws) float64 running λ̂ per chain; None when not kept."""

    @property
    def identity(self) -> tuple:
        """(run_id, config_hash, checkpoint_step, checkpoint_fingerprint): what names the result files."""
        s = self.summary
        return s.get("run_id"), s.get("config_hash"), s.get("checkpoint_step"), s.get("checkpoint_fingerprint")
