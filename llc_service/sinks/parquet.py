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
        self.write_group([record])

    def write_group(self, records: list[MeasurementRecord]) -> None:
        """The rows of one measurement (refined LLC: one per component) into its one summary and one draws file,
        told apart by the ``component`` column and replaced together, so they never mix two attempts."""
        import pyarrow as pa

        from llc_service.sinks.schema import draws_table, summary_table

        key = ResultKey.from_summary(records[0].summary)
        if any(ResultKey.from_summary(r.summary) != key for r in records):
            raise ValueError("write_group: the records belong to different measurements")
        summary = summary_table([r.summary for r in records])  # validate before touching storage
        fs, root = self.store.open()
        summary_path, draws_path = self.store.path(SUMMARY, key, root), self.store.path(DRAWS, key, root)
        traced = [r for r in records if r.loss_trace is not None]
        if traced:
            tables = [draws_table(r.summary, r.loss_trace, r.running_llc) for r in traced]
            write_table(fs, draws_path, pa.concat_tables(tables) if len(tables) > 1 else tables[0])
        elif fs.exists(draws_path):  # a retry without draws: stale draws of an earlier attempt must not linger
            fs.rm_file(draws_path)
        write_table(fs, summary_path, summary)
        self.store.remove_legacy(key)  # an older version's file of this measurement would be a second row
        log.debug("wrote %s", summary_path)

    def close(self) -> None:
        pass
