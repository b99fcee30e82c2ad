"""The chaos soak, end to end (scripts/soak.py as a subprocess, as a developer runs it): real moto S3 behind the
fault proxy, a real Ray head, real `llc-service watch` processes SIGKILLed and restarted, a Ray worker SIGKILLed
mid-measurement. The script checks RESULTS itself; here its figures are asserted, and afterwards that it left no
process behind.

A short version (4 checkpoints, 2 watchers, 1 + 1 kills, 5 % faults plus outages) and a long one (36 checkpoints,
3 watchers, 6 + 6 kills, at most 2 measurements in flight per watcher); both are ``slow``. Figures
of a long run: docs/soak.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "soak.py"


def _our_stragglers(marker: str) -> list[int]:
    """PIDs of live processes whose command line or environment mentions ``marker`` (our private paths)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            blob = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in blob:
            found.append(int(proc.name))
    return found


def _soak(tmp_path: Path, *args: str, timeout: float) -> tuple[dict, str]:
    workdir = tmp_path / "soak"
    out_json = tmp_path / "figures.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(":"))
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args, "--workdir", str(workdir), "--json", str(out_json)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()  # soak.py unwinds on SIGTERM and stops what it started
        stdout, stderr = proc.communicate(timeout=120)
        pytest.fail(f"soak.py ran over {timeout:.0f}s\n{stderr[-6000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        leftovers = _our_stragglers(str(workdir))
        for pid in leftovers:  # only processes that carry our private workdir: ours
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"soak.py left processes running: {leftovers}"
    lines = [ln for ln in stdout.splitlines() if ln.startswith("soak: ")]
    assert proc.returncode == 0, f"exit {proc.returncode}\n{stdout[-3000:]}\n{stderr[-6000:]}"
    assert len(lines) == 1, stdout
    return json.loads(out_json.read_text()), lines[0]


def _assert_clean_outcome(f: dict, line: str, checkpoints: int, watchers: int) -> None:
    assert f["checkpoints"] == checkpoints and f["watchers"] == watchers
    assert f["lost"] == 0 and f["duplicated"] == 0 and f["bad_draws"] == 0 and f["live_claims"] == 0
    assert f["tables_match"] and f["ok"] and not f["problems"]
    assert f["statuses"] == ["ok"]  # every checkpoint measured; a failed row would be a mismatch anyway
    # measurement on CPU is deterministic for a seed: the soak's λ̂ equal the clean run's to the last bit
    assert f["bit_identical"] is True
    assert f["injected_faults"] > 0 and f["faults"]["forwarded"] > 0
    assert f["events"]["measured"] >= checkpoints
    assert not f["watcher_exits"], "a watcher exited by itself"
    assert re.search(rf"soak: {checkpoints} checkpoints, {watchers} watchers, kills {f['watcher_kills']} watchers"
                     rf" / {f['worker_kills']} workers, {f['injected_faults']} injected S3 faults", line), line
    assert "lost 0, duplicated 0" in line and "match (bit-identical)" in line


@pytest.mark.slow  # ≈ 90 s on 2 cores; the default run has the targeted fault tests (tests/faults, tests/watcher)
def test_soak_short(tmp_path):
    f, line = _soak(tmp_path, "--checkpoints", "4", "--watchers", "2", "--duration", "12", "--watcher-kills", "1",
                    "--worker-kills", "1", "--fault-rate", "0.05", "--outage-every", "10", "--outage-seconds", "1",
                    "--seed", "0", timeout=900)
    _assert_clean_outcome(f, line, checkpoints=4, watchers=2)
    assert f["watcher_kills"] == 1 and f["worker_kills"] == 1
    # the SIGKILLed watcher's and worker's checkpoints were measured again: someone needed a second attempt
    assert f["retries"] >= 1 or f["events"]["transient_retries"] >= 1 or f["events"]["takeovers"] >= 1


@pytest.mark.slow
def test_soak_long(tmp_path):
    f, line = _soak(tmp_path, "--checkpoints", "36", "--watchers", "3", "--duration", "240", "--watcher-kills", "6",
                    "--worker-kills", "6", "--fault-rate", "0.05", "--lease", "20", "--max-concurrent", "2",
                    "--seed", "1", timeout=3300)
    _assert_clean_outcome(f, line, checkpoints=36, watchers=3)
    assert f["watcher_kills"] == 6 and f["worker_kills"] >= 3
