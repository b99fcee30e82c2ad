"""Claims are released even when the store has trouble at the moment of release.

Found by the chaos soak (CI, short soak): a watcher stopped (SIGTERM) during a 1 s S3 outage could not release the
claim it held; the claim outlived every watcher until its lease ran out. The watcher now keeps a failed release and
tries it again on its next turns and, when stopping, for up to a third of the lease. A claim whose write went
through while its answer was lost is recognised as ours by ``try_claim`` (no checkpoint waits a lease for nothing).

Real moto S3 behind the soak's fault proxy; a real Watcher on an empty local source.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from soaklib.fault_proxy import FaultPolicy, FaultProxy  # noqa: E402

from llc_service.config import MeasureConfig, WatchConfig  # noqa: E402
from llc_service.watcher.claims import ClaimKey, ClaimStore  # noqa: E402
from llc_service.watcher.watcher import Watcher  # noqa: E402
from tests.helpers.checkpoints import moto_s3  # noqa: E402

BUCKET = "relretry"


def _watcher(tmp_path: Path, options: dict, prefix: str) -> Watcher:
    store = ClaimStore(f"s3://{BUCKET}/{prefix}", options, lease_seconds=30)
    cfg = MeasureConfig(storage_options=options)

    def no_dispatcher():
        raise AssertionError("nothing here dispatches")

    (tmp_path / "src").mkdir(exist_ok=True)
    return Watcher(tmp_path / "src", tmp_path / "data.txt", f"s3://{BUCKET}/{prefix}", cfg,
                   WatchConfig(run_id="r", once=True), make_dispatcher=no_dispatcher, claims=store)


def _stored(options: dict, prefix: str, key: ClaimKey):
    return ClaimStore(f"s3://{BUCKET}/{prefix}", options).read(key)  # straight to moto, past the proxy


def test_a_release_that_fails_in_an_outage_is_done_when_the_store_is_back(tmp_path):
    with moto_s3(buckets=(BUCKET,)) as (endpoint, options):
        policy = FaultPolicy(rate=0.0, kinds={"503": 1.0, "500": 1.0})  # refused, never executed
        with FaultProxy(int(endpoint.rsplit(":", 1)[1]), policy) as proxy:
            # one try per request in botocore: an outage is seen in a second, not after their back-offs
            via = {**options, "client_kwargs": {"endpoint_url": proxy.endpoint_url},
                   "config_kwargs": {"retries": {"max_attempts": 1}}}
            w = _watcher(tmp_path, via, "outage")
            key = ClaimKey("r", "cfg", "fp", "step-000000000010")
            claim = w.store.try_claim(key)
            assert claim is not None

            policy.rate = 1.0  # an outage: every request fails
            assert w._release(claim) is False
            assert key in w.unreleased and proxy.injected() > 0
            assert _stored(options, "outage", key).is_live(), "the release must really have failed"

            threading.Timer(1.0, lambda: setattr(policy, "rate", 0.0)).start()  # the store comes back
            w.stop(patience=8.0)
            assert not w.unreleased
            stored = _stored(options, "outage", key)
            assert stored.released_at is not None and not stored.is_live()


def test_stop_releases_a_claim_whose_confirmation_failed(tmp_path):
    with moto_s3(buckets=(BUCKET,)) as (_endpoint, options):
        w = _watcher(tmp_path, options, "maybe")
        key = ClaimKey("r", "cfg", "fp", "step-000000000020")
        assert w.store.try_claim(key) is not None  # written; say its confirmation had failed in dispatch
        other = ClaimKey("r", "cfg", "fp", "step-000000000030")
        theirs = ClaimStore(f"s3://{BUCKET}/maybe", options, lease_seconds=30)
        assert theirs.try_claim(other) is not None
        w.maybe_held |= {key, other}
        w.stop(patience=0.0)
        assert not _stored(options, "maybe", key).is_live()
        assert _stored(options, "maybe", other).is_live(), "another owner's claim must be left alone"


def test_a_claim_whose_answer_was_lost_is_ours(tmp_path):
    with moto_s3(buckets=(BUCKET,)) as (endpoint, options):
        policy = FaultPolicy(rate=0.0)
        with FaultProxy(int(endpoint.rsplit(":", 1)[1]), policy) as proxy:
            via = {**options, "client_kwargs": {"endpoint_url": proxy.endpoint_url}}
            store = ClaimStore(f"s3://{BUCKET}/lost", via, lease_seconds=30)
            key = ClaimKey("r", "cfg", "fp", "step-000000000040")
            policy.force("drop-after", method="PUT")  # the create is executed, its answer lost
            claim = store.try_claim(key)
            assert proxy.snapshot().get("drop-after") == 1, "the fault was not injected"
            assert claim is not None and claim.owner == store.owner
            assert store.release(claim)
            assert not _stored(options, "lost", key).is_live()
