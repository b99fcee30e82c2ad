"""A claim write that reached S3 but whose answer was lost (connection dropped after the PUT was executed).

botocore/s3fs retry the conditional PUT; the retry carries the old ``If-Match`` ETag, which the first (successful)
PUT has just changed, so S3 answers 412. The claim is still ours: its stored nonce is the one we wrote. Found by
the chaos soak (scripts/soak.py): a renewal whose answer was lost was reported as "taken over by <ourselves>",
the watcher cancelled its own measurement and the checkpoint waited one lease for nothing.

Real moto S3 behind the soak's fault proxy, which drops exactly one PUT after forwarding it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from soaklib.fault_proxy import FaultPolicy, FaultProxy  # noqa: E402

from llc_service.watcher.claims import ClaimKey, ClaimStore  # noqa: E402
from tests.helpers.checkpoints import moto_s3  # noqa: E402


def test_renew_whose_answer_was_lost_keeps_the_claim():
    with moto_s3(buckets=("lostresp",)) as (endpoint, options):
        policy = FaultPolicy(rate=0.0)
        with FaultProxy(int(endpoint.rsplit(":", 1)[1]), policy) as proxy:
            via_proxy = {**options, "client_kwargs": {"endpoint_url": proxy.endpoint_url}}
            store = ClaimStore("s3://lostresp/results", via_proxy, lease_seconds=60)
            key = ClaimKey("run", "cfg", "fp", "step-000000000010")
            claim = store.try_claim(key)
            assert claim is not None

            policy.force("drop-after", method="PUT")  # the renewal's PUT is executed, its answer lost
            renewed = store.renew(claim)
            assert proxy.snapshot().get("drop-after") == 1, "the fault was not injected"

            stored = ClaimStore("s3://lostresp/results", options).read(key)  # straight to moto
            assert stored.owner == store.owner and stored.nonce == renewed.nonce
            assert renewed.lease_expires_at > claim.lease_expires_at
            # the claim we got back is usable: the next renewal and the release go through
            again = store.renew(renewed)
            assert store.release(again)
            assert not ClaimStore("s3://lostresp/results", options).read(key).is_live()
