"""A real multi-node Ray cluster on loopback: `ray start --head` plus `ray start --address` worker
nodes, each a `--block`ing process in its own process group, stopped by killing those groups.

Never `ray stop`: it ends every Ray process on the machine, other users' included.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from ray.job_submission import JobSubmissionClient

from .s3_server import free_port

RAY = str(Path(sys.executable).parent / "ray")
TOKEN_FILE = "auth_token"  # in the cluster's temp dir: its own token, so no ~/.ray/auth_token is needed or touched
MARKER = "LOOKBOOK_MINER_TEST_CLUSTER"  # in the environment of every process of a test cluster: its temp dir
NODE_PORT_FLAGS = (
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
)


@dataclass
class Node:
    """One `ray start --block` process; its process group holds the node's raylet and workers."""

    process: subprocess.Popen
    log: Path
    ports: dict[str, int]
    killed: bool = False

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    @property
    def metrics_url(self) -> str:
        """The node's Prometheus endpoint (its metrics agent exports the metrics of its workers)."""
        return f"http://127.0.0.1:{self.ports['--metrics-export-port']}/metrics"

    def processes(self) -> list[psutil.Process]:
        """The node's live processes (the group leader and every descendant)."""
        try:
            leader = psutil.Process(self.process.pid)
            return [leader, *leader.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL the node's process group and its stray descendants, as a preempted VM would die."""
        self.killed = True
        survivors = self.processes()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for proc in survivors:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        self.process.wait(timeout=30)


@dataclass
class LocalCluster:
    """Head on 127.0.0.1 with its dashboard (Jobs API) at `dashboard_url`; `add_worker` adds nodes.
    Token authentication is on, with a fresh token of this cluster's own (`RAY_AUTH_TOKEN_PATH`)."""

    head_cpus: int = 1
    env: dict[str, str] = field(default_factory=dict)
    temp_dir: Path = field(init=False)
    gcs_address: str = field(init=False)
    dashboard_url: str = field(init=False)
    nodes: list[Node] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        # Unix socket paths must stay short: no pytest tmp_path here.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="lbm-ray-", dir="/tmp"))
        self.token_file.write_text(secrets.token_hex(16))
        self.token_file.chmod(0o600)
        port, dashboard = free_port(), free_port()
        self.gcs_address = f"127.0.0.1:{port}"
        self.dashboard_url = f"http://127.0.0.1:{dashboard}"
        head = ["--head", f"--port={port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1"]
        head += [f"--dashboard-port={dashboard}", f"--ray-client-server-port={free_port()}"]
        self._start("head", [*head, f"--num-cpus={self.head_cpus}"])
        try:
            self.wait_for_nodes(1)
        except RuntimeError:
            self.stop()  # the caller gets no cluster to stop
            raise

    @property
    def token_file(self) -> Path:
        return self.temp_dir / TOKEN_FILE

    def process_env(self) -> dict[str, str]:
        """Environment for the nodes and for Ray clients of this cluster (this interpreter first on PATH)."""
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_file)}
        return {**os.environ, **auth, **self.env, "PATH": path, MARKER: str(self.temp_dir)}

    def jobs_client(self) -> JobSubmissionClient:
        """A Jobs API client that sends the cluster's auth token (this process's Ray may run with
        auth off: Ray reads RAY_AUTH_MODE once per process)."""
        token = self.token_file.read_text().strip()
        return JobSubmissionClient(self.dashboard_url, headers={"Authorization": f"Bearer {token}"})

    def leftover_processes(self) -> list[psutil.Process]:
        """Processes of this machine that carry this cluster's marker (none once `stop` returned)."""
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.environ().get(MARKER) == str(self.temp_dir):
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
        return found

    def add_worker(self, num_cpus: int, wait: bool = True) -> Node:
        expected = self.alive_nodes() + 1
        node = self._start(f"node{len(self.nodes)}", [f"--address={self.gcs_address}", f"--num-cpus={num_cpus}"])
        if wait:
            self.wait_for_nodes(expected)
        return node

    def alive_nodes(self) -> int:
        return sum(node.process.poll() is None for node in self.nodes)

    def wait_for_nodes(self, count: int, timeout: float = 180) -> None:
        """Wait until `ray status` lists `count` active nodes; fails at once when a node's
        `ray start` process has exited, with the end of its log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.process.poll() is not None and not node.killed:
                    raise RuntimeError(f"`ray start` exited ({node.process.returncode}): {node.log_tail()}")
            status = subprocess.run(
                [RAY, "status", f"--address={self.gcs_address}"], env=self.process_env(), capture_output=True, text=True
            )
            active = status.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
            if status.returncode == 0 and active.count("node_") >= count:
                return
            time.sleep(1)
        raise RuntimeError(f"{count} Ray nodes not up after {timeout} s; logs: {[str(n.log) for n in self.nodes]}")

    def stop(self) -> None:
        """Kill every node (the head last), then any process still carrying this cluster's marker
        (a job's driver runs in a session of its own and can outlive its node's process group).
        The temp dir stays for the logs of a failed test."""
        for node in reversed(self.nodes):
            node.kill()
        stray = self.leftover_processes()
        for proc in stray:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(stray, timeout=30)

    def _start(self, name: str, args: list[str]) -> Node:
        ports = {flag: free_port() for flag in NODE_PORT_FLAGS}
        # A temp dir per node, as on separate machines: nodes sharing one would share (and clean up)
        # each other's runtime_env working_dir copies.
        node_dir = self.temp_dir / name
        command = [RAY, "start", "--block", "--node-ip-address=127.0.0.1", f"--temp-dir={node_dir}"]
        log = self.temp_dir / f"{name}.log"
        with open(log, "w") as out:
            process = subprocess.Popen(
                [*command, *(f"{flag}={port}" for flag, port in ports.items()), *args],
                env=self.process_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as one
            )
        self.nodes.append(Node(process, log, ports))
        return self.nodes[-1]
