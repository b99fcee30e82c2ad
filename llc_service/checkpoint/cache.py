"""A per-node, size-bounded copy of remote checkpoints, keyed by fingerprint.

``from_pretrained`` reads local files, so a remote checkpoint is copied once per node and reused (several
processes of one measurement, or several configs measuring the same checkpoint). Rules:

* the copy goes to ``.tmp-<key>-<random>`` and is renamed into place, so a half-copied folder is never used;
  when two processes copy the same checkpoint at once, the first rename wins and the other copy is dropped;
* each user holds a *lease* (a file named after host and pid) until ``release``; eviction skips leased entries
  and entries of live processes, so a checkpoint is never deleted under a process that is loading it;
* after each copy, least-recently-used entries are evicted until the cache fits ``max_bytes`` (the bound is
  soft: leased entries and the newest copy always stay);
* short critical sections (lookup + lease, rename, eviction) hold an ``flock`` on ``<root>/.lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

STALE_TMP_SECONDS = 6 * 3600
STALE_FOREIGN_LEASE_SECONDS = 24 * 3600


def default_cache_dir() -> str:
    return os.path.join(tempfile.gettempdir(), "llc-service-cache")


class CheckpointCache:
    def __init__(self, root: str | os.PathLike | None = None, max_gb: float = 50.0):
        self.root = Path(root or default_cache_dir())
        self.max_bytes = max_gb * 1024**3
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / ".leases").mkdir(exist_ok=True)

    # -- locking and leases ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self):
        with open(self.root / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _lease_dir(self, key: str) -> Path:
        return self.root / ".leases" / key

    def _take_lease(self, key: str) -> Path:
        lease = self._lease_dir(key) / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        lease.parent.mkdir(parents=True, exist_ok=True)
        lease.touch()
        return lease

    def _live_leases(self, key: str) -> list[Path]:
        folder = self._lease_dir(key)
        if not folder.is_dir():
            return []
        live = []
        for lease in folder.iterdir():
            if _lease_alive(lease):
                live.append(lease)
            else:
                lease.unlink(missing_ok=True)
        return live

    # -- the cache -------------------------------------------------------------------------------------------

    def entry(self, key: str) -> Path:
        return self.root / key

    def fetch(self, key: str, copy) -> tuple[Path, Path]:
        """The local folder for ``key`` and a lease on it; ``copy(tmp_dir)`` fills a new entry when missing."""
        dest = self.entry(key)
        with self._locked():
            lease = self._take_lease(key)
            hit = dest.is_dir()
            if hit:
                os.utime(dest)  # least-recently-used order
        if hit:
            return dest, lease
        tmp = self.root / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            copy(tmp)
            with self._locked():
                if dest.is_dir():  # another process finished first: use its copy
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    os.rename(tmp, dest)
                os.utime(dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            lease.unlink(missing_ok=True)
            raise
        self.evict(keep=key)
        return dest, lease

    def release(self, key: str, lease: Path | None, delete: bool = False) -> None:
        """Drop a lease; with ``delete``, also remove the entry now unless another live process holds it."""
        with self._locked():
            if lease is not None:
                lease.unlink(missing_ok=True)
            if delete and not self._live_leases(key):
                self._remove(key)

    def _remove(self, key: str) -> None:
        dest = self.entry(key)
        if dest.is_dir():
            trash = self.root / f".trash-{key}-{uuid.uuid4().hex[:8]}"
            os.rename(dest, trash)  # atomic: nobody sees a half-deleted entry
            shutil.rmtree(trash, ignore_errors=True)

    def size_bytes(self) -> int:
        return sum(_tree_size(p) for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def evict(self, keep: str | None = None) -> list[str]:
        """Remove least-recently-used unleased entries until the cache fits; returns the evicted keys."""
        evicted = []
        with self._locked():
            now = time.time()
            for p in self.root.iterdir():  # copies or deletions a crashed process left behind
                if p.name.startswith((".tmp-", ".trash-")) and now - p.stat().st_mtime > STALE_TMP_SECONDS:
                    shutil.rmtree(p, ignore_errors=True)
            entries = [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
            sizes = {p.name: _tree_size(p) for p in entries}
            total = sum(sizes.values())
            for p in sorted(entries, key=lambda p: p.stat().st_mtime):
                if total <= self.max_bytes:
                    break
                if p.name == keep or self._live_leases(p.name):
                    continue
                self._remove(p.name)
                total -= sizes[p.name]
                evicted.append(p.name)
        if evicted:
            log.info("checkpoint cache %s: evicted %d entries to stay under %.1f GB", self.root, len(evicted),
                     self.max_bytes / 1024**3)
        return evicted


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _lease_alive(lease: Path) -> bool:
    parts = lease.name.rsplit("-", 2)
    if len(parts) != 3:
        return False
    host = parts[0]
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if host != socket.gethostname():  # another node sharing the folder: trust it for a day
        try:
            return time.time() - lease.stat().st_mtime < STALE_FOREIGN_LEASE_SECONDS
        except FileNotFoundError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True
