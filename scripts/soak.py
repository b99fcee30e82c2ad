#!/usr/bin/env python
"""Chaos soak of the watcher: checkpoints appear in S3 while several watchers measure them on one Ray head, and
watchers, Ray workers and S3 requests fail at random. At the end every checkpoint must have exactly one final
result, identical to what a clean run gives.

Everything runs on this machine, on 127.0.0.1 only:

  moto S3 server  <-  fault proxy (503 SlowDown / 500 InternalError / dropped connections)  <-  watchers, workers
  Ray head (ray start --head, private temp dir, free ports)  <-  N x `llc-service watch` (subprocesses)

1. tiny real checkpoints (save_pretrained of a tiny GPT-NeoX, distinct weights each) are uploaded file by file,
   spread over --duration seconds, while the watchers poll (short --interval, short lease);
2. at random moments within that window a watcher is SIGKILLed (and restarted at once) and a Ray worker that is
   running a measurement is SIGKILLed; the proxy injects faults into a fraction of the S3 requests (--fault-rate)
   and fails every request during short periodic outages (--outage-every / --outage-seconds);
3. once every checkpoint has a final row (or --timeout), the watchers get SIGTERM, faults go off, and a final
   `llc-service watch --once` drains what is left;
4. checks, from RESULTS alone: exactly one summary row per checkpoint, per-draw rows complete and not
   duplicated, no live claim; then a clean `watch --once` of the same checkpoints into another prefix (no faults,
   no kills, straight to moto) and the two outcome tables are compared (status; λ̂, std and init loss bit for
   bit when they agree exactly, else within 1e-9 relative, which is reported).

Prints one line (and --json FILE writes the figures); exit code 0 only when nothing was lost or duplicated and
the tables match. Every process it starts (Ray head and its workers, watchers) is stopped by PID on the way out,
on failure too. Run with the repo's venv:  PYTHONPATH=$PWD .venv/bin/python scripts/soak.py --help
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from soaklib import world  # noqa: E402
from soaklib.check import check_results, compare_with_clean  # noqa: E402
from soaklib.procs import BIN, Watchers, start_head, stop_head  # noqa: E402

log = logging.getLogger("soak")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="soak.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Chaos soak: N checkpoints written into moto S3 (behind a fault-injecting proxy) while "
                    "several `llc-service watch` processes measure them on one loopback Ray head; random SIGKILLs "
                    "of watchers and Ray workers; then checks exactly-once results against a clean run.",
        epilog="Example (the long run in docs/soak.md):\n"
               "  PYTHONPATH=$PWD .venv/bin/python scripts/soak.py --checkpoints 36 --watchers 3 --duration 240 "
               "\\\n      --watcher-kills 6 --worker-kills 6 --fault-rate 0.05 --lease 20 --max-concurrent 2 --seed 1\n"
               "Exit code: 0 = nothing lost or duplicated and the outcome table matches a clean run; 1 otherwise.")
    p.add_argument("--checkpoints", type=int, default=6, help="checkpoints to write (default 6)")
    p.add_argument("--watchers", type=int, default=2, help="watcher processes running at once (default 2)")
    p.add_argument("--duration", type=float, default=30.0,
                   help="seconds over which checkpoints are written and kills happen (default 30)")
    p.add_argument("--watcher-kills", type=int, default=1, help="SIGKILLs of a random watcher (default 1)")
    p.add_argument("--worker-kills", type=int, default=1,
                   help="SIGKILLs of a Ray worker running a measurement (default 1)")
    p.add_argument("--fault-rate", type=float, default=0.05,
                   help="probability that an S3 request gets a fault (503/500/drop; default 0.05)")
    p.add_argument("--outage-every", type=float, default=20.0,
                   help="every this many seconds, an S3 outage in which every request fails (0 = none; default 20)")
    p.add_argument("--outage-seconds", type=float, default=1.5, help="length of each outage (default 1.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the schedule, the faults and the weights (default 0)")
    p.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the Ray head (default 2)")
    p.add_argument("--interval", type=float, default=1.0, help="watchers' --interval (default 1 s)")
    p.add_argument("--lease", type=float, default=15.0,
                   help="claims' lease_seconds (default 15 s; renewed every quarter lease)")
    p.add_argument("--max-retries", type=int, default=8,
                   help="max_retries of the measurement config: enough that bounded kills never exhaust it "
                        "(default 8)")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="watchers' --max-concurrent (default: none, the service's default: every checkpoint found is "
                        "claimed and queued in Ray)")
    p.add_argument("--timeout", type=float, default=1800.0,
                   help="stop the chaos phase this long after the start even if some checkpoint has no final row "
                        "yet; the final drain then measures it (default 1800 s)")
    p.add_argument("--workdir", default=None, help="keep logs and local checkpoints here (default: a temp dir, "
                                                   "removed unless the run fails)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    t0 = time.monotonic()
    rng = random.Random(args.seed)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="llc-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = world.base_env(workdir)
    os.environ.update({k: env[k] for k in world.S3_ENV})
    figures: dict = {"workdir": str(workdir)}
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(world.S3World(args.fault_rate, args.outage_every, args.outage_seconds, args.seed))
        s3.policy.enabled = False
        ckpts = world.prepare(s3, workdir, args.checkpoints, args.seed)
        log.info("prepared %d checkpoints and data in %.1fs", len(ckpts), time.monotonic() - t0)

        head = start_head(args.ray_cpus, env)
        stack.callback(stop_head, head)
        log.info("Ray head at %s (temp dir %s)", head.address, head.temp_dir)
        watch_env = {**head.env, "RAY_ADDRESS": head.address}
        watch_args = world.watch_args(s3.proxy.endpoint_url, world.RESULTS, head.address, args)
        watchers = Watchers(watch_args, watch_env, workdir)
        stack.callback(watchers.kill_all)
        for slot in range(args.watchers):
            watchers.start(slot)
        s3.policy.enabled = True

        kills = chaos(args, rng, s3, ckpts, watchers, head, t0)
        figures.update(kills)

        codes = watchers.stop_all()
        s3.policy.enabled = False
        faults = s3.proxy.snapshot()
        log.info("watchers stopped (exit codes %s); faults off; draining with watch --once", codes)
        drain = cli_once(watch_args, watch_env, workdir / "drain.log", timeout=1200)
        wait_leases(s3, args.lease, kills.get("last_kill_at", 0.0))
        verdict, rows = check_results(world.RESULTS, s3.direct_options, [c.uri for c in ckpts])

        stop_head(head)  # frees the CPUs for the clean run
        world.clean_run(s3, ckpts, args)
        clean_verdict, clean_rows = check_results(world.CLEAN, s3.direct_options, [c.uri for c in ckpts])
        compare_with_clean(verdict, rows, clean_rows)
        if not clean_verdict.ok:
            verdict.mismatches.append(f"the clean run itself is not clean: {clean_verdict.problems()}")
        if drain != 0:
            verdict.mismatches.append(f"final watch --once exited {drain}")

    figures.update(
        checkpoints=len(ckpts), watchers=args.watchers, injected_faults=sum(faults.get(k, 0) for k in
                                                                            ("503", "500", "drop", "drop-after")),
        faults=faults, retries=verdict.retried_rows, retried_claims=verdict.retried_claims,
        lost=len(verdict.lost), duplicated=len(verdict.duplicated) + len(verdict.unexpected),
        bad_draws=len(verdict.bad_draws), live_claims=len(verdict.live_claims),
        unreleased_claims=verdict.unreleased_claims, statuses=sorted(set(verdict.statuses.values())),
        tables_match=not verdict.mismatches, bit_identical=verdict.bit_identical,
        watcher_exits=watchers.exits, events=log_counts(workdir), problems=verdict.problems(), ok=verdict.ok,
        wall_seconds=round(time.monotonic() - t0, 1), cpu_seconds=round(_cpu_seconds(), 1),
        load_average=[round(x, 1) for x in os.getloadavg()])
    return figures


def _cpu_seconds() -> float:
    """CPU time of this process and of the children it waited for (watchers, the Ray head's process tree)."""
    import resource

    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def chaos(args, rng, s3, ckpts, watchers, head, t0) -> dict:
    """Write the checkpoints over ``duration`` while killing watchers and workers at random moments; return when
    every checkpoint has a final row (or at the timeout). Returns the kill counts."""
    start = time.monotonic()
    write_at = sorted(start + rng.uniform(0, args.duration) for _ in ckpts)
    write_at[0] = start  # something to measure from the start
    window = (start + min(5.0, args.duration / 4), start + args.duration)
    watcher_kills = sorted(rng.uniform(*window) for _ in range(args.watcher_kills))
    # worker kills early in the window: each waits until some measurement is running
    worker_kills = sorted(rng.uniform(window[0], (window[0] + window[1]) / 2) for _ in range(args.worker_kills))
    out = {"watcher_kills": 0, "worker_kills": 0, "worker_kills_skipped": 0, "last_kill_at": 0.0,
           "chaos_timed_out": False}
    written, next_check, done = 0, 0.0, False
    while not done:
        now = time.monotonic()
        if now - t0 > args.timeout:
            log.warning("timeout: not every checkpoint has a final row after %.0fs", args.timeout)
            out["chaos_timed_out"] = True
            break
        while written < len(ckpts) and write_at[written] <= now:
            world.upload_checkpoint(s3, ckpts[written])
            written += 1
        if watcher_kills and watcher_kills[0] <= now:
            watcher_kills.pop(0)
            pid = watchers.kill_random(rng)
            if pid:
                out["watcher_kills"] += 1
                out["last_kill_at"] = time.time()
                log.info("SIGKILLed watcher %d (restarted)", pid)
        if worker_kills and worker_kills[0] <= now:
            busy = head.unit_workers()  # none right now (between measurements, cold start): try again soon
            if busy:
                worker_kills.pop(0)
                victim = rng.choice(busy)
                with contextlib.suppress(Exception):
                    victim.kill()
                    out["worker_kills"] += 1
                    out["last_kill_at"] = time.time()
                    log.info("SIGKILLed Ray worker %d", victim.pid)
        watchers.reap()
        if written == len(ckpts) and not watcher_kills and now >= next_check:
            next_check = now + 2.0
            done = world.all_final(s3, [c.uri for c in ckpts], args.max_retries)
            if done and worker_kills:  # nothing left to measure: a worker kill now would hit nothing
                out["worker_kills_skipped"] = len(worker_kills)
        time.sleep(0.2)
    out["chaos_seconds"] = round(time.monotonic() - start, 1)
    return out


def cli_once(watch_args: list[str], env: dict, log_path: Path, timeout: float) -> int:
    with open(log_path, "w") as logf:
        proc = subprocess.Popen([str(BIN / "llc-service"), *watch_args, "--once"], env=env, stdout=logf,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(log_path.parent))
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.error("%s did not finish in %.0fs", log_path.name, timeout)
        return -1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def wait_leases(s3, lease: float, last_kill_epoch: float) -> None:
    """A watcher SIGKILLed after its measurement was recorded leaves a live claim for at most one lease."""
    remaining = last_kill_epoch + lease + 1.0 - time.time()
    if remaining > 0:
        time.sleep(remaining)


LOG_EVENTS = {"lease_losses": r"lost our claim", "takeovers": r"took over the expired claim",
              "transient_retries": r"failed \[transient\]", "storage_warnings": r"failed \(",
              "measured": r"\[ok\]|: ok λ̂="}  # the outcome line, in its current and its earlier format


def log_counts(workdir: Path) -> dict:
    """How often the watchers' logs (all incarnations and the drain) mention each event of LOG_EVENTS."""
    counts = dict.fromkeys(LOG_EVENTS, 0)
    for path in sorted(workdir.glob("watcher*.log")) + [workdir / "drain.log"]:
        with contextlib.suppress(OSError):
            for text in path.read_text(errors="replace").splitlines():
                for name, pattern in LOG_EVENTS.items():
                    counts[name] += re.search(pattern, text) is not None
    return counts


def line(f: dict) -> str:
    table = ("match" + (" (bit-identical)" if f["bit_identical"] else " (within 1e-9)")) if f["tables_match"] \
        else "MISMATCH"
    kinds = ", ".join(f"{k} {f['faults'].get(k, 0)}" for k in ("503", "500", "drop", "drop-after"))
    return (f"soak: {f['checkpoints']} checkpoints, {f['watchers']} watchers, kills {f['watcher_kills']} watchers / "
            f"{f['worker_kills']} workers, {f['injected_faults']} injected S3 faults ({kinds}), "
            f"retries: {f['retries']} results with attempt>1, {f['events']['transient_retries']} transient "
            f"retries, {f['events']['takeovers']} claim takeovers, {f['events']['lease_losses']} lease losses; "
            f"lost {f['lost']}, "
            f"duplicated {f['duplicated']}, bad draws {f['bad_draws']}, live claims {f['live_claims']}, "
            f"table vs clean run: {table}, wall {f['wall_seconds']:.0f}s (CPU {f['cpu_seconds']:.0f}s, "
            f"load {f['load_average'][0]:.1f})" + (" [chaos phase timed out]" if f["chaos_timed_out"] else ""))


def main(argv=None) -> int:
    args = parse_args(argv)
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the ExitStack stops every process we started
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s soak: %(message)s")
    for noisy in ("werkzeug", "botocore", "s3fs", "aiobotocore", "urllib3", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    figures = run(args)
    for problem in figures["problems"]:
        log.error("%s", problem)
    if figures["watcher_exits"]:
        log.warning("watchers that exited by themselves (slot, code): %s", figures["watcher_exits"])
    print(line(figures), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=str))
    good = figures["ok"] and figures["lost"] == 0 and figures["duplicated"] == 0 and figures["tables_match"]
    if good and not args.workdir:
        import shutil

        shutil.rmtree(figures["workdir"], ignore_errors=True)
    elif not good:
        log.error("logs kept in %s", figures["workdir"])
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
