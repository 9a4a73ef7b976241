"""arrow-flight's own Flight SQL command-line client (Rust) against Marrow: an independent implementation of the
protocol, with a login."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def _flight_sql_client() -> str:
    path = os.environ.get("FLIGHT_SQL_CLIENT") or shutil.which("flight_sql_client")
    if not path:
        pytest.fail("arrow-flight's flight_sql_client is not installed (scripts/setup.sh builds it)")
    return path


def test_arrow_flight_rust_cli(auth_server):
    base = [_flight_sql_client(), "--host", "127.0.0.1", "--port", str(auth_server.port),
            "--username", "ada", "--password", "lovelace"]

    def run(*args: str) -> str:
        out = subprocess.run(base + list(args), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    run("statement-query", "CREATE TABLE cli_t (id BIGINT, name VARCHAR)")
    run("statement-query", "INSERT INTO cli_t VALUES (1, 'one'), (2, 'two')")
    assert "marrow" in run("catalogs")
    assert "public" in run("db-schemas", "marrow")
    tables = run("tables", "marrow")
    assert "cli_t" in tables and "memories" in tables
    rows = run("prepared-statement-query", "SELECT name FROM cli_t WHERE id = $1", "-p", "$1=2")
    assert "two" in rows and "one" not in rows
    rows = run("statement-query", "SELECT id * 100 AS x FROM cli_t ORDER BY id")
    assert "100" in rows and "200" in rows
    denied = subprocess.run([_flight_sql_client(), "--host", "127.0.0.1", "--port", str(auth_server.port),
                             "statement-query", "SELECT 1"], capture_output=True, text=True, timeout=60)
    assert denied.returncode != 0 and "valid authentication" in denied.stderr, denied.stderr
