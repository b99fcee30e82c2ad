"""Complete or pending, which step, which bytes: the verdict on one checkpoint folder from its file listing.

Complete means ``config.json`` AND the weights (``model.safetensors``, or ``model.safetensors.index.json`` with
every shard of its ``weight_map`` present) AND, when configured, the marker file. Each safetensors file's header
is checked against its size, so a file a trainer is still writing in place reads as pending, not as a
checkpoint to measure (object stores never show partial objects; local disks and NFS do).

A folder whose only weights are pickles (``pytorch_model.bin``, ``*.pt``, ``*.pth``) is reported *complete*
on purpose: it will never gain safetensors weights, so "pending" would wait forever in silence. The loader
refuses it with a clear error and the refusal is recorded once. A safetensors file whose header is unreadable
or that is *longer* than its header promises is likewise complete (and refused by the loader).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from typing import Any

from llc_service.bucket.naming import default_run_id, step_from_name, step_from_trainer_state
from llc_service.bucket.ref import COMPLETE, PENDING, CheckpointRef
from llc_service.bucket.safetensors_layout import SHORT, read_layout
from llc_service.storage import to_uri

CONFIG = "config.json"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
TRAINER_STATE = "trainer_state.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")

# (protocol, path, size, identity) -> Layout. A given size+ETag/mtime always has the same header, so one check
# per file version is enough even when a watcher re-lists every few seconds.
_LAYOUT_CACHE: dict[tuple, Any] = {}
_LAYOUT_CACHE_MAX = 20_000


def is_checkpoint_like(names: set[str]) -> bool:
    """Whether a folder is worth describing: it has a config or weight files (tokenizer-only folders are not)."""
    return CONFIG in names or INDEX in names or any(
        n.endswith(".safetensors") or (n.startswith("pytorch_model") and n.endswith(".bin")) for n in names)


def identity(info: dict) -> str:
    """The per-object change token: ETag on S3, etag/generation on GCS, mtime on disk, creation time in memory."""
    for key in ("ETag", "etag", "md5Hash", "generation", "mtime", "LastModified", "updated", "created"):
        value = info.get(key)
        if value is not None:
            return str(value).strip('"')
    return ""


def _is_weight_file(name: str) -> bool:
    return name.endswith(".safetensors") or (name.startswith("pytorch_model") and name.endswith(".bin"))


def fingerprint(files: dict[str, dict], index_bytes: bytes | None) -> str:
    """sha256 over sorted (name, size, identity) of weight files and config.json, plus the index content."""
    h = hashlib.sha256()
    for name in sorted(n for n in files if n == CONFIG or _is_weight_file(n)):
        info = files[name]
        h.update(f"{name}\0{info.get('size')}\0{identity(info)}\n".encode())
    if index_bytes is not None:
        h.update(b"index\0" + index_bytes)
    return h.hexdigest()[:16]


#: object stores whose objects appear whole or not at all: a short safetensors file there is truncated for good
ATOMIC_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})


def _layout(fs, protocol: str, path: str, info: dict):
    key = (protocol, path, info.get("size"), identity(info))
    if key not in _LAYOUT_CACHE:
        if len(_LAYOUT_CACHE) >= _LAYOUT_CACHE_MAX:
            _LAYOUT_CACHE.clear()
        _LAYOUT_CACHE[key] = read_layout(lambda s, e: fs.cat_file(path, start=s, end=e), int(info.get("size") or 0))
    return _LAYOUT_CACHE[key]


def _read_optional(fs, path: str) -> bytes | None:
    """A small file's bytes, or None if it vanished between the listing and the read (a trainer rewrote it)."""
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        return None


def _index_shards(index_bytes: bytes) -> list[str]:
    weight_map = json.loads(index_bytes)["weight_map"]
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError("weight_map is empty or not a mapping")
    return sorted(set(weight_map.values()))


def describe_folder(fs, protocol: str, folder: str, files: dict[str, dict], marker_file: str | None = None
                    ) -> CheckpointRef:
    """Build the ``CheckpointRef`` of ``folder`` from ``files`` (basename -> fsspec info of each file in it)."""
    name = posixpath.basename(folder.rstrip("/"))
    reasons: list[str] = []
    # A missing shard or a short file means "still being written" only while the producer may still be writing:
    # once its marker file exists (or, for a short file, on an object store, where uploads are atomic) it is
    # damage that waiting will not repair, so the folder is complete and the loader refuses it with the reason.
    declared_done = bool(marker_file) and marker_file in files

    step = step_from_name(name)
    if step is None and TRAINER_STATE in files:
        state = _read_optional(fs, posixpath.join(folder, TRAINER_STATE))
        step = step_from_trainer_state(state) if state is not None else None

    index_bytes = _read_optional(fs, posixpath.join(folder, INDEX)) if INDEX in files else None
    if INDEX in files and index_bytes is None:
        reasons.append(f"{INDEX} disappeared while listing")

    if CONFIG not in files:
        reasons.append(f"{CONFIG} missing")

    safetensors: list[str] = []
    if SINGLE in files:
        safetensors = [SINGLE]
    elif index_bytes is not None:
        try:
            shards = _index_shards(index_bytes)
        except (ValueError, KeyError, TypeError) as e:
            reasons.append(f"{INDEX} unreadable ({e})")
            shards = []
        missing = [s for s in shards if s not in files]
        if missing and not declared_done:  # the producer said it is done: a missing shard is damage, not progress
            reasons.append(f"{len(missing)} of {len(shards)} shards missing ({', '.join(missing[:3])}"
                           f"{', ...' if len(missing) > 3 else ''})")
        safetensors = [s for s in shards if s in files]
    elif not any(n.endswith(PICKLE_SUFFIXES) for n in files):
        reasons.append(f"no {SINGLE} or {INDEX} yet")
    # else: pickle-only weights -> complete-looking on purpose; the loader refuses them (see module docstring)

    for shard in safetensors:
        try:
            layout = _layout(fs, protocol, posixpath.join(folder, shard), files[shard])
        except FileNotFoundError:
            reasons.append(f"{shard} disappeared while listing")
            continue
        if layout.state == SHORT and not (declared_done or protocol in ATOMIC_PROTOCOLS):
            reasons.append(f"{shard} incomplete ({layout.detail})")

    if marker_file and marker_file not in files:
        reasons.append(f"marker file {marker_file} not present yet")

    return CheckpointRef(
        uri=to_uri(protocol, folder),
        run_id=default_run_id(folder),
        step=step,
        fingerprint=fingerprint(files, index_bytes),
        status=PENDING if reasons else COMPLETE,
        reason="; ".join(reasons) if reasons else None,
    )
