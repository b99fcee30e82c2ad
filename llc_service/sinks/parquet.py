"""Parquet results: the source of truth. One summary file and one draws file per measurement.

Where the files go is :mod:`llc_service.sinks.store` (the RESULTS layout, named by the measurement's identity, so
a retry overwrites its own file instead of adding rows). Local writes go to a hidden temp file in the target
folder and are renamed into place; object stores get one PUT of the complete file. Either way a reader sees the
old file or the new one, never half of one. The draws file is written before the summary: once a summary exists,
its draws are complete.
"""

from __future__ import annotations

import io
import logging
import os
import uuid

from llc_service.sinks.base import register_sink
from llc_service.sinks.record import MeasurementRecord
from llc_service.sinks.store import DRAWS, SUMMARY, ResultKey, ResultsStore
from llc_service.storage import fs_is_local

log = logging.getLogger(__name__)


def write_table(fs, path: str, table) -> None:
    """Write ``table`` to ``path`` so that readers never see a partial file (see module docstring)."""
    import pyarrow.parquet as pq

    if fs_is_local(fs):
        folder, name = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")  # hidden, and not *.parquet
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    buf = io.BytesIO()
    pq.write_table(table, buf)
    fs.pipe_file(path, buf.getvalue())


@register_sink("parquet")
class ParquetSink:
    """Writes each ``MeasurementRecord`` under ``results_uri`` (a local path or any fsspec URI)."""

    def __init__(self, results_uri: str, storage_options: dict | None = None):
        self.store = ResultsStore(results_uri, storage_options)
        self.results_uri = self.store.uri

    @classmethod
    def from_config(cls, cfg, results_uri: str) -> ParquetSink:
        return cls(results_uri, storage_options=cfg.storage_options)

    def paths(self, summary: dict) -> tuple[str, str]:
        """(summary file, draws file) full paths for a summary row."""
        key, root = ResultKey.from_summary(summary), self.store.open()[1]
        return self.store.path(SUMMARY, key, root), self.store.path(DRAWS, key, root)

    def write(self, record: MeasurementRecord) -> None:
        from llc_service.sinks.schema import draws_table, summary_table

        summary = summary_table([record.summary])  # validate before touching storage
        fs, root = self.store.open()
        key = ResultKey.from_summary(record.summary)
        summary_path, draws_path = self.store.path(SUMMARY, key, root), self.store.path(DRAWS, key, root)
        if record.loss_trace is not None:
            write_table(fs, draws_path, draws_table(record.summary, record.loss_trace, record.running_llc))
        elif fs.exists(draws_path):  # a retry without draws: stale draws of an earlier attempt must not linger
            fs.rm_file(draws_path)
        write_table(fs, summary_path, summary)
        log.debug("wrote %s", summary_path)

    def close(self) -> None:
        pass
