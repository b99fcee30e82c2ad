"""Claims are exclusive on every store: sequential and threaded races, lease expiry, takeover, release."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from llc_service.watcher.claims import Claim, ClaimKey, ClaimLost, ClaimStore
from tests.sinks.moto_s3 import s3_bucket, s3_endpoint  # noqa: F401 - fixtures

KEY = ClaimKey("run-a", "cfg000000001", "fp0123456789abcd")


class FakeClock:
    """Lease tests without sleeping: every store of a test shares one clock that the test moves."""

    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["local", "memory", "s3"])
def results(request, tmp_path):
    """(results_uri, storage_options) on each kind of store."""
    if request.param == "local":
        return str(tmp_path / "results"), None
    if request.param == "memory":
        return f"memory://claims-{uuid.uuid4().hex[:8]}/results", None
    bucket, options = request.getfixturevalue("s3_bucket")
    return f"{bucket}/results", options


def stores(results, n, **kw):
    uri, options = results
    return [ClaimStore(uri, options, owner=f"owner-{i}", **kw) for i in range(n)]


def race(fn, n):
    """Run fn(i) in n threads released together; return the results in thread order."""
    barrier, out = threading.Barrier(n), [None] * n

    def go(i):
        barrier.wait()
        out[i] = fn(i)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return out


def test_second_owner_is_refused(results):
    a, b = stores(results, 2)
    won = a.try_claim(KEY)
    assert won is not None and won.owner == "owner-0" and won.attempt == 1
    assert b.try_claim(KEY) is None
    assert a.try_claim(KEY) is None, "not re-entrant: one owner is one worker"
    assert b.read(KEY).owner == "owner-0"


def test_threads_racing_on_one_key_exactly_one_wins(results):
    racers = stores(results, 8)
    won = race(lambda i: racers[i].try_claim(KEY), 8)
    winners = [c for c in won if c is not None]
    assert len(winners) == 1, won
    assert racers[0].read(KEY).owner == winners[0].owner


def test_threads_stealing_one_expired_claim_exactly_one_wins(results):
    clock = FakeClock()
    first, *stealers = stores(results, 9, lease_seconds=1, clock=clock)
    old = first.try_claim(KEY)
    clock.t += 2  # expired
    won = race(lambda i: stealers[i].try_claim(KEY), 8)
    winners = [c for c in won if c is not None]
    assert len(winners) == 1, won
    assert winners[0].attempt == 2
    stored = first.read(KEY)
    assert stored.owner == winners[0].owner and stored.is_live(clock.t)
    with pytest.raises(ClaimLost):
        first.renew(old)
    assert first.release(old) is False
    assert first.read(KEY).owner == winners[0].owner, "a late release must not free the successor's claim"


def test_lease_expiry_lets_another_owner_take_over(results):
    clock = FakeClock()
    a, b = stores(results, 2, lease_seconds=1, clock=clock)
    mine = a.try_claim(KEY)
    clock.t += 0.5
    assert b.try_claim(KEY) is None
    mine = a.renew(mine)  # now live until t0 + 1.5
    clock.t += 0.9
    assert b.try_claim(KEY) is None, "renew must extend the lease"
    clock.t += 0.2
    taken = b.try_claim(KEY)
    assert taken is not None and taken.owner == "owner-1" and taken.attempt == 2
    with pytest.raises(ClaimLost):
        a.renew(mine)


def test_release_allows_reclaim(results):
    a, b = stores(results, 2)
    mine = a.try_claim(KEY)
    assert b.release(mine) is False, "only the owner releases"
    assert b.try_claim(KEY) is None
    assert a.release(mine) is True
    assert a.read(KEY).released_at is not None
    again = b.try_claim(KEY)
    assert again is not None and again.attempt == 2
    assert a.release(mine) is False, "a stale claim cannot release its successor"
    assert a.read(KEY).owner == "owner-1" and a.read(KEY).released_at is None


def test_real_time_lease_expiry_on_local_disk(tmp_path):
    a = ClaimStore(tmp_path, owner="a", lease_seconds=1.0)
    b = ClaimStore(tmp_path, owner="b", lease_seconds=1.0)
    assert a.try_claim(KEY) is not None
    assert b.try_claim(KEY) is None
    time.sleep(1.1)
    assert b.try_claim(KEY) is not None


def test_claim_file_layout_and_contents(tmp_path):
    key = ClaimKey("team/run 1", "cfg000000001", "fp0123456789abcd")
    store = ClaimStore(tmp_path, owner="watcher-1", lease_seconds=600)
    claim = store.try_claim(key)
    files = [p for p in (tmp_path / "claims").rglob("*.json")]
    assert len(files) == 1
    rel = files[0].relative_to(tmp_path).parts
    assert rel[0] == "claims" and "/" not in rel[1] and rel[1].startswith("team_run_1-")
    assert rel[2:] == ("cfg000000001", "fp0123456789abcd.json")
    doc = json.loads(files[0].read_text())
    for field in ("owner", "hostname", "pid", "created_at", "lease_expires_at", "attempt"):
        assert field in doc, field
    assert doc["owner"] == "watcher-1" and doc["attempt"] == 1 and doc["run_id"] == "team/run 1"
    assert Claim.from_bytes(files[0].read_bytes()).lease_expires_at == pytest.approx(claim.created_at + 600)
    assert [c.key for c in store.list_claims()] == [key]
    assert not list(files[0].parent.glob(".*.tmp")), "no temp files left behind"


def test_corrupt_claim_file_is_taken_over(tmp_path):
    store = ClaimStore(tmp_path, owner="a")
    path = tmp_path / KEY.relpath()
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    claim = store.try_claim(KEY)
    assert claim is not None and claim.owner == "a"


def test_processes_racing_on_local_disk(tmp_path):
    """flock excludes across processes, not only threads."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(4) as pool:
        won = pool.starmap(_claim_in_process, [(str(tmp_path), f"p{i}") for i in range(4)])
    assert sum(won) == 1


def _claim_in_process(root: str, owner: str) -> bool:
    store = ClaimStore(root, owner=owner)
    return store.try_claim(KEY) is not None
