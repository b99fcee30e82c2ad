"""RESULTS: the one owner of the results layout, its filesystem, and reading results back.

Layout (plain folders, key columns inside the files; no hive ``key=value`` folders, which break readers)::

    RESULTS/summary/<run_id>/<config_hash>/<checkpoint>-<fingerprint>-data-<data>.parquet   one row per measurement
    RESULTS/draws/<run_id>/<config_hash>/<checkpoint>-<fingerprint>-data-<data>.parquet     its per-draw trace
    RESULTS/claims/<run_id>/<config_hash>/<checkpoint>-<fingerprint>-data-<data>.json       the watchers' lease on it

``<checkpoint>`` is ``step-<step:012d>``, or ``step-none-<folder name>`` for a checkpoint without a step, so the
name of every file says *which* checkpoint (its step or folder), *what* content (its fingerprint) and *on which
data* (the data fingerprint: files and the settings that shape the rows) it was measured: two checkpoints with
byte-identical weights never share a file, and one checkpoint measured on two data sets (the data-refined LLC)
keeps both results. That is :class:`ResultKey`, the identity of one measurement, used for result files, claims,
the watcher's memory of final outcomes and wandb run ids. A retry writes the same name again (overwrite, never a
second row).

Files written before the data fingerprint was part of the name (``<checkpoint>-<fingerprint>.parquet``) are still
found: :meth:`ResultsStore.outcomes` accepts such a file for a key when the ``data_fingerprint`` column of its row
matches, and :class:`~llc_service.sinks.parquet.ParquetSink` removes it once the same measurement is rewritten
under the new name (so a retry never leaves two rows).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from llc_service.storage import open_fs

log = logging.getLogger(__name__)

SUMMARY, DRAWS, CLAIMS = "summary", "draws", "claims"
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


def checkpoint_part(step: int | None, uri: str | None) -> str:
    """``step-<step:012d>``, or ``step-none-<folder name>`` when the checkpoint has no step."""
    if step is not None:
        return f"step-{int(step):012d}"
    name = str(uri or "").rstrip("/").rsplit("/", 1)[-1]
    return f"step-none-{safe_component(name)}" if name else "step-none"


@dataclass(frozen=True)
class ResultKey:
    """The identity of one measurement: a config applied to one checkpoint (step or folder) of one run, with the
    content it had (fingerprint), on one data set (``data``: its fingerprint). ``checkpoint`` is
    :func:`checkpoint_part` ("" in claims written by versions that did not record it); ``data`` is "" when the data
    fingerprint is unknown (results written before it was part of the identity, or data that could not be
    listed)."""

    run_id: str
    config_hash: str
    fingerprint: str
    checkpoint: str = ""
    data: str = ""

    @classmethod
    def of(cls, run_id: str, config_hash: str, fingerprint: str, step: int | None, uri: str | None,
           data: str | None = None) -> ResultKey:
        return cls(str(run_id), str(config_hash), str(fingerprint), checkpoint_part(step, uri), str(data or ""))

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> ResultKey:
        return cls.of(summary["run_id"], summary["config_hash"], summary["checkpoint_fingerprint"],
                      summary.get("checkpoint_step"), summary.get("checkpoint_uri"), summary.get("data_fingerprint"))

    def legacy(self) -> ResultKey:
        """This key as files written before the data fingerprint was in the name spell it."""
        return dataclasses.replace(self, data="")

    def stem(self) -> str:
        fp = safe_component(self.fingerprint)
        stem = f"{self.checkpoint}-{fp}" if self.checkpoint else fp
        return f"{stem}-data-{safe_component(self.data)}" if self.data else stem

    def relpath(self, kind: str = CLAIMS) -> str:
        """``<kind>/<run_id>/<config_hash>/<stem>.parquet`` (``.json`` for claims)."""
        ext = ".json" if kind == CLAIMS else ".parquet"
        return "/".join([kind, safe_component(self.run_id), safe_component(self.config_hash), self.stem() + ext])


def result_relpath(kind: str, summary: Mapping[str, Any]) -> str:
    """The relative path of a summary row's ``kind`` file (see the module docstring)."""
    return ResultKey.from_summary(summary).relpath(kind)


@dataclass(frozen=True)
class Outcome:
    """What the summary file of one measurement says: enough for the watcher's policy."""

    status: str
    error: str | None = None
    error_kind: str | None = None
    error_type: str | None = None
    attempt: int = 1

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Outcome:
        error, etype = row.get("error"), row.get("error_type")
        if etype is None and error:  # written before error_type existed: its class name starts the message
            head = str(error).split(":", 1)[0].strip()
            etype = head if head.isidentifier() else None
        return cls(status=str(row.get("status")), error=error, error_kind=row.get("error_kind"), error_type=etype,
                   attempt=int(row.get("attempt") or 1))


_OUTCOME_COLUMNS = ("status", "error", "error_kind", "error_type", "attempt")


