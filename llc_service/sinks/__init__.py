"""MeasurementRecord → Parquet (the source of truth), wandb (a view), stdout (a line).

``read_summary`` / ``read_draws`` read the Parquet results back as pandas DataFrames in the canonical schema.
"""

from llc_service.sinks.base import Sink, StdoutSink, get_sink, register_sink
from llc_service.sinks.parquet import ParquetSink, existing_results, read_draws, read_summary
from llc_service.sinks.record import MeasurementRecord

__all__ = ["MeasurementRecord", "ParquetSink", "Sink", "StdoutSink", "existing_results", "get_sink", "read_draws",
           "read_summary", "register_sink"]


def __getattr__(name):  # the wandb sink imports nothing heavy itself, but keep it off the import path anyway
    if name == "WandbSink":
        from llc_service.sinks.wandb import WandbSink

        return WandbSink
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
