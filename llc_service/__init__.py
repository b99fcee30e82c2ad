"""llc-service: measure the Local Learning Coefficient across training checkpoints."""
__version__ = "0.1.0"

from llc_service.config import MeasureConfig, SamplerConfig

__all__ = ["SamplerConfig", "MeasureConfig", "estimate_llc", "LLCResult", "read_summary", "read_draws", "calibrate",
           "CalibrationResult"]


def __getattr__(name):  # heavy imports (torch, pyarrow) only when used, so `llc-service --help` stays instant
    if name in ("estimate_llc", "LLCResult", "AllChainsDivergedError"):
        from llc_service import estimate

        return getattr(estimate, name)
    if name in ("calibrate", "CalibrationResult"):
        import importlib

        return getattr(importlib.import_module("llc_service.calibration"), name)
    if name in ("read_summary", "read_draws"):
        from llc_service import sinks

        return getattr(sinks, name)
    raise AttributeError(f"module 'llc_service' has no attribute {name!r}")
