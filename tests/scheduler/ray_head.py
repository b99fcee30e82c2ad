"""A real ``ray start --head`` (with dashboard and job API) on loopback, private ports and temp dir, for tests.

Stopped by killing the process group it was started in, then any stragglers that carry our private
``RAY_TMPDIR`` in their environment (every process the head spawns inherits it): never ``ray stop``, which would
kill every Ray process on the machine, other people's included.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
PORT_FLAGS = ("--port", "--dashboard-port", "--ray-client-server-port", "--dashboard-agent-listen-port",
              "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")


class HeadUnavailable(RuntimeError):
    """The head did not come up in time (the caller decides whether that is a skip or a failure)."""


@dataclass
class RayHead:
    dashboard_url: str
    gcs_address: str
    temp_dir: str
    log_path: str
    proc: subprocess.Popen

    def log_tail(self, n: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return Path(self.log_path).read_text(errors="replace")[-n:]
        return ""


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (all held open together so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _dashboard_up(url: str, token: str | None = None) -> bool:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{url}/api/version", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _ours(temp_dir: str) -> list[int]:
    """PIDs of live processes whose environment names our private RAY_TMPDIR."""
    marker = f"RAY_TMPDIR={temp_dir}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
    return pids


def stop_head(head: RayHead, grace: float = 5.0) -> None:
    """SIGTERM the head's process group, wait, then SIGKILL it and any straggler of ours; remove the temp dir."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.proc.wait(timeout=5)
    deadline = time.monotonic() + 5
    while (pids := _ours(head.temp_dir)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    shutil.rmtree(head.temp_dir, ignore_errors=True)


@contextlib.contextmanager
def ray_head(num_cpus: int = 2, start_timeout: float = 90.0, extra_env: dict | None = None,
             token: str | None = None):
    """Start a head, wait until its job API answers, yield a :class:`RayHead`, stop it.

    Without ``token`` the head runs with ``RAY_AUTH_MODE=disabled`` (loopback only); with one it requires that
    token (``RAY_AUTH_MODE=token``, given through a mode-600 ``RAY_AUTH_TOKEN_PATH`` file, as the Slurm script does).
    """
    temp_dir = tempfile.mkdtemp(prefix="llcrayhead", dir="/tmp")  # short path: Unix socket length limit
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": temp_dir,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **(extra_env or {})}
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN", None)
    if token:
        token_path = os.path.join(temp_dir, "auth_token")
        with open(os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(token)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=token_path)
    cmd = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
           f"--temp-dir={temp_dir}", f"--num-cpus={num_cpus}", "--num-gpus=0", "--include-dashboard=true",
           "--object-store-memory=100000000", "--disable-usage-stats",
           *(f"{flag}={port}" for flag, port in ports.items())]
    log_path = os.path.join(temp_dir, "head.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    head = RayHead(f"http://127.0.0.1:{ports['--dashboard-port']}", f"127.0.0.1:{ports['--port']}", temp_dir,
                   log_path, proc)
    try:
        deadline = time.monotonic() + start_timeout
        while not _dashboard_up(head.dashboard_url, token):
            if proc.poll() is not None:
                raise HeadUnavailable(f"ray start exited with {proc.returncode}:\n{head.log_tail()}")
            if time.monotonic() > deadline:
                raise HeadUnavailable(f"dashboard not up after {start_timeout:.0f}s:\n{head.log_tail()}")
            time.sleep(0.5)
        yield head
    finally:
        stop_head(head)
