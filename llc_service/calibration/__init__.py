"""Calibration: measure a grid of (ε, nβ, γ), apply an explicit rule, recommend a setting (docs/calibration.md)."""

from llc_service.calibration.run import CalibrationResult, calibrate

__all__ = ["calibrate", "CalibrationResult"]
