"""A real local Ray cluster for tests that need one of their own: `ray start --head --block` on
free ports, with its own temp dir, in its own process group."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .s3_server import free_port

PORT_FLAGS = (
    "port",
    "metrics-export-port",
    "node-manager-port",
    "object-manager-port",
    "ray-client-server-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
)


class RayCluster:
    """A one-node cluster on this machine; `address` is its GCS address for `ray.init`/`ray_address`,
    `metrics_url` its Prometheus endpoint, `env` the environment its drivers need.

    Its temp dir is its own, so its `ray_current_cluster` file does not make other `ray.init()`
    calls on the machine join it; `stop()` kills its process group (never `ray stop`, which ends
    every Ray process on the machine)."""

    def __init__(self, num_cpus: int = 2, object_store_bytes: int = 400 * 1024**2, timeout_s: float = 60):
        self.ports = {flag: free_port() for flag in PORT_FLAGS}
        self.temp_dir = tempfile.mkdtemp(prefix="lbm-metrics-", dir="/tmp")  # short: Ray's socket paths live here
        self.metrics_url = f"http://127.0.0.1:{self.ports['metrics-export-port']}/metrics"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token"}  # what `ray start --head` turns on by default
        command = [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={num_cpus}",
            f"--object-store-memory={object_store_bytes}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
            *(f"--{flag}={port}" for flag, port in self.ports.items()),
        ]
        self.log = open(Path(self.temp_dir) / "ray-start.log", "w")  # closed by stop()
        self.process = subprocess.Popen(
            command, env=self.env, start_new_session=True, stdout=self.log, stderr=subprocess.STDOUT
        )
        address_file = Path(self.temp_dir) / "ray_current_cluster"  # written once the head node runs
        deadline = time.monotonic() + timeout_s
        while not address_file.exists() or not address_file.read_text().strip():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ray start failed; see {self.log.name}")
            time.sleep(0.2)
        self.address = address_file.read_text().strip()

    def stop(self) -> None:
        """Kill the head process and every Ray process it started (one process group)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
