"""MeasurementRecord → Parquet (the source of truth), wandb (a view), stdout (a line).

``store`` owns the RESULTS layout and reads results back (``read_summary`` / ``read_draws`` as pandas DataFrames
in the canonical schema); ``base`` holds the ``Sink`` protocol and the registry the worker picks sinks from.
"""

from llc_service.sinks.base import Sink, StdoutSink, get_sink, register_sink, sinks_for, summary_line, write_all
from llc_service.sinks.parquet import ParquetSink
from llc_service.sinks.record import MeasurementRecord
from llc_service.sinks.store import ResultKey, ResultsStore, existing_results, read_draws, read_summary

__all__ = ["MeasurementRecord", "ParquetSink", "ResultKey", "ResultsStore", "Sink", "StdoutSink", "existing_results",
           "get_sink", "read_draws", "read_summary", "register_sink", "sinks_for", "summary_line", "write_all"]


def __getattr__(name):  # the wandb sink imports nothing heavy itself, but keep it off the import path anyway
    if name == "WandbSink":
        from llc_service.sinks.wandb import WandbSink

        return WandbSink
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
