"""The real Slurm script, run by bash with stand-ins for what only a Slurm cluster has (srun, scontrol) and for the
processes it starts (ray, llc-service, which record their arguments and environment instead of starting Ray).

It shows the token wiring the static checks in test_cluster_security.py can only read: each allocation gets a
fresh random token in a mode-600 file, every `ray start` (head and workers) and the client get it through
``RAY_AUTH_TOKEN_PATH`` with ``RAY_AUTH_MODE=token``, no command line carries it, the dashboard binds the head's
address, and the file is gone when the job ends.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SBATCH = ROOT / "cluster" / "slurm" / "llc-service.sbatch"

RECORD = """#!{python}
import json, os, stat, sys
path = os.environ.get("RAY_AUTH_TOKEN_PATH")
info = {{"argv": sys.argv, "mode": os.environ.get("RAY_AUTH_MODE"), "path": path,
        "env_token": os.environ.get("RAY_AUTH_TOKEN")}}
if path and os.path.exists(path):
    info["perm"] = stat.S_IMODE(os.stat(path).st_mode)
    info["token"] = open(path).read().strip()
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps(info) + "\\n")
if "--block" in sys.argv:  # `ray start --block` runs until the script's cleanup sends SIGTERM
    import signal, time
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    time.sleep(300)
"""

STUBS = {
    "scontrol": 'echo node1; echo node2',
    # drop srun's own options (-w takes a value), run the command as the step would
    "srun": 'while [ "${1:-}" != "${1#-}" ]; do [ "$1" = -w ] && shift; shift; done; exec "$@"',
    "hostname": 'echo 127.0.0.1',
    "curl": 'exit 0',
    "sleep": 'exec /bin/sleep 0.1',
}


def _stubs(tmp: Path) -> Path:
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for name, body in STUBS.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
    for name in ("ray", "llc-service"):
        (bin_dir / name).write_text(RECORD.format(python=sys.executable))
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    venv = tmp / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "activate").write_text("# stand-in venv\n")
    return bin_dir


def _run_allocation(tmp: Path, job_id: int, *args: str, script: Path = SBATCH) -> list[dict]:
    bin_dir = tmp / "bin" if (tmp / "bin").exists() else _stubs(tmp)
    log = tmp / f"calls-{job_id}.jsonl"
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(home), "STUB_LOG": str(log),
           "LLC_VENV": str(tmp / "venv"), "SLURM_JOB_ID": str(job_id), "SLURM_JOB_NODELIST": "node[1-2]",
           "SLURM_SUBMIT_DIR": str(tmp), "SLURM_CPUS_PER_TASK": "1",
           "RAY_AUTH_TOKEN": "stale-token-from-the-users-shell"}  # must not reach Ray
    proc = subprocess.run(["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_each_allocation_gets_a_private_token_every_node_and_the_client_use(tmp_path):
    calls = _run_allocation(tmp_path, 4242, "job", "jobs/watch.yaml", "--set", "params.source=s3://b/r")
    starts = [c for c in calls if Path(c["argv"][0]).name == "ray"]
    clients = [c for c in calls if Path(c["argv"][0]).name == "llc-service"]
    assert len(starts) == 2 and len(clients) == 1  # head + one worker, then the submit
    token_file = str(tmp_path / "home" / ".ray" / "ray-4242.token")
    for call in starts + clients:
        assert call["mode"] == "token" and call["path"] == token_file and call["env_token"] is None
        assert call["perm"] == 0o600  # only the user can read it
        assert len(call["token"]) == 64 and int(call["token"], 16) >= 0
        assert call["token"] not in " ".join(call["argv"])  # never on a command line
    assert len({c["token"] for c in starts + clients}) == 1  # one token for the whole allocation
    heads = [c["argv"] for c in starts if "--head" in c["argv"]]  # head and worker start concurrently: any order
    assert len(heads) == 1, [c["argv"] for c in starts]
    head = heads[0]
    assert "--dashboard-host=127.0.0.1" in head and not any("0.0.0.0" in a for a in head)
    assert clients[0]["argv"][1:3] == ["submit", "jobs/watch.yaml"]
    assert not Path(token_file).exists()  # removed with the allocation

    again = _run_allocation(tmp_path, 4243, "watch", "/scratch/run1", "--once")
    assert again[0]["token"] != starts[0]["token"]  # a fresh token per allocation
    assert not list((tmp_path / "home" / ".ray").iterdir())
    assert stat.S_IMODE((tmp_path / "home" / ".ray").stat().st_mode) & 0o077 == 0


def test_the_stubs_record_an_unprotected_script_too(tmp_path):
    """Control: the same harness on the old, unauthenticated script records mode "disabled" and no token."""
    old = tmp_path / "old.sbatch"
    text = SBATCH.read_text()
    start, end = text.index("# a fresh token for this allocation"), text.index("unset RAY_AUTH_TOKEN")
    old.write_text(text[:start] + 'export RAY_AUTH_MODE=disabled; token_file=""\n' + text[text.index("\n", end) + 1:])
    calls = _run_allocation(tmp_path, 7, "watch", "/scratch/run1", script=old)
    assert calls and all(c["mode"] == "disabled" and c["path"] is None for c in calls)

