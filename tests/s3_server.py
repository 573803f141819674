"""A real S3 API on loopback: moto's standalone server, started and stopped by the tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pyarrow.fs as pafs

# Dummy credentials (moto accepts any), distinctive so that tests can search outputs for them.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIALOOKBOOKTESTKEY1",
    "AWS_SECRET_ACCESS_KEY": "lookbook-dummy-secret-4f9c2e",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """`moto_server` on 127.0.0.1:<free port> in its own process; `endpoint` is its URL."""

    def __init__(self):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto_server did not start on port {self.port}")

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def filesystem(self) -> pafs.S3FileSystem:
        """pyarrow's S3 filesystem on this server, with the dummy credentials."""
        return pafs.S3FileSystem(
            access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region=CREDENTIALS["AWS_DEFAULT_REGION"],
            endpoint_override=f"127.0.0.1:{self.port}",
            scheme="http",
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
