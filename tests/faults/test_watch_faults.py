"""The watcher under faults, end to end: real tiny checkpoints, real token data, a real local Ray cluster, Parquet
results read back with the package's reader. Nothing of ours is mocked; faults are made the way they happen
(files damaged on disk, a Ray worker process SIGKILLed, the S3 results server stopped, the watcher SIGKILLed).

In every case: each good checkpoint has exactly one ``ok`` row, each bad one exactly one failed row whose error
names the problem, and no checkpoint has more than one row.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading

import pytest

from llc_service.bucket import inspect_checkpoint
from llc_service.report.wandb_trajectory import trajectory_run_id
from llc_service.watcher.claims import ClaimStore
from llc_service.watcher.watch import watch
from tests.helpers.checkpoints import (
    make_checkpoint,
    make_pickle_checkpoint,
    set_config,
    shard_files,
    write_nan_weights,
)
from tests.helpers.watch import (
    LogRecorder,
    RestartableMoto,
    WatchThread,
    cli_path,
    kill_processes,
    rows_by_step,
    start_cli,
    stop_tree,
    tiny_config,
    tiny_sets,
    unit_worker_processes,
    wait_until,
    write_tokens,
)


def _only_row(rows: dict, step: int) -> dict:
    assert len(rows.get(step, [])) == 1, f"step {step}: expected exactly one row, got {rows.get(step)}"
    return rows[step][0]


def _assert_ok_once(rows: dict, steps) -> None:
    for step in steps:
        row = _only_row(rows, step)
        assert row["status"] == "ok", f"step {step}: {row['status']} {row['error']}"


def _all_released(results_uri: str, storage_options=None) -> bool:
    claims = ClaimStore(results_uri, storage_options).list_claims()
    return bool(claims) and all(c.released_at is not None for c in claims)


def test_once_measures_each_checkpoint_once_and_a_rerun_measures_nothing(ray_cluster, tokens, tmp_path):
    bucket = tmp_path / "bucket"
    for seed, step in enumerate((100, 200, 300)):
        make_checkpoint(bucket / "run1" / f"step{step}", seed=seed)
    out = str(tmp_path / "results")
    cfg = tiny_config(wandb_project="llc-watch-test")

    with LogRecorder() as logs:
        assert watch(str(bucket), tokens, out, cfg, once=True, interval=0.5) == 0
    rows = rows_by_step(out)
    assert sorted(rows) == [100, 200, 300]
    _assert_ok_once(rows, [100, 200, 300])
    assert all(rows[s][0]["attempt"] == 1 and rows[s][0]["config_hash"] == cfg.config_hash() for s in rows)
    for step in (100, 200, 300):  # one progress line per checkpoint
        assert logs.has_line(f"run1 step {step}:  λ̂ = ", "[ok]")
    assert _all_released(out)
    # the wandb trajectory run (offline) was rebuilt from Parquet under its deterministic id
    traj = trajectory_run_id("run1", cfg.config_hash())
    assert list(ray_cluster.rglob(f"run-{traj}.wandb")), "no wandb trajectory run written"

    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "results" / "summary").rglob("*.parquet")}
    assert len(files) == 3
    with LogRecorder() as logs:
        assert watch(str(bucket), tokens, out, cfg, once=True, interval=0.5, use_wandb=False) == 0
    assert logs.has("3 already measured") and not logs.has("dispatched")
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "results" / "summary").rglob("*.parquet")} == files
    assert sum(len(v) for v in rows_by_step(out).values()) == 3


def test_two_watchers_on_one_bucket_measure_each_checkpoint_once(ray_cluster, tokens, tmp_path):
    """Two watchers race for the same checkpoints with a 1.5 s lease and measurements that take longer: claims
    keep each checkpoint to one watcher, and lease renewal keeps the other from taking over a running one."""
    steps = (100, 200, 300, 400)
    for seed, step in enumerate(steps):
        make_checkpoint(tmp_path / "bucket" / "run1" / f"step{step}", seed=seed)
    out = str(tmp_path / "results")
    cfg = tiny_config(num_draws=150, lease_seconds=1.5)
    args = (str(tmp_path / "bucket"), tokens, out, cfg)
    with LogRecorder() as logs:
        with WatchThread(*args, once=True, interval=0.3, use_wandb=False, max_concurrent=1) as a, \
                WatchThread(*args, once=True, interval=0.3, use_wandb=False, max_concurrent=1) as b:
            wait_until(lambda: not a.thread.is_alive() and not b.thread.is_alive(), 240, 0.2, "both watchers")
            assert a.join() == 0 and b.join() == 0
    rows = rows_by_step(out)
    assert sorted(rows) == list(steps)
    _assert_ok_once(rows, steps)
    assert all(rows[s][0]["attempt"] == 1 for s in steps)
    dispatched = [m for m in logs.messages if m.startswith("claimed and dispatched")]
    assert len(dispatched) == len(steps), dispatched  # nothing measured twice, nothing taken over
    assert logs.has("is being measured by")  # they did race
    assert not logs.has("took over") and not logs.has("lost our claim")
    assert _all_released(out)


def _truncate(folder):
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    return folder


MARKER = "trainer_state.json"


def _mark(folder, step: int):
    (folder / MARKER).write_text(f'{{"global_step": {step}}}')
    return folder


def _n_rows(out: str) -> int:
    return sum(len(v) for v in rows_by_step(out).values())


def test_bad_checkpoints_fail_with_their_reason_and_late_uploads_are_measured(ray_cluster, tokens, tmp_path):
    """Trainer-style folders (a marker file written last). Damaged ones get one failed row naming the damage; a
    partial upload is measured once it completes; an upload stuck for longer than ``pending_timeout`` gets a failed
    row saying what is missing, replaced by its result if it completes after all."""
    run = tmp_path / "bucket" / "run1"
    for seed, step in enumerate((100, 200, 300)):
        make_checkpoint(run / f"step{step}", seed=seed, trainer_step=step)
    _mark(_truncate(make_checkpoint(run / "step110", seed=3)), 110)
    shard_files(make_checkpoint(run / "step120", sharded=True, trainer_step=120))[1].unlink()
    _mark(make_pickle_checkpoint(run / "step130"), 130)
    set_config(make_checkpoint(run / "step140", trainer_step=140),
               auto_map={"AutoModelForCausalLM": "modeling_evil.Evil"})
    (make_checkpoint(run / "step150", trainer_step=150) / "modeling_evil.py").write_text("import os\n")
    write_nan_weights(make_checkpoint(run / "step160", trainer_step=160))
    # an upload that died half-way (no weights, no marker) and one that stalls before its marker
    (make_checkpoint(run / "step170", seed=5) / "model.safetensors").unlink()
    stalled = make_checkpoint(run / "step180", seed=6)
    # a partial upload: everything but the weights and the marker now; the weights (in place, in two halves) and
    # the marker later
    staged = make_checkpoint(tmp_path / "staging" / "step400", seed=4)
    late = run / "step400"
    late.mkdir()
    for f in staged.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, late / f.name)
    weights = (staged / "model.safetensors").read_bytes()
    out = str(tmp_path / "results")
    expected_failures = {
        110: ["CheckpointError", "model.safetensors is truncated or corrupt"],
        120: ["CheckpointError", "shards listed in model.safetensors.index.json are missing"],
        130: ["CheckpointError", "pickle"],
        140: ["CheckpointError", "auto_map"],
        150: ["CheckpointError", "Python files"],
        160: ["CheckpointError", "non-finite"],
        170: ["IncompleteCheckpoint", "no model.safetensors", f"marker file {MARKER} not present"],
    }

    cfg = tiny_config(marker_file=MARKER)
    with LogRecorder() as logs, WatchThread(str(tmp_path / "bucket"), tokens, out, cfg, interval=0.3,
                                            use_wandb=False, pending_timeout=6.0, retry_delay=0.5) as w:
        logs.wait_for("pending: run1 step 400 (no model.safetensors", 60)
        with open(late / "model.safetensors", "wb") as f:  # a trainer writing in place: first half...
            f.write(weights[: len(weights) // 2])
        logs.wait_for("pending: run1 step 400 (model.safetensors incomplete", 30)
        with open(late / "model.safetensors", "ab") as f:  # ...then the rest, then the marker
            f.write(weights[len(weights) // 2:])
        logs.wait_for(f"pending: run1 step 400 (marker file {MARKER} not present yet)", 30)
        _mark(late, 400)
        # the stalled one times out, then completes after all
        wait_until(lambda: any(r["status"] == "failed" for r in rows_by_step(out).get(180, [])), 120, 0.3,
                   "the stalled upload to be recorded as incomplete")
        _mark(stalled, 180)
        wait_until(lambda: _n_rows(out) >= 12 and rows_by_step(out)[180][0]["status"] == "ok", 180, 0.5,
                   "12 outcomes")
        assert w.join() == 0

    rows = rows_by_step(out)
    assert sorted(rows) == [100, 110, 120, 130, 140, 150, 160, 170, 180, 200, 300, 400], rows.keys()
    _assert_ok_once(rows, [100, 180, 200, 300, 400])
    for step, words in expected_failures.items():
        row = _only_row(rows, step)
        assert row["status"] == "failed" and row["error_kind"] == "permanent", (step, row["error"])
        for word in words:
            assert word in row["error"], (step, row["error"])
        assert row["attempt"] == 1  # permanent: never retried
    # the late checkpoints were measured once complete, on their complete files
    for step, folder in ((400, late), (180, stalled)):
        ref = inspect_checkpoint(str(folder), marker_file=MARKER)
        assert ref.is_complete and rows[step][0]["checkpoint_fingerprint"] == ref.fingerprint
    assert logs.has("run1 step 180: failed [permanent] incomplete") and not logs.has("retrying")
    assert _all_released(out)


def test_worker_killed_mid_measurement_is_retried_to_one_result(ray_cluster, tokens, tmp_path):
    make_checkpoint(tmp_path / "bucket" / "run1" / "step100")
    out = str(tmp_path / "results")
    cfg = tiny_config(num_draws=150)  # a few seconds: the kill lands while it measures

    with LogRecorder() as logs, WatchThread(str(tmp_path / "bucket"), tokens, out, cfg, once=True, interval=0.3,
                                            use_wandb=False, retry_delay=0.5) as w:
        victims = wait_until(unit_worker_processes, 120, 0.05, "a Ray worker running the measurement")
        kill_processes(victims)
        wait_until(lambda: not w.thread.is_alive(), 180, 0.2, "the watcher to finish")
        assert w.join() == 0

    row = _only_row(rows_by_step(out), 100)
    assert row["status"] == "ok" and row["attempt"] == 2, (row["status"], row["attempt"], row["error"])
    assert logs.has("attempt 1 of 3 failed [transient]")
    assert _all_released(out)


def test_a_recorded_transient_failure_is_retried_on_restart_within_the_bound(ray_cluster, tokens, tmp_path):
    make_checkpoint(tmp_path / "bucket" / "run1" / "step100")
    out, src = str(tmp_path / "results"), str(tmp_path / "bucket")
    no_retry = tiny_config(num_draws=150, max_retries=0)

    with WatchThread(src, tokens, out, no_retry, once=True, interval=0.3, use_wandb=False, retry_delay=0.5) as w:
        kill_processes(wait_until(unit_worker_processes, 120, 0.05, "a Ray worker running the measurement"))
        wait_until(lambda: not w.thread.is_alive(), 180, 0.2, "the watcher to finish")
        assert w.join() == 0
    row = _only_row(rows_by_step(out), 100)  # the lost worker left no row: the watcher recorded the failure
    assert (row["status"], row["error_kind"], row["attempt"]) == ("failed", "transient", 1)
    assert "WorkerCrashedError" in row["error"] and "gave up after 1 attempts" in row["error"]

    with LogRecorder() as logs:  # at the bound (1 + max_retries attempts): a restart leaves it alone
        assert watch(src, tokens, out, no_retry, once=True, interval=0.3, use_wandb=False) == 0
        assert logs.has("1 already measured") and not logs.has("dispatched")
    one_retry = tiny_config(num_draws=150, max_retries=1)  # max_retries is not part of the config hash
    assert one_retry.config_hash() == no_retry.config_hash()
    with LogRecorder() as logs:  # within the bound: retried as attempt 2, whose row replaces the failed one
        assert watch(src, tokens, out, one_retry, once=True, interval=0.3, use_wandb=False) == 0
        assert logs.has("1 to retry") and logs.has("claimed and dispatched run1 step 100 (attempt 2)")
    row = _only_row(rows_by_step(out), 100)
    assert (row["status"], row["attempt"]) == ("ok", 2)


def test_until_finishes_like_once_after_the_producer_is_done(ray_cluster, tokens, tmp_path):
    run = tmp_path / "bucket" / "run1"
    make_checkpoint(run / "step100")
    out = str(tmp_path / "results")
    producer_done = threading.Event()
    with LogRecorder() as logs, WatchThread(str(tmp_path / "bucket"), tokens, out, tiny_config(), interval=30.0,
                                            use_wandb=False, until=producer_done.is_set) as w:
        logs.wait_for_line("run1 step 100:  λ̂ = ", "[ok]", timeout=120)
        make_checkpoint(run / "step200", seed=1)  # the producer's last checkpoint, then it exits
        producer_done.set()
        # no poll is due for 30 s: the final listing happens at once, and the watcher ends by itself
        wait_until(lambda: not w.thread.is_alive(), 120, 0.2, "the watcher to finish")
        assert w.code == 0 and w.error is None
    rows = rows_by_step(out)
    assert sorted(rows) == [100, 200]
    _assert_ok_once(rows, [100, 200])
    assert logs.has("producer finished") and logs.has("watcher stopped (done)")


def test_stop_after_cancels_the_measurement_in_flight_and_frees_its_claim(ray_cluster, tokens, tmp_path):
    ckpt = make_checkpoint(tmp_path / "bucket" / "run1" / "step100")
    out = str(tmp_path / "results")
    cfg = tiny_config(num_draws=5000)  # far longer than the watcher is allowed to run
    with LogRecorder() as logs:
        assert watch(str(tmp_path / "bucket"), tokens, out, cfg, interval=0.3, use_wandb=False, stop_after=4.0) == 0
    assert logs.has("claimed and dispatched run1 step 100") and logs.has("cancelled 1 measurement(s) in flight")
    assert rows_by_step(out) == {}  # nothing half-done is recorded
    assert _all_released(out)
    key = ClaimStore(out).list_claims()[0].key
    assert ClaimStore(out).try_claim(key) is not None  # the next watcher can take it at once
    assert key.fingerprint == inspect_checkpoint(str(ckpt)).fingerprint


def test_diverging_chains_give_one_diverged_row_that_is_not_retried(ray_cluster, tokens, tmp_path, monkeypatch):
    for seed, step in enumerate((100, 200)):
        make_checkpoint(tmp_path / "bucket" / "run1" / f"step{step}", seed=seed)
    out = str(tmp_path / "results")
    sane, wild = tiny_config(wandb_project="llc-watch-test"), tiny_config(epsilon=1e4, max_retries=3)

    # wandb broken in the watcher's process (the workers' wandb is untouched): it must not cost a result
    import wandb

    def broken_init(*args, **kwargs):
        raise wandb.errors.UsageError("wandb is down (on purpose)")

    with monkeypatch.context() as m, LogRecorder() as logs:
        m.setattr(wandb, "init", broken_init)
        assert watch(str(tmp_path / "bucket"), tokens, out, sane, once=True, interval=0.3) == 0
        assert logs.has("not rebuilt") and logs.has_line("run1 step 200:  λ̂ = ", "[ok]")
    with LogRecorder() as logs:
        assert watch(str(tmp_path / "bucket"), tokens, out, wild, once=True, interval=0.3, use_wandb=False) == 0
        assert not logs.has("retrying")
    with LogRecorder() as logs:  # a rerun does not retry the diverged ones either
        assert watch(str(tmp_path / "bucket"), tokens, out, wild, once=True, interval=0.3, use_wandb=False) == 0
        assert logs.has("2 already measured") and not logs.has("dispatched")

    rows = rows_by_step(out)
    for step in (100, 200):
        by_cfg = {r["config_hash"]: r for r in rows[step]}
        assert len(rows[step]) == 2 and set(by_cfg) == {sane.config_hash(), wild.config_hash()}
        assert by_cfg[sane.config_hash()]["status"] == "ok"
        diverged = by_cfg[wild.config_hash()]
        assert diverged["status"] == "diverged" and diverged["attempt"] == 1
        assert "AllChainsDivergedError" in diverged["error"]


def test_results_store_down_for_a_moment_is_retried_to_one_ok_row(ray_cluster, tokens, tmp_path):
    for seed, step in enumerate((100, 200)):
        make_checkpoint(tmp_path / "bucket" / "run1" / f"step{step}", seed=seed)
    with RestartableMoto(buckets=("llc-results",)) as s3:
        out = "s3://llc-results/faults"
        fast_fail = {**s3.storage_options, "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}}
        cfg = tiny_config(num_draws=150, max_retries=4, storage_options=fast_fail)

        with LogRecorder() as logs, WatchThread(str(tmp_path / "bucket"), tokens, out, cfg, once=True, interval=0.3,
                                                use_wandb=False, retry_delay=1.0, max_concurrent=1) as w:
            logs.wait_for("claimed and dispatched run1 step 100", 60)
            s3.stop()  # the results store goes away while the first checkpoint is measured...
            try:
                logs.wait_for("failed [transient]", 120)
            finally:
                s3.start()  # ...and comes back (same port, same objects)
            wait_until(lambda: not w.thread.is_alive(), 180, 0.2, "the watcher to finish")
            assert w.join() == 0

        rows = rows_by_step(out, s3.storage_options)
        assert sorted(rows) == [100, 200]
        _assert_ok_once(rows, [100, 200])
        assert rows[100][0]["attempt"] >= 2 and rows[200][0]["attempt"] == 1
        assert _all_released(out, s3.storage_options)


@pytest.mark.slow
def test_watcher_stopped_or_killed_mid_run_and_restarted_leaves_one_row_per_checkpoint(tokens, tmp_path):
    import psutil

    bucket = tmp_path / "bucket"
    steps = (100, 200, 300, 400)
    for seed, step in enumerate(steps):
        make_checkpoint(bucket / "run1" / f"step{step}", seed=seed)
    out = tmp_path / "results"
    args = ["watch", str(bucket), "--data", tokens, "--out", str(out), "--interval", "0.5", "--max-concurrent", "1",
            "--no-wandb", *tiny_sets(lease_seconds=3, num_draws=200)]

    def measured() -> set[str]:  # fingerprints with a result (file name: step-<step>-<fingerprint>-data-<data>)
        return {p.stem.split("-data-")[0].rsplit("-", 1)[1] for p in (out / "summary").rglob("*.parquet")}

    def unreleased() -> list:
        return [c for c in ClaimStore(str(out)).list_claims() if c.released_at is None]

    def mid_run() -> bool:  # one result recorded and another checkpoint claimed but not measured yet
        return bool(measured()) and any(c.key.fingerprint not in measured() for c in unreleased())

    # SIGTERM (what `ray job stop` sends): a clean stop, exit 0, in-flight work cancelled, claims released
    proc, log_file, env = start_cli(args, tmp_path, "sigterm.log")
    try:
        wait_until(lambda: "claimed and dispatched" in log_file.read_text() or proc.poll() is not None, 240, 0.1,
                   "a dispatch")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log_file.read_text()[-3000:]
    finally:
        stop_tree(proc)
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    assert "received SIGTERM" in log_file.read_text() and not unreleased()

    proc, log_file, env = start_cli(args, tmp_path, "sigkill.log")
    snapshot = []
    try:
        wait_until(lambda: mid_run() or proc.poll() is not None, 240, 0.1, "a result and a claim in flight")
        assert proc.poll() is None, log_file.read_text()[-3000:]
        snapshot = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)  # no clean-up at all: its live claim stays behind
        proc.wait(30)
    finally:
        stop_tree(proc, snapshot)
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    before = measured()
    orphans = [c for c in unreleased() if c.key.fingerprint not in before]
    assert orphans and len(before) < len(steps), "the watcher was not killed mid-run; nothing tested"

    env2 = {**env, "RAY_TMPDIR": env["RAY_TMPDIR"] + "b"}
    os.makedirs(env2["RAY_TMPDIR"], exist_ok=True)
    try:
        done = subprocess.run([cli_path(), *args, "--once"], env=env2, cwd=str(tmp_path), capture_output=True,
                              text=True, timeout=400)
    finally:
        shutil.rmtree(env2["RAY_TMPDIR"], ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = rows_by_step(str(out))
    assert sorted(rows) == list(steps)
    _assert_ok_once(rows, steps)
    assert _all_released(str(out))
    # the dead watcher's claim was taken over once its lease ran out, and that counts as a second attempt
    assert "took over the expired claim" in done.stderr
    by_fp = {r[0]["checkpoint_fingerprint"]: r[0] for r in rows.values()}
    assert all(by_fp[c.key.fingerprint]["attempt"] == c.attempt + 1 for c in orphans)


def test_byte_identical_checkpoints_are_each_measured_once(ray_cluster, tokens, tmp_path):
    """Same weights under two steps (a run whose weights did not change between saves) and under two step-less
    folders (a copied ``final/``): each checkpoint gets its own row, result file, claim and wandb run, on local disk
    (copies with the same mtimes: the same fingerprint) and on S3 (the same ETags)."""
    from tests.helpers.checkpoints import moto_s3, upload

    src = tmp_path / "src"
    make_checkpoint(src, seed=3)
    bucket = tmp_path / "bucket"
    for name in ("step100", "step150", "final", "final-copy"):
        shutil.copytree(src, bucket / "run1" / name)  # copy2: contents and mtimes preserved
    fps = {inspect_checkpoint(str(bucket / "run1" / n)).fingerprint for n in ("step100", "step150", "final")}
    assert len(fps) == 1, "the copies must look byte-identical to the watcher for this test to mean anything"
    cfg = tiny_config(wandb_project="llc-identity-test")

    def check(out, opts=None):
        rows = rows_by_step(out, opts)
        assert sorted(rows, key=str) == [100, 150, None] and all(len(rows[s]) == 1 for s in (100, 150)), rows
        assert sorted(r["checkpoint_uri"].rstrip("/").rsplit("/", 1)[-1] for r in rows[None]) == ["final",
                                                                                                  "final-copy"]
        assert all(r["status"] == "ok" for rs in rows.values() for r in rs)
        claims = ClaimStore(out, opts).list_claims()
        assert len(claims) == 4 and len({c.key for c in claims}) == 4
        assert all(c.released_at is not None for c in claims)

    out = str(tmp_path / "results")
    with LogRecorder() as logs:
        assert watch(str(bucket), tokens, out, cfg, once=True, interval=0.3) == 0
    assert logs.has("4 new")
    check(out)
    from llc_service.sinks.wandb import wandb_run_id

    ids = {wandb_run_id(r["run_id"], r["checkpoint_step"], r["config_hash"], r["checkpoint_fingerprint"],
                        r["checkpoint_uri"], data_fingerprint=r["data_fingerprint"])
           for rs in rows_by_step(out).values() for r in rs}
    assert len(ids) == 4
    for wid in ids:
        assert list(ray_cluster.rglob(f"run-{wid}.wandb")), f"no wandb run {wid}"
    with LogRecorder() as logs:  # and nothing is measured twice on a rerun
        assert watch(str(bucket), tokens, out, cfg, once=True, interval=0.3, use_wandb=False) == 0
    assert logs.has("4 already measured") and not logs.has("dispatched")

    with moto_s3(buckets=("idbucket",)) as (_, opts):
        for name in ("step100", "step150", "final", "final-copy"):
            upload(src, f"s3://idbucket/ckpts/run1/{name}", opts)
        s3_cfg = tiny_config(storage_options=opts)
        s3_out = "s3://idbucket/results"
        assert watch("s3://idbucket/ckpts", tokens, s3_out, s3_cfg, once=True, interval=0.3, use_wandb=False) == 0
        check(s3_out, opts)


def test_a_checkpoint_that_kills_its_worker_every_time_ends_failed_and_blocks_nothing(ray_cluster, tokens,
                                                                                       tmp_path):
    from tests.helpers.crash import crash_on_poison

    bucket = tmp_path / "bucket"
    for seed, step in enumerate((100, 200, 300)):
        make_checkpoint(bucket / "run1" / f"step{step}", seed=seed)
    (bucket / "run1" / "step200" / "CRASH").write_text("the measuring process dies on this one\n")
    out, cfg = str(tmp_path / "results"), tiny_config(max_retries=2)

    with LogRecorder() as logs:
        assert watch(str(bucket), tokens, out, cfg, once=True, interval=0.3, use_wandb=False, retry_delay=0.2,
                     max_concurrent=1, unit_fn=crash_on_poison) == 0
    rows = rows_by_step(out)
    assert [rows[s][0]["status"] for s in (100, 300)] == ["ok", "ok"]  # the others were not blocked
    bad = _only_row(rows, 200)
    assert (bad["status"], bad["error_kind"], bad["attempt"]) == ("failed", "transient", 3)
    assert "WorkerCrashedError" in bad["error"] and "gave up after 3 attempts" in bad["error"], bad["error"]
    assert bad["error_type"] == "TransientFailure"
    assert logs.has("attempt 2 of 3 failed [transient]")
    assert _all_released(out)
    with LogRecorder() as logs:  # a restarted watcher does not try it again
        assert watch(str(bucket), tokens, out, cfg, once=True, interval=0.3, use_wandb=False,
                     unit_fn=crash_on_poison) == 0
        assert logs.has("3 already measured") and not logs.has("dispatched")


def test_a_results_store_that_refuses_for_good_stops_the_watcher_with_a_clear_error(ray_cluster, tokens,
                                                                                    tmp_path):
    from tests.helpers.checkpoints import moto_s3

    bucket = tmp_path / "bucket"
    make_checkpoint(bucket / "run1" / "step100")
    with moto_s3(buckets=("refusebkt",)) as (_, opts):
        cfg, out = tiny_config(storage_options=opts), "s3://refusebkt/llc"
        with LogRecorder() as logs, WatchThread(str(bucket), tokens, out, cfg, interval=0.3, use_wandb=False,
                                                retry_delay=0.2) as w:
            logs.wait_for_line("run1 step 100:  λ̂ = ", "[ok]", timeout=120)
            from llc_service.storage import open_fs

            fs, _ = open_fs("s3://refusebkt", opts)
            fs.rm("refusebkt", recursive=True)  # the bucket is deleted under the running watcher
            make_checkpoint(bucket / "run1" / "step200", seed=1)
            wait_until(lambda: not w.thread.is_alive(), 60, 0.2, "the watcher to stop by itself")
            assert w.join() == 1
        assert logs.has("stopping: the results store s3://refusebkt/llc refuses access")
        assert logs.has("fix its permissions or bucket, then restart the watcher")
    assert (bucket / "run1" / "step100" / "config.json").exists()  # the source is untouched


def test_one_checkpoint_on_two_data_sets_keeps_both_results(ray_cluster, tokens, tmp_path):
    """The data-refined LLC: the same checkpoints measured on two data sets into one RESULTS under one run id give
    two results each (the data fingerprint is part of the identity), two trajectories in the report, and a rerun on
    either data set measures nothing."""
    from llc_service.report.trajectory import trajectory_table
    from llc_service.sinks import read_summary

    bucket = tmp_path / "bucket"
    for seed, step in enumerate((100, 200)):
        make_checkpoint(bucket / "run1" / f"step{step}", seed=seed)
    other = write_tokens(tmp_path / "other" / "tokens.parquet", rows=48)  # other rows of the same text
    out, cfg = str(tmp_path / "results"), tiny_config()
    for data in (tokens, other):
        with LogRecorder() as logs:
            assert watch(str(bucket), data, out, cfg, once=True, interval=0.3, use_wandb=False) == 0
        assert logs.has("2 new"), data
    summary = read_summary(out)
    assert len(summary) == 4 and (summary["status"] == "ok").all()
    by_data = summary.groupby("data_fingerprint")["checkpoint_step"].apply(sorted).to_dict()
    assert len(by_data) == 2 and all(steps == [100, 200] for steps in by_data.values())
    assert set(summary["data_uri"]) == {tokens, other} and summary["config_hash"].nunique() == 1
    assert len({c.key for c in ClaimStore(out).list_claims()}) == 4
    table = trajectory_table(summary)
    assert table.groupby("config_hash").size().tolist() == [2, 2]  # one trajectory per data set
    assert all("+data-" in c for c in table["config_hash"])
    for data in (tokens, other):
        with LogRecorder() as logs:
            assert watch(str(bucket), data, out, cfg, once=True, interval=0.3, use_wandb=False) == 0
        assert logs.has("2 already measured") and not logs.has("dispatched")
    assert len(read_summary(out)) == 4
