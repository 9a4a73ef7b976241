"""Marrow's Python client: a thin layer over ADBC's Flight SQL driver.

>>> import marrow
>>> with marrow.connect("grpc://127.0.0.1:50051") as conn:      # doctest: +SKIP
...     with conn.cursor() as cur:
...         cur.execute("SELECT id, content FROM memories WHERE namespace = $1", ["default"])
...         table = cur.fetch_arrow_table()
"""

from __future__ import annotations

from typing import Optional

import adbc_driver_flightsql.dbapi as flightsql
from adbc_driver_flightsql import DatabaseOptions

__all__ = ["connect"]


def connect(
    uri: str = "grpc://127.0.0.1:50051",
    user: Optional[str] = None,
    password: Optional[str] = None,
    *,
    tls_root_certs: Optional[str] = None,
    autocommit: bool = True,
) -> flightsql.Connection:
    """Open an ADBC (DB-API 2.0) connection to a Marrow server.

    ``user``/``password`` log in with the Flight handshake; the server's bearer token is then sent on every call.
    ``tls_root_certs`` is a PEM string to trust for ``grpc+tls://`` URIs with a private CA.
    Settings made with ``SET`` last for the connection (its session cookie, or its login).
    """
    # Without a login the server keys the session (SET options, prepared statements) by a cookie: send it back.
    kwargs: dict[str, str] = {DatabaseOptions.WITH_COOKIE_MIDDLEWARE.value: "true"}
    if user is not None:
        kwargs["username"] = user
    if password is not None:
        kwargs["password"] = password
    if tls_root_certs is not None:
        kwargs[DatabaseOptions.TLS_ROOT_CERTS.value] = tls_root_certs
    return flightsql.connect(uri, db_kwargs=kwargs, autocommit=autocommit)
