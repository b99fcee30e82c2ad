"""The processes a soak run starts, and how it stops them: a Ray head on loopback, ``llc-service watch`` processes.

Everything started here is stopped here by its own PID: the head's process group, then any straggler whose
environment carries our private ``RAY_TMPDIR`` (every process the head spawns, and every watcher, inherits it).
Never ``ray stop`` (it kills every Ray process on the machine) and never a kill by name.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
PORT_FLAGS = ("--port", "--ray-client-server-port", "--runtime-env-agent-port", "--metrics-export-port",
              "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--node-manager-port",
              "--object-manager-port")
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           "RAY_DEDUP_LOGS": "0"}
UNIT_TITLE = "ray::_run_unit"  # Ray renames a worker process to ray::<task name> while it runs a task


def free_ports(n: int) -> list[int]:
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


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def ours(temp_dir: str) -> list[int]:
    """PIDs of live processes whose environment names our private RAY_TMPDIR (only processes we started)."""
    marker = f"RAY_TMPDIR={temp_dir}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
    return pids


@dataclass
class RayHead:
    address: str  # GCS address, what RAY_ADDRESS / --address take
    temp_dir: str
    log_path: str
    proc: subprocess.Popen
    env: dict

    def unit_workers(self):
        """psutil processes of Ray workers under our head that are running a measurement right now."""
        import psutil

        out = []
        with contextlib.suppress(psutil.Error):
            for p in psutil.Process(self.proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    cmd = p.cmdline()
                    if cmd and cmd[0].startswith(UNIT_TITLE):
                        out.append(p)
        return out

    def log_tail(self, n: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return Path(self.log_path).read_text(errors="replace")[-n:]
        return ""


def start_head(num_cpus: int, env: dict, timeout: float = 90.0) -> RayHead:
    """``ray start --head --block`` on 127.0.0.1 (private temp dir, free ports, no dashboard, no auth on loopback).

    ``env`` is what Ray workers will see (they inherit the head's environment): PYTHONPATH, AWS_*, offline flags.
    """
    temp_dir = tempfile.mkdtemp(prefix="llcsoak", dir="/tmp")  # short path: Unix socket length limit
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
    env = {**env, **RAY_ENV, "RAY_TMPDIR": temp_dir,
           "PATH": f"{BIN}{os.pathsep}{env.get('PATH', os.environ.get('PATH', ''))}"}
    env.pop("RAY_ADDRESS", None)
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           f"--temp-dir={temp_dir}", f"--num-cpus={num_cpus}", "--num-gpus=0", "--include-dashboard=false",
           "--object-store-memory=80000000", "--disable-usage-stats",
           *(f"{flag}={port}" for flag, port in ports.items())]
    log_path = os.path.join(temp_dir, "head.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    head = RayHead(f"127.0.0.1:{ports['--port']}", temp_dir, log_path, proc, env)
    try:
        deadline = time.monotonic() + timeout
        while not ("Ray runtime started" in head.log_tail(100_000) and _port_open(ports["--port"])):
            if proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {proc.returncode}:\n{head.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Ray head not up after {timeout:.0f}s:\n{head.log_tail()}")
            time.sleep(0.3)
    except BaseException:
        stop_head(head)
        raise
    return head


def stop_head(head: RayHead, grace: float = 5.0) -> None:
    """SIGTERM the head's process group, then SIGKILL it and every straggler of ours; remove the temp dir."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.proc.wait(timeout=5)
    deadline = time.monotonic() + 10
    while (pids := ours(head.temp_dir)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    shutil.rmtree(head.temp_dir, ignore_errors=True)


@dataclass
class Watchers:
    """N ``llc-service watch`` processes with the same arguments; killed (SIGKILL) and restarted by slot."""

    args: list[str]
    env: dict
    log_dir: Path
    procs: dict[int, subprocess.Popen] = field(default_factory=dict)
    started: int = 0
    exits: list[tuple[int, int]] = field(default_factory=list)  # (slot, returncode) of watchers that ended

    def start(self, slot: int) -> subprocess.Popen:
        self.started += 1
        log = open(self.log_dir / f"watcher{slot}-{self.started}.log", "w")
        proc = subprocess.Popen([str(BIN / "llc-service"), *self.args], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(self.log_dir))
        log.close()
        self.procs[slot] = proc
        return proc

    def kill_random(self, rng: random.Random) -> int | None:
        """SIGKILL one live watcher (chosen by ``rng``) and start its replacement; returns the killed PID."""
        live = sorted(s for s, p in self.procs.items() if p.poll() is None)
        if not live:
            return None
        slot = rng.choice(live)
        proc = self.procs[slot]
        proc.kill()
        proc.wait(30)
        self.start(slot)
        return proc.pid

    def reap(self) -> None:
        """Record watchers that ended by themselves (they should not: report it) and restart them."""
        for slot, proc in list(self.procs.items()):
            if proc.poll() is not None:
                self.exits.append((slot, proc.returncode))
                self.start(slot)

    def stop_all(self, grace: float = 30.0) -> list[int]:
        """SIGTERM every watcher (a clean stop: in-flight work cancelled, claims released); SIGKILL after grace."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        codes = []
        for proc in self.procs.values():
            try:
                codes.append(proc.wait(max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait(30))
        return codes

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(30)
