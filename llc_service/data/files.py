"""Find the data files behind a DATA URI and fingerprint them.

DATA is one Parquet/JSONL file or a folder of them, on a local path or any fsspec URI. The fingerprint says
"same bytes" without reading large files: small files are hashed by content (so a copy elsewhere keeps its
fingerprint), large ones by size plus ETag or modification time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from llc_service.data.errors import DataError

PARQUET_EXT = (".parquet", ".pq")
JSON_EXT = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz")
CONTENT_HASH_MAX_BYTES = 8 * 1024 * 1024
"""Files up to this size are fingerprinted by their content."""


@dataclass(frozen=True)
class DataFile:
    path: str  # path as the filesystem knows it
    name: str  # path relative to DATA (the file name for a single file)
    size: int
    version: str  # ETag or mtime, "" when the filesystem has neither
    format: str  # "parquet" | "json"


def file_format(name: str) -> str | None:
    low = name.lower()
    if low.endswith(PARQUET_EXT):
        return "parquet"
    if low.endswith(JSON_EXT):
        return "json"
    return None


def _version(info: dict) -> str:
    for key in ("ETag", "etag", "md5Hash", "crc32c", "mtime", "LastModified", "last_modified", "updated", "created"):
        if info.get(key) is not None:
            return str(info[key]).strip('"')
    return ""


def _hidden(rel: str) -> bool:
    return any(part.startswith((".", "_")) for part in rel.split("/") if part)


def list_data_files(fs, path: str, data_uri: str) -> list[DataFile]:
    """Data files under ``path`` in name order; hidden files (``.x``, ``_x``) and other extensions are skipped."""
    fs.invalidate_cache()
    if not fs.exists(path):
        raise DataError(f"data {data_uri}: no such file or folder")
    if fs.isdir(path):
        found = fs.find(path, detail=True)
        root = path.rstrip("/") + "/"
        files = []
        for p, info in sorted(found.items()):
            rel = p[len(root):] if p.startswith(root) else p.rsplit("/", 1)[-1]
            fmt = file_format(rel)
            if info.get("type") == "directory" or fmt is None or _hidden(rel):
                continue
            files.append(DataFile(p, rel, int(info.get("size") or 0), _version(info), fmt))
        if not files:
            raise DataError(f"data folder {data_uri} holds no .parquet or .jsonl files")
        formats = {f.format for f in files}
        if len(formats) > 1:
            raise DataError(f"data folder {data_uri} mixes Parquet and JSON files; keep one format per folder")
        return files
    info = fs.info(path)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    fmt = file_format(name)
    if fmt is None:
        raise DataError(f"data file {data_uri}: unknown format; expected .parquet or .jsonl")
    return [DataFile(path, name, int(info.get("size") or 0), _version(info), fmt)]


def fingerprint(fs, files: list[DataFile], **settings: Any) -> str:
    """sha256 over (name, size, content hash or ETag/mtime) of every file plus the settings that shape the rows."""
    h = hashlib.sha256()
    for f in files:
        if f.size <= CONTENT_HASH_MAX_BYTES:
            ident = "sha256:" + hashlib.sha256(fs.cat_file(f.path)).hexdigest()
        else:
            ident = "version:" + f.version
        h.update(json.dumps([f.name, f.size, ident]).encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def identify(data_uri, storage_options: dict | None = None, *, seq_len: int, text_column: str,
             max_rows: int | None) -> tuple[Any, list[DataFile], str]:
    """(filesystem, data files, fingerprint) of DATA with the settings that shape its rows: the one place a data
    fingerprint is computed, by the loader and by whoever needs the data's identity before loading (the watcher's
    result keys)."""
    from llc_service.storage import open_fs

    fs, path = open_fs(data_uri, storage_options)
    data_files = list_data_files(fs, path, str(data_uri))
    return fs, data_files, fingerprint(fs, data_files, seq_len=seq_len, text_column=text_column, max_rows=max_rows)


def data_fingerprint(data_uri, cfg) -> str:
    """The fingerprint a measurement with ``cfg`` (a ``MeasureConfig``) records for DATA; raises ``DataError``
    when DATA cannot be listed."""
    return identify(data_uri, cfg.storage_options, seq_len=cfg.seq_len, text_column=cfg.text_column,
                    max_rows=cfg.max_rows)[2]
