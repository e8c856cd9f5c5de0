"""Several real ``kefu serve`` processes on loopback sharing one state (the replica test and bench/replicas_bench.py):
each its own ``$KEFU_HOME`` and port, as on separate machines, and the same ``KEFU_*`` state environment."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx

REPO = Path(__file__).resolve().parents[2]
SHOP = REPO / "examples" / "shop"
KEY_PEPPER = "replica-test-pepper-0123456789abcdef"  # replicas sharing one key store share its pepper


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kefu(args: list[str], env: dict[str, str], timeout: float = 300) -> str:
    """Run a ``kefu`` command with ``env``; its stdout (raises with its output when it fails)."""
    done = subprocess.run([sys.executable, "-m", "kefu.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO))
    if done.returncode:
        raise RuntimeError(f"kefu {' '.join(args)} exited {done.returncode}: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


@dataclass
class Replica:
    """One ``kefu serve`` process."""

    proc: subprocess.Popen
    url: str
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush (a crashed machine)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def replica_env(root: Path, state_env: dict[str, str], name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one replica: its own ``$KEFU_HOME`` under ``root``, the shared state, the shared pepper."""
    home = root / name
    home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, **state_env, "KEFU_HOME": str(home), "KEFU_KEY_PEPPER": KEY_PEPPER, **(extra or {})}


def wait_ready(replica: Replica, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while True:
        if not replica.alive():
            raise RuntimeError(f"kefu serve exited: {replica.log.read_text()[-3000:]}")
        if time.time() > deadline:
            raise RuntimeError(f"kefu serve did not answer /healthz in {timeout:.0f} s: {replica.log.read_text()[-3000:]}")
        try:
            if httpx.get(replica.url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)


@contextmanager
def replicas(n: int, root: Path, state_env: dict[str, str], serve_args: list[str] = (),
             extra_env: dict[str, str] | None = None) -> Iterator[list[Replica]]:
    """``n`` ``kefu serve`` processes on free loopback ports, started together and ready; stopped afterwards."""
    started: list[Replica] = []
    try:
        for i in range(n):
            port = free_port()
            log = root / f"replica{i}.log"
            env = replica_env(root, state_env, f"replica{i}", extra_env)
            proc = subprocess.Popen([sys.executable, "-m", "kefu.cli", "serve", "--host", "127.0.0.1", "--port",
                                     str(port), *serve_args], env=env, cwd=str(REPO), stdout=open(log, "w"),
                                    stderr=subprocess.STDOUT)
            started.append(Replica(proc, f"http://127.0.0.1:{port}", log))
        for replica in started:
            wait_ready(replica)
        yield started
    finally:
        for replica in started:
            replica.stop()