class ResultsStore:
    """RESULTS of one URI: where each file of a measurement lives, and reading what is there.

    One filesystem instance per store (:func:`llc_service.storage.open_fs`, never fsspec's shared instance cache),
    its listing cache cleared on every :meth:`open`: a cached listing could miss a result another worker just
    wrote, while a new s3fs client per call costs ~0.3 s of CPU (measured by the soak, against ~0.02 s reused).
    ``storage_options`` are the fsspec options (endpoint, credentials).
    """

    def __init__(self, results_uri: str, storage_options: dict | None = None):
        self.uri = str(results_uri)
        self.storage_options = dict(storage_options or {})
        self._opened: tuple[Any, str] | None = None

    def open(self) -> tuple[Any, str]:
        """(filesystem with a fresh listing, root path of RESULTS inside it)."""
        if self._opened is None:
            fs, root = open_fs(self.uri, self.storage_options)
            self._opened = fs, root.rstrip("/") or "/"
        else:
            self._opened[0].invalidate_cache()
        return self._opened

    def __getstate__(self):  # a filesystem instance does not travel between processes; the next open() makes one
        return {**self.__dict__, "_opened": None}

    def path(self, kind: str, key: ResultKey, root: str | None = None) -> str:
        return f"{root if root is not None else self.open()[1]}/{key.relpath(kind)}"

    # ---- reading -------------------------------------------------------------------------------------------------

    def files(self, kind: str) -> tuple[Any, list[str]]:
        """(filesystem, sorted paths) of the ``kind`` files; hidden files and folders (temp files) are skipped."""
        fs, root = self.open()
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

    def read_table(self, kind: str, columns: list[str] | None = None):
        """All ``kind`` files as one pyarrow Table in the canonical schema (empty table when there are none)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from llc_service.sinks import schema as S

        canonical = S.SUMMARY_SCHEMA if kind == SUMMARY else S.DRAWS_SCHEMA
        if columns is not None:
            canonical = pa.schema([canonical.field(c) for c in columns], metadata=canonical.metadata)
        fs, paths = self.files(kind)
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

    def outcomes(self, keys: Iterable[ResultKey]) -> dict[ResultKey, Outcome]:
        """The recorded :class:`Outcome` of each of ``keys`` that has a summary file.

        Reads only the folders concerned and only these keys' files (deterministic names), so a poll costs one
        listing per (run, config) plus one small GET per key, however many results exist. A key with a data
        fingerprint also accepts the file of an older version (no data in the name) whose row names the same data.
        A corrupt file counts as absent (it is overwritten by the next measurement). Raises on storage errors.
        """
        keys = list(keys)
        if not keys:
            return {}
        fs, root = self.open()
        wanted: dict[str, tuple[ResultKey, bool]] = {}  # path -> (key, legacy name)
        for k in keys:
            if k.data:
                wanted.setdefault(self.path(SUMMARY, k.legacy(), root), (k, True))
            wanted[self.path(SUMMARY, k, root)] = (k, False)
        present: set[str] = set()
        for folder in {p.rsplit("/", 1)[0] for p in wanted}:
            try:
                present.update(p.rstrip("/") for p in fs.find(folder))
            except FileNotFoundError:
                continue
        paths = sorted(p for p in wanted if p in present or p.lstrip("/") in present)
        blobs = fs.cat(paths, on_error="raise") if paths else {}
        out: dict[ResultKey, Outcome] = {}
        for p in sorted(paths, key=lambda q: wanted[q][1], reverse=True):  # the current name wins over the legacy
            key, legacy = wanted[p]
            row = _first_row(blobs.get(p) if p in blobs else blobs.get(p.lstrip("/")), p)
            if row is None or (legacy and row.get("data_fingerprint") != key.data):
                continue
            out[key] = Outcome.from_row(row)
        return out

    def remove_legacy(self, key: ResultKey) -> None:
        """Delete the summary and draws files an older version wrote for ``key`` (no data fingerprint in the name),
        when their row names the same data or none: the measurement now lives under ``key``'s name."""
        if not key.data:
            return
        fs, root = self.open()
        summary = self.path(SUMMARY, key.legacy(), root)
        if not fs.exists(summary):
            return
        row = _first_row(fs.cat_file(summary), summary)
        if row is not None and row.get("data_fingerprint") not in (None, key.data):
            return  # another data set's result that happens to have no data in its name: not ours to remove
        for path in (summary, self.path(DRAWS, key.legacy(), root)):
            try:
                fs.rm(path)
            except FileNotFoundError:
                pass


def _first_row(blob, path: str) -> dict | None:
    """The outcome columns (and ``data_fingerprint``) of a summary file's first row; None if unreadable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(pa.BufferReader(blob))
        table = pf.read(columns=[c for c in _OUTCOME_COLUMNS + ("data_fingerprint",) if c in pf.schema_arrow.names])
        if not table.num_rows:
            raise ValueError("no row")
        return {c: table.column(c)[0].as_py() for c in table.column_names}
    except Exception as exc:  # noqa: BLE001 - a corrupt result file: measure again, it gets overwritten
        log.warning("result file %s is unreadable (%s); measuring that checkpoint again", path, exc)
        return None


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
    table = ResultsStore(results_uri, storage_options).read_table(SUMMARY)
    if table.num_rows:
        table = table.sort_by([("run_id", "ascending"), ("config_hash", "ascending"),
                               ("checkpoint_step", "ascending")])
    return _to_pandas(table)


def read_draws(results_uri: str, storage_options: dict | None = None):
    """Every per-draw row under ``results_uri`` as a pandas DataFrame (one row per checkpoint × chain × draw)."""
    table = ResultsStore(results_uri, storage_options).read_table(DRAWS)
    if table.num_rows:
        table = table.sort_by([("run_id", "ascending"), ("config_hash", "ascending"),
                               ("checkpoint_step", "ascending"), ("checkpoint_fingerprint", "ascending"),
                               ("chain", "ascending"), ("draw", "ascending")])
    return _to_pandas(table)


def existing_results(results_uri: str, storage_options: dict | None = None) -> set[tuple]:
    """{(run_id, config_hash, checkpoint_fingerprint, status)} of every summary row."""
    cols = ["run_id", "config_hash", "checkpoint_fingerprint", "status"]
    table = ResultsStore(results_uri, storage_options).read_table(SUMMARY, columns=cols)
    return set(zip(*(table.column(c).to_pylist() for c in cols)))
