"""Parquet results: the source of truth. One summary file and one draws file per measurement.

Layout (plain folders, key columns inside the files; no hive ``key=value`` folders, which break readers)::

    RESULTS/summary/<run_id>/<config_hash>/step-<step:012d>-<fingerprint>.parquet
    RESULTS/draws/<run_id>/<config_hash>/step-<step:012d>-<fingerprint>.parquet

The name is a function of the measurement's identity, so a retry overwrites its own file instead of adding
rows. Local writes go to a hidden temp file in the target folder and are renamed into place; object stores get
one PUT of the complete file. Either way a reader sees the old file or the new one, never half of one.
The draws file is written before the summary: once a summary exists, its draws are complete.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import uuid
from typing import Any

from llc_service.sinks._fs import is_local, results_fs
from llc_service.sinks.base import register_sink
from llc_service.sinks.record import MeasurementRecord

log = logging.getLogger(__name__)

SUMMARY, DRAWS = "summary", "draws"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_component(text: Any, max_len: int = 80) -> str:
    """``text`` as one path component that every filesystem and object store accepts, and no reader hides.

    Anything outside ``[A-Za-z0-9._-]`` becomes ``_``; a leading ``.``/``_`` (hidden to readers) is prefixed.
    When the text had to change, a short hash of the original is appended so two different run ids never share
    a folder. The column inside the file keeps the original value.
    """
    raw = str(text)
    safe = _UNSAFE.sub("_", raw)[:max_len]
    if not safe or safe[0] in "._-":
        safe = "r" + safe
    if safe != raw:
        safe += "-" + hashlib.sha256(raw.encode()).hexdigest()[:8]
    return safe


def result_relpath(kind: str, summary: dict) -> str:
    """``<kind>/<run_id>/<config_hash>/step-<step>-<fingerprint>.parquet`` for a summary row."""
    step = summary.get("checkpoint_step")
    step_part = "step-none" if step is None else f"step-{int(step):012d}"
    name = f"{step_part}-{safe_component(summary['checkpoint_fingerprint'])}.parquet"
    return "/".join([kind, safe_component(summary["run_id"]), safe_component(summary["config_hash"]), name])


def write_table(fs, path: str, table) -> None:
    """Write ``table`` to ``path`` so that readers never see a partial file (see module docstring)."""
    import pyarrow.parquet as pq

    if is_local(fs):
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
        self.results_uri = str(results_uri)
        self.storage_options = dict(storage_options or {})

    def paths(self, summary: dict) -> tuple[str, str]:
        """(summary file, draws file) full paths for a summary row."""
        _, root = results_fs(self.results_uri, self.storage_options)
        return root + "/" + result_relpath(SUMMARY, summary), root + "/" + result_relpath(DRAWS, summary)

    def write(self, record: MeasurementRecord) -> None:
        from llc_service.sinks.schema import draws_table, summary_table

        summary = summary_table([record.summary])  # validate before touching storage
        fs, root = results_fs(self.results_uri, self.storage_options)
        summary_path = root + "/" + result_relpath(SUMMARY, record.summary)
        draws_path = root + "/" + result_relpath(DRAWS, record.summary)
        if record.loss_trace is not None:
            write_table(fs, draws_path, draws_table(record.summary, record.loss_trace, record.running_llc))
        elif fs.exists(draws_path):  # a retry without draws: stale draws of an earlier attempt must not linger
            fs.rm_file(draws_path)
        write_table(fs, summary_path, summary)
        log.debug("wrote %s", summary_path)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------------------------
# reading


def result_files(results_uri: str, kind: str, storage_options: dict | None = None) -> tuple[Any, list[str]]:
    """(filesystem, sorted paths) of the ``kind`` files; hidden files and folders (temp files) are skipped."""
    fs, root = results_fs(results_uri, storage_options)
    base = f"{root}/{kind}"
    try:
        found = fs.find(base)
    except FileNotFoundError:
        return fs, []
    paths = []
    for p in found:
        rel = p[len(base) + 1:] if p.startswith(base + "/") else p.rsplit("/", 1)[-1]
        if p.endswith(".parquet") and not any(part.startswith(".") for part in rel.split("/")):
            paths.append(p)
    return fs, sorted(paths)


def read_table(results_uri: str, kind: str, storage_options: dict | None = None, columns: list[str] | None = None):
    """All ``kind`` files as one pyarrow Table in the canonical schema (empty table when there are none)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from llc_service.sinks import schema as S

    canonical = S.SUMMARY_SCHEMA if kind == SUMMARY else S.DRAWS_SCHEMA
    if columns is not None:
        canonical = pa.schema([canonical.field(c) for c in columns], metadata=canonical.metadata)
    fs, paths = result_files(results_uri, kind, storage_options)
    blobs = fs.cat(paths, on_error="return") if paths else {}  # concurrent GETs on object stores
    tables = []
    for p in paths:
        blob = blobs.get(p)
        if isinstance(blob, Exception) or blob is None:
            log.warning("skipping unreadable result file %s (%s)", p, blob)
            continue
        try:
            pf = pq.ParquetFile(pa.BufferReader(blob))
            present = [c for c in canonical.names if c in pf.schema_arrow.names]  # older files may lack some
            tables.append(S.conform(pf.read(columns=present), canonical))
        except Exception as exc:  # noqa: BLE001 - one foreign or corrupt file must not hide all results
            log.warning("skipping unreadable result file %s (%s)", p, exc)
    return pa.concat_tables(tables) if tables else canonical.empty_table()


def _to_pandas(table):
    """Integers stay integers even with nulls (``checkpoint_step`` of a step-less checkpoint)."""
    import pandas as pd
    import pyarrow as pa

    mapping = {pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype()}
    return table.to_pandas(types_mapper=mapping.get)


def read_summary(results_uri: str, storage_options: dict | None = None):
    """Every summary row under ``results_uri`` as a pandas DataFrame with the canonical columns.

    Sorted by (run_id, config_hash, checkpoint_step). Missing or empty results give an empty frame.
    """
    table = read_table(results_uri, SUMMARY, storage_options)
    if table.num_rows:
        table = table.sort_by([("run_id", "ascending"), ("config_hash", "ascending"),
                               ("checkpoint_step", "ascending")])
    return _to_pandas(table)


def read_draws(results_uri: str, storage_options: dict | None = None):
    """Every per-draw row under ``results_uri`` as a pandas DataFrame (one row per checkpoint × chain × draw)."""
    table = read_table(results_uri, DRAWS, storage_options)
    if table.num_rows:
        table = table.sort_by([("run_id", "ascending"), ("config_hash", "ascending"),
                               ("checkpoint_step", "ascending"), ("checkpoint_fingerprint", "ascending"),
                               ("chain", "ascending"), ("draw", "ascending")])
    return _to_pandas(table)


def existing_results(results_uri: str, storage_options: dict | None = None) -> set[tuple]:
    """{(run_id, config_hash, checkpoint_fingerprint, status)} of every summary row: what the watcher skips."""
    cols = ["run_id", "config_hash", "checkpoint_fingerprint", "status"]
    table = read_table(results_uri, SUMMARY, storage_options, columns=cols)
    return set(zip(*(table.column(c).to_pylist() for c in cols)))
