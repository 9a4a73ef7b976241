"""Start and stop a `marrow serve` for a benchmark: a free port, a data directory, ready once `SELECT 1` answers."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import marrow


def start(binary: str, data: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "serve", "--data-dir", str(data), "--port", str(port), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"grpc://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with marrow.connect(uri) as c:
                c.scalar("SELECT 1")
            return proc, uri
        except Exception:  # noqa: BLE001 - not up yet
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{binary} did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(30)
