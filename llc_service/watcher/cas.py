"""Compare-and-swap on one small file: the primitive that makes claims exclusive.

A claim needs three operations that cannot interleave badly between two machines:

* ``create(path, data)``: write only if nothing is there (exactly one of N racers wins),
* ``read(path)``: the bytes and a *version token* naming exactly those bytes,
* ``replace(path, data, token)``: overwrite only if the file is still the version ``token`` names.

``replace`` is what makes taking over an expired claim safe: two stealers that both saw the same expired
version race on it and only one replace succeeds. (Delete-then-create is not enough on its own: the slower
stealer's delete would remove the faster one's fresh claim and both would "win".)

How each store provides it:

* **S3** (and S3-compatible stores that implement conditional writes): ``PutObject`` with ``If-None-Match: *``
  (create) and ``If-Match: <ETag>`` (replace); the token is the ETag. Atomic on the server, so it holds across
  machines. Checked against moto 5.2: 8 racing threads, exactly one winner. fsspec's generic
  ``pipe_file(mode="create")`` is *not* used for local files: there it is an ``exists()`` check followed by a
  write, which two threads can both pass.
* **local disk**: every operation holds an ``fcntl.flock`` on ``claims/.lock`` (released by the kernel if the
  process dies, so it never goes stale) and writes via a temp file + ``os.replace``; the token is a hash of the
  bytes. Exclusive between processes of one machine, and across machines only where the shared filesystem
  honours ``flock`` (NFSv4 does; many FUSE mounts do not).
* **memory://**: the store is one dict per process, so a process-wide lock is enough.
* anything else: best effort (exists-check + write) with a warning; use S3 or local disk for real exclusivity.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import uuid
from typing import Protocol

log = logging.getLogger(__name__)


class Cas(Protocol):
    def read(self, path: str) -> tuple[bytes, str] | None: ...
    def create(self, path: str, data: bytes) -> str | None: ...
    def replace(self, path: str, data: bytes, token: str) -> str | None: ...


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# S3: conditional PUT


_LOST_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
"""Answers meaning "someone else's version is there": 412 from a failed condition, 409 from S3 when two
conditional writes to one key overlap (retryable, but for a claim it simply means we lost)."""


def _error_code(exc: BaseException) -> str | None:
    """The S3 error code behind an s3fs exception (s3fs keeps the botocore ClientError as ``__cause__``)."""
    for e in (exc, exc.__cause__, exc.__context__):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            err = response.get("Error", {})
            status = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            return str(err.get("Code") or status)
    return None


class S3Cas:
    """Conditional PUTs through the s3fs client (same endpoint, credentials and retries as everything else)."""

    def __init__(self, fs):
        self.fs = fs

    def _run(self, coro_fn, *args):
        from fsspec.asyn import sync

        return sync(self.fs.loop, coro_fn, *args)

    async def _get(self, bucket: str, key: str):
        resp = await self.fs._call_s3("get_object", Bucket=bucket, Key=key)  # noqa: SLF001
        body = resp["Body"]
        try:
            data = await body.read()
        finally:
            body.close()
        return data, resp["ETag"]

    async def _put(self, bucket: str, key: str, data: bytes, condition: dict):
        resp = await self.fs._call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)  # noqa: SLF001
        return resp["ETag"]

    def read(self, path: str) -> tuple[bytes, str] | None:
        bucket, key, _ = self.fs.split_path(path)
        try:
            return self._run(self._get, bucket, key)
        except FileNotFoundError:
            return None

    def _conditional_put(self, path: str, data: bytes, condition: dict) -> str | None:
        bucket, key, _ = self.fs.split_path(path)
        try:
            return self._run(self._put, bucket, key, data, condition)
        except FileExistsError:  # s3fs's translation of a failed If-None-Match
            return None
        except FileNotFoundError as exc:  # If-Match on a key that is gone; a gone bucket is no lost race
            if _error_code(exc) == "NoSuchBucket":
                from llc_service.errors import StorageRefused

                raise StorageRefused(f"bucket {bucket!r} does not exist (any more)") from exc
            return None
        except OSError as exc:
            if _error_code(exc) in _LOST_CODES:
                return None
            raise

    def create(self, path: str, data: bytes) -> str | None:
        return self._conditional_put(path, data, {"IfNoneMatch": "*"})

    def replace(self, path: str, data: bytes, token: str) -> str | None:
        return self._conditional_put(path, data, {"IfMatch": token})


# ---------------------------------------------------------------------------------------------------------------
# local disk and memory: read-check-write under a lock


class LockedCas:
    """Every operation runs under ``lock()``; tokens are content hashes (claims carry a nonce, so no ABA)."""

    def __init__(self, fs, lock):
        self.fs, self._lock = fs, lock

    def _read_unlocked(self, path: str) -> tuple[bytes, str] | None:
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        return data, _digest(data)

    def _write(self, path: str, data: bytes) -> None:
        self.fs.pipe_file(path, data)

    def read(self, path: str) -> tuple[bytes, str] | None:
        with self._lock():
            return self._read_unlocked(path)

    def create(self, path: str, data: bytes) -> str | None:
        with self._lock():
            if self._read_unlocked(path) is not None:
                return None
            self._write(path, data)
            return _digest(data)

    def replace(self, path: str, data: bytes, token: str) -> str | None:
        with self._lock():
            current = self._read_unlocked(path)
            if current is None or current[1] != token:
                return None
            self._write(path, data)
            return _digest(data)


class LocalCas(LockedCas):
    """Local disk: ``flock`` on one lock file under the claims root, atomic temp-file + rename writes."""

    def __init__(self, fs, root: str):
        self.root = root
        super().__init__(fs, self._flock)

    @contextlib.contextmanager
    def _flock(self):
        import fcntl

        os.makedirs(self.root, exist_ok=True)
        # a fresh open file description per call: flock then excludes other threads of this process too
        fd = os.open(os.path.join(self.root, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _write(self, path: str, data: bytes) -> None:
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a crash leaves the old claim or the new one, never half a file


_MEMORY_LOCK = threading.Lock()
"""fsspec's memory filesystem is one dict per process; one lock per process serializes it."""


class MemoryCas(LockedCas):
    def __init__(self, fs):
        super().__init__(fs, lambda: _MEMORY_LOCK)


class BestEffortCas(LockedCas):
    """Stores without a known conditional write: check-then-write, exclusive only within this process."""

    _warned: set[str] = set()

    def __init__(self, fs, protocol: str):
        if protocol not in self._warned:
            self._warned.add(protocol)
            log.warning("claims on %s:// are best effort (no conditional write known for this store); two watchers "
                        "on different machines may both measure one checkpoint", protocol)
        lock = threading.Lock()
        super().__init__(fs, lambda: lock)

    def _write(self, path: str, data: bytes) -> None:
        self.fs.pipe_file(path, data)


def cas_for(fs, claims_root: str) -> Cas:
    """The strongest compare-and-swap this filesystem supports."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("s3", "s3a"):
        return S3Cas(fs)
    if protocol in ("file", "local"):
        return LocalCas(fs, claims_root)
    if protocol == "memory":
        return MemoryCas(fs)
    return BestEffortCas(fs, protocol)
