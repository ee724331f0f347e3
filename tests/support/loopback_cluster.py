"""A real multi-node Ray cluster on one machine: a head on 127.0.0.2 and nodes joined on other loopback
addresses (127.0.0.3, ...), each `ray start` with its own temp directory and SLM_CACHE, so node-local
state (Ray's session files, the per-node example and model caches) really is per node.

Token authentication is on for every node and client. Why the head is not on 127.0.0.1: Ray (2.60)
replaces the literal 127.0.0.1 or localhost, as a node's address or as the address a node joins, by the
machine's own network address (`services.resolve_ip_for_localhost`); `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`
stops that, and keeps a one-node head on 127.0.0.1 (slm.cluster sets it for local clusters), but with it
`ray start --address` refuses to start a joining node ("Multi-node Ray clusters are not supported").
Other loopback addresses are kept as given, so a multi-node loopback cluster uses those; drivers on the
head's node say so with RAY_NODE_IP (slm.cluster.connect passes it to ray.init). Ray's temp directories
live under a short /tmp/slm-ray-* root (its socket paths are capped at 107 bytes).

Each node's processes run in a process group of their own (`ray start --block` in a new session), so
a node is stopped, or killed outright, by its pids, never by a machine-wide `ray stop`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.seaweed import free_port

RAY = str(Path(sys.executable).parent / "ray")
# Not 127.0.0.1: Ray swaps that literal (and localhost) for the machine's network address wherever it is a
# node's or a join address, unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and with that set `ray start
# --address` refuses to start a joining node at all. Any other loopback address is kept as given.
HEAD_IP = "127.0.0.2"


class LoopbackCluster:
    def __init__(self, root: Path, cpus_per_node: int = 1):
        self.root = Path(root)
        self.cpus = cpus_per_node
        self.token = secrets.token_hex(24)
        self.port = free_port()
        self.dashboard_port = free_port()
        self.nodes: dict[str, tuple[str, subprocess.Popen]] = {}  # name → (ip, ray start --block)
        # Ray's temp directories hold its sockets, whose paths may not exceed 107 bytes: a short root
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="slm-ray-", dir="/tmp"))

    @property
    def address(self) -> str:
        return f"{HEAD_IP}:{self.port}"

    def client_env(self) -> dict[str, str]:
        """What a driver (or a subprocess of the test) needs to join this cluster."""
        return {
            "RAY_ADDRESS": self.address,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_NODE_IP": HEAD_IP,  # the driver's address: it runs on the head's node (slm.cluster.connect)
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",  # a test process may hold slm.cluster's 0 for local clusters
        }

    def node_dir(self, name: str) -> Path:
        return self.root / name

    def temp_dir(self, name: str) -> Path:
        return self.ray_tmp / name

    def _start(self, name: str, ip: str, head: bool) -> None:
        base = self.node_dir(name)
        base.mkdir(parents=True, exist_ok=True)
        self.temp_dir(name).mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **self.client_env(),
            "SLM_CACHE": str(base / "cache"),
            "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
            "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
        }
        env.pop("RAY_ADDRESS")
        args = [
            RAY,
            "start",
            "--block",
            f"--node-ip-address={ip}",
            f"--num-cpus={self.cpus}",
            f"--temp-dir={self.temp_dir(name)}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            "--disable-usage-stats",
        ]
        if head:
            args += [
                "--head",
                f"--port={self.port}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
            ]
        else:
            args += [f"--address={self.address}"]
        log = open(base / "ray-start.log", "ab")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.nodes[name] = (ip, proc)

    def start(self, extra: list[tuple[str, str]] = (("node2", "127.0.0.3"),), timeout: float = 120) -> None:
        self._start("head", HEAD_IP, head=True)
        self.wait_for_nodes(1, timeout)
        for name, ip in extra:
            self._start(name, ip, head=False)
        self.wait_for_nodes(1 + len(extra), timeout)

    def add_node(self, name: str, ip: str, timeout: float = 120) -> None:
        alive = len(self.alive_ips())
        self._start(name, ip, head=False)
        self.wait_for_nodes(alive + 1, timeout)

    def alive_ips(self) -> list[str]:
        """The node addresses the cluster's GCS lists as alive (from a short-lived client process)."""
        code = (
            "import json, os, ray; ray.init(logging_level='ERROR', _node_ip_address=os.environ['RAY_NODE_IP']); "
            "print(json.dumps([n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']]))"
        )
        try:
            out = subprocess.run(
                [sys.executable, "-c", code],
                env={**os.environ, **self.client_env()},
                capture_output=True,
                text=True,
                timeout=30,
            )
        except subprocess.TimeoutExpired:  # the head's GCS is not up (yet)
            return []
        if out.returncode != 0:
            return []
        import json

        return json.loads(out.stdout.strip().splitlines()[-1])

    def wait_for_nodes(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, (_, proc) in self.nodes.items():
                if proc.poll() is not None:
                    log = (self.node_dir(name) / "ray-start.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"ray start for {name} exited ({proc.returncode}):\n{log}")
            if len(self.alive_ips()) >= n:
                return
            time.sleep(1)
        raise RuntimeError(f"{n} nodes not alive after {timeout}s")

    def node_pids(self, name: str) -> set[int]:
        """Every process of a node: its `ray start` process group, and whatever carries its temp dir
        (a worker that left the group still names its session directory on its command line)."""
        _, proc = self.nodes[name]
        marker = str(self.temp_dir(name))
        pids = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                pgid = os.getpgid(int(entry.name))
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, ProcessLookupError):
                continue
            if pgid == proc.pid or marker in cmdline:
                pids.add(int(entry.name))
        return pids

    def kill_node(self, name: str, sig: int = signal.SIGKILL) -> None:
        """The node's raylet, its workers and the rest of its processes, by pid: the node is gone."""
        pids = self.node_pids(name)
        _signal(pids, sig)
        if sig != signal.SIGKILL:
            time.sleep(2)
            _signal(pids, signal.SIGKILL)
        _, proc = self.nodes.pop(name)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass

    def stop(self) -> None:
        """Every node, joined nodes first, each by its own pids (SIGTERM, then SIGKILL)."""
        for name in sorted(self.nodes, key=lambda n: n == "head"):
            self.kill_node(name, signal.SIGTERM)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)


def _signal(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
