"""The soak's own instruments, on known truths: the fault proxy injects what it counts and forwards everything
else untouched, and the checker finds a lost result, a duplicated one, incomplete draws and a live claim that we
plant. (A checker that cannot see a loss would make every soak pass.)"""

from __future__ import annotations

import http.client
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from soaklib.check import check_results, compare_with_clean  # noqa: E402
from soaklib.fault_proxy import FaultPolicy, FaultProxy  # noqa: E402

from tests.helpers.checkpoints import moto_s3  # noqa: E402
from tests.sinks.records import ok_record  # noqa: E402


def _request(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_fault_proxy_injects_what_it_counts_and_forwards_the_rest():
    import s3fs

    with moto_s3(buckets=("proxybkt",)) as (endpoint, options):
        upstream = int(endpoint.rsplit(":", 1)[1])
        policy = FaultPolicy(rate=0.0, seed=0)
        with FaultProxy(upstream, policy) as proxy:
            # no faults: signed s3fs traffic through the proxy, byte for byte
            fs = s3fs.S3FileSystem(skip_instance_cache=True, **{**options, "client_kwargs": {
                "endpoint_url": proxy.endpoint_url}})
            fs.pipe_file("proxybkt/a", b"hello")
            assert fs.cat_file("proxybkt/a") == b"hello"
            assert fs.ls("proxybkt", refresh=True) == ["proxybkt/a"]
            # chunked request bodies are forwarded with their framing (moto takes unsigned PUTs)
            conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
            conn.request("PUT", "/proxybkt/c", body=iter([b"abc", b"defg"]), encode_chunked=True)
            assert conn.getresponse().status == 200
            conn.close()
            fs.invalidate_cache()
            assert fs.cat_file("proxybkt/c") == b"abcdefg"
            forwarded = proxy.snapshot()["forwarded"]

            policy.rate, policy.kinds = 1.0, {"503": 1.0}
            status, body = _request(proxy.port, "GET", "/proxybkt/a")
            assert status == 503 and b"<Code>SlowDown</Code>" in body
            policy.kinds = {"500": 1.0}
            status, body = _request(proxy.port, "GET", "/proxybkt/a")
            assert status == 500 and b"<Code>InternalError</Code>" in body
            policy.kinds = {"drop": 1.0}  # never reaches the server
            with pytest.raises((ConnectionError, http.client.HTTPException)):
                _request(proxy.port, "PUT", "/proxybkt/dropped", b"x")
            policy.kinds = {"drop-after": 1.0}  # reaches the server, the answer is lost
            with pytest.raises((ConnectionError, http.client.HTTPException)):
                _request(proxy.port, "PUT", "/proxybkt/stored", b"y")

            policy.enabled = False
            counts = proxy.snapshot()
            assert {k: counts.get(k, 0) for k in ("503", "500", "drop", "drop-after")} == \
                {"503": 1, "500": 1, "drop": 1, "drop-after": 1}
            assert proxy.injected() == 4 and counts["forwarded"] == forwarded
            fs.invalidate_cache()
            assert not fs.exists("proxybkt/dropped")
            assert fs.cat_file("proxybkt/stored") == b"y"


def test_fault_policy_outage_fails_every_request():
    import time

    policy = FaultPolicy(rate=0.0, outage_every=0.05, outage_seconds=1e6, seed=0)
    assert policy.draw() is None  # the first outage starts after outage_every
    time.sleep(0.06)
    assert all(policy.draw() is not None for _ in range(50))
    policy.enabled = False
    assert policy.draw() is None
    with pytest.raises(ValueError, match="unknown fault kind"):
        FaultPolicy(kinds={"teapot": 1.0})


def test_checker_finds_planted_loss_duplicate_bad_draws_and_live_claim(tmp_path):
    from llc_service.sinks import ParquetSink
    from llc_service.watcher.claims import ClaimKey, ClaimStore

    results = str(tmp_path / "results")
    sink = ParquetSink(results)
    uri = {step: f"s3://ckpts/run-a/step{step}" for step in (100, 200, 300, 400)}
    for step in (100, 200, 300):
        sink.write(ok_record(step=step, fingerprint=f"fp{step}"))
    expected = list(uri.values())

    verdict, rows = check_results(results, {}, expected[:3])  # what was written is whole
    assert verdict.ok, verdict.problems()
    assert verdict.statuses == {u: "ok" for u in expected[:3]}
    verdict, _ = check_results(results, {}, expected)  # step 400 never measured: lost
    assert verdict.lost == [uri[400]] and not verdict.duplicated

    # a second row for step 200 under another name (what a non-idempotent retry would leave)
    sink.write(ok_record(step=200, fingerprint="fp200", attempt=2, run_id="run-a"))  # same name: overwritten
    assert not check_results(results, {}, expected[:3])[0].duplicated
    dup = ok_record(step=200, fingerprint="fp200", config_hash="cfg000000002")
    sink.write(dup)
    verdict, _ = check_results(results, {}, expected[:3])
    assert verdict.duplicated == [f"{uri[200]} x2"] and not verdict.ok

    # incomplete draws: the draws file of step 300 replaced by one with a chain missing
    results2 = str(tmp_path / "results2")
    sink2 = ParquetSink(results2)
    sink2.write(ok_record(step=300, fingerprint="fp300"))
    rec = ok_record(step=300, fingerprint="fp300")
    rec.loss_trace, rec.running_llc = rec.loss_trace[:2], rec.running_llc[:2]
    sink2.write(rec)
    verdict, _ = check_results(results2, {}, [uri[300]])
    assert verdict.bad_draws and "10 draw rows" in verdict.bad_draws[0]

    # a live claim is reported; a released one is not
    store = ClaimStore(results2, lease_seconds=60)
    claim = store.try_claim(ClaimKey("run-a", "cfg000000001", "fp300"))
    assert check_results(results2, {}, [uri[300]])[0].live_claims
    store.release(claim)
    assert not check_results(results2, {}, [uri[300]])[0].live_claims


def test_compare_with_clean_tells_bit_identical_from_close_and_from_different():
    from soaklib.check import Verdict

    base = {"u": {"status": "ok", "llc_mean": 1.0, "llc_std": 0.1, "init_loss": 2.0}}
    v = Verdict(1)
    compare_with_clean(v, base, {"u": dict(base["u"])})
    assert v.bit_identical is True and not v.mismatches
    v = Verdict(1)
    compare_with_clean(v, base, {"u": {**base["u"], "llc_mean": 1.0 + 1e-12}})
    assert v.bit_identical is False and not v.mismatches
    v = Verdict(1)
    compare_with_clean(v, base, {"u": {**base["u"], "llc_mean": 1.5}})
    assert v.mismatches and "llc_mean" in v.mismatches[0]
    v = Verdict(1)
    compare_with_clean(v, base, {"u": {**base["u"], "status": "failed"}})
    assert v.mismatches and "status" in v.mismatches[0]
