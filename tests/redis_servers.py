"""Throw-away ``redis-server`` processes on free loopback ports, for the Redis tests.

Servers run daemonized in a temporary directory and are stopped by the PIDs recorded in
their pid files; nothing else (no other port, no other server) is ever touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["RedisCluster", "RedisServer", "free_port", "redis_available"]

HOST = "127.0.0.1"


def redis_available() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server binds
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(bus: bool = False) -> int:
    """A loopback port that is free now (and, with ``bus``, whose +10000 is free too)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((HOST, 0))
            port = int(probe.getsockname()[1])
        if port != 6379 and not (bus and (port > 55535 or not _port_free(port + 10000))):
            return port


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie nobody reaps yet counts as gone)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False
    except OSError:
        return True


def _cli(port: int, *args: str, password: str | None = None) -> str:
    auth = ["--no-auth-warning", "-a", password] if password else []
    done = subprocess.run(
        ["redis-cli", "-h", HOST, "-p", str(port), *auth, *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return done.stdout


class RedisServer:
    """One ``redis-server`` on a free loopback port, in ``directory``."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        password: str | None = None,
        cluster: bool = False,
    ) -> None:
        self.port = port if port is not None else free_port(bus=cluster)
        self.dir = directory / str(self.port)
        self.password = password
        self.cluster = cluster
        self.pid: int | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.address}/0"

    def start(self) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        pidfile = self.dir / "redis.pid"
        pidfile.unlink(missing_ok=True)
        args = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
            "--pidfile",
            str(pidfile),
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        if self.cluster:
            args += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.dir / "nodes.conf"),
                "--cluster-node-timeout",
                "2000",
            ]
        subprocess.run(args, check=True, timeout=10, capture_output=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if pidfile.exists() and pidfile.read_text().strip():
                self.pid = int(pidfile.read_text())
                if "PONG" in _cli(self.port, "ping", password=self.password):
                    return self
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on {self.address} did not start; see {self.dir}")

    def cli(self, *args: str) -> str:
        return _cli(self.port, *args, password=self.password)

    def stop(self) -> None:
        """Stop the server we started (by its pid), and wait for the port to be released."""
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.02)
        while time.monotonic() < deadline and not _port_free(self.port):
            time.sleep(0.02)


class RedisCluster:
    """A 3-master Redis Cluster on free loopback ports (no replicas)."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.nodes = [RedisServer(directory, cluster=True) for _ in range(masters)]
        ports = [node.port for node in self.nodes]
        while len(set(ports)) < len(ports):  # two free_port() calls may agree
            self.nodes[-1] = RedisServer(directory, cluster=True)
            ports = [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        return f"redis+cluster://{self.nodes[0].address}"

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        done = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(node.address for node in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")
        self.wait_ok()
        return self

    def wait_ok(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in node.cli("cluster", "info") for node in self.nodes):
                return
            time.sleep(0.05)
        raise RuntimeError("the test cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
