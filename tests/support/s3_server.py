"""A throwaway S3-compatible server for the test suite, on 127.0.0.1: moto's server mode (what
s3fs's own tests use), as its own process, so memo talks to it over HTTP exactly as to S3."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

# What memo's S3 client reads: the usual AWS settings (never passed in a URL).
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "memo-test-key", "AWS_SECRET_ACCESS_KEY": "memo-test-secret-0123456789"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None

    def environment(self) -> dict[str, str]:
        return {
            **CREDENTIALS,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(self.endpoint, timeout=1).close()
                return
            if self._proc.poll() is not None:
                raise RuntimeError("the S3 test server (moto) exited at start")
            time.sleep(0.1)
        raise RuntimeError("the S3 test server (moto) did not answer within 30 s")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
            if self._proc.poll() is None:
                self._proc.kill()

    def create_bucket(self) -> str:
        """A fresh bucket; returns its s3:// URL with a prefix, as a team would configure it."""
        name = f"memo-{uuid.uuid4().hex[:12]}"
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        urllib.request.urlopen(request, timeout=10).close()  # moto accepts unsigned requests
        return f"s3://{name}/registry"


def apply_environment(server: S3Server) -> None:
    os.environ.update(server.environment())
