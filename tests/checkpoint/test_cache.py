"""The per-node checkpoint cache: atomic fill, leases, least-recently-used eviction."""

import os
import time

import pytest

from llc_service.checkpoint import CheckpointCache


def _filler(nbytes):
    def copy(tmp):
        (tmp / "w.safetensors").write_bytes(b"\0" * nbytes)
    return copy


def test_evicts_least_recently_used_unleased_entries(tmp_path):
    cache = CheckpointCache(tmp_path, max_gb=2500 / 1024**3)  # room for two 1000-byte entries
    a, lease_a = cache.fetch("a", _filler(1000))
    b, lease_b = cache.fetch("b", _filler(1000))
    cache.release("a", lease_a)
    cache.release("b", lease_b)
    os.utime(a, (time.time() - 100, time.time() - 100))  # a is the least recently used
    c, lease_c = cache.fetch("c", _filler(1000))
    assert not a.exists() and b.exists() and c.exists()
    # a leased entry survives even when it is the oldest: the unleased one goes instead
    os.utime(c, (time.time() - 200, time.time() - 200))
    d, lease_d = cache.fetch("d", _filler(1000))
    assert c.exists() and d.exists() and not b.exists()
    # when everything is leased the bound is soft: nothing in use is deleted
    e, lease_e = cache.fetch("e", _filler(1000))
    assert c.exists() and d.exists() and e.exists() and cache.size_bytes() == 3000


def test_failed_copy_leaves_nothing_behind(tmp_path):
    cache = CheckpointCache(tmp_path, max_gb=1)

    def broken(tmp):
        (tmp / "half").write_bytes(b"x")
        raise OSError("network down")

    with pytest.raises(OSError, match="network down"):
        cache.fetch("k", broken)
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    assert not any((tmp_path / ".leases" / "k").iterdir())


def test_hit_does_not_copy_again(tmp_path):
    cache = CheckpointCache(tmp_path, max_gb=1)
    calls = []
    cache.fetch("k", lambda tmp: calls.append(1) or (tmp / "f").write_bytes(b"1"))
    cache.fetch("k", lambda tmp: calls.append(2))
    assert calls == [1]


def test_dead_process_leases_do_not_pin_entries(tmp_path):
    cache = CheckpointCache(tmp_path, max_gb=1)
    entry, lease = cache.fetch("k", _filler(10))
    lease.rename(lease.with_name(f"{lease.name.rsplit('-', 2)[0]}-999999999-deadbeef"))  # a pid that is not running
    cache.release("k", None, delete=True)
    assert not entry.exists()
