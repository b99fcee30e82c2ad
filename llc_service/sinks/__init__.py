"""MeasurementRecord → Parquet (the source of truth), wandb (a view), stdout (a line).

``store`` owns the RESULTS layout and reads results back (``read_summary`` / ``read_draws`` as pandas DataFrames
in the canonical schema); ``base`` holds the ``Sink`` protocol and the registry the worker picks sinks from.
The wandb sink is not re-exported here: import it from ``llc_service.sinks.wandb`` (the registry loads it by name).
It depends on ``llc_service.report`` (its outcome hook rebuilds the trajectory run), which reads results through
this package: re-exporting it would make an import cycle (``tests/test_imports.py``).
"""

from llc_service.sinks.base import Sink, StdoutSink, get_sink, register_sink, sinks_for, summary_line, write_all
from llc_service.sinks.parquet import ParquetSink
from llc_service.sinks.record import MeasurementRecord
from llc_service.sinks.store import ResultKey, ResultsStore, existing_results, read_draws, read_summary

__all__ = ["MeasurementRecord", "ParquetSink", "ResultKey", "ResultsStore", "Sink", "StdoutSink", "existing_results",
           "get_sink", "read_draws", "read_summary", "register_sink", "sinks_for", "summary_line", "write_all"]

