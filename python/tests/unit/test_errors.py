"""Error mapping and the exception names: no server needed."""

from __future__ import annotations

import builtins

import adbc_driver_manager as adbc
import pytest

import marrow
from marrow.errors import map_error


def _driver_error(vendor_code: int, status: adbc.AdbcStatusCode, text: str = "boom") -> adbc.Error:
    return adbc.OperationalError(text, status_code=status, vendor_code=vendor_code)


def test_grpc_codes_map_to_marrow_classes_that_stay_builtin_and_dbapi_errors():
    unavailable = map_error(_driver_error(14, adbc.AdbcStatusCode.IO), "cannot connect")
    assert type(unavailable) is marrow.MarrowConnectionError and unavailable.grpc_code == "UNAVAILABLE"
    assert isinstance(unavailable, builtins.ConnectionError) and isinstance(unavailable, adbc.OperationalError)
    assert str(unavailable) == "cannot connect: boom"
    deadline = map_error(_driver_error(4, adbc.AdbcStatusCode.TIMEOUT))
    assert type(deadline) is marrow.MarrowTimeoutError and isinstance(deadline, builtins.TimeoutError)
    assert type(map_error(_driver_error(5, adbc.AdbcStatusCode.NOT_FOUND))) is marrow.NotFoundError
    # The driver reports some refused logins as UNAVAILABLE; the message tells.
    refused = map_error(_driver_error(14, adbc.AdbcStatusCode.IO, "Unauthenticated: bad password"))
    assert type(refused) is marrow.AuthenticationError and refused.grpc_code == "UNAUTHENTICATED"
    # The Go driver reports RESOURCE_EXHAUSTED as INTERNAL without a vendor code; the message tells.
    exhausted = adbc.InternalError(
        "INTERNAL: [FlightSQL] Resources exhausted: Failed to reserve memory for sort",
        status_code=adbc.AdbcStatusCode.INTERNAL,
    )
    mapped = map_error(exhausted)
    assert type(mapped) is marrow.ResourceExhaustedError and mapped.grpc_code == "RESOURCE_EXHAUSTED"
    other = map_error(adbc.InternalError("INTERNAL: boom", status_code=adbc.AdbcStatusCode.INTERNAL))
    assert type(other) is marrow.InternalError
    # Already mapped: unchanged.
    assert map_error(refused) is refused


def test_old_names_are_deprecated_aliases_that_star_import_does_not_export():
    with pytest.warns(DeprecationWarning, match="MarrowConnectionError"):
        assert marrow.ConnectionError is marrow.MarrowConnectionError
    with pytest.warns(DeprecationWarning, match="MarrowTimeoutError"):
        assert marrow.errors.TimeoutError is marrow.MarrowTimeoutError
    namespace: dict[str, object] = {}
    exec("from marrow import *", namespace)
    assert "ConnectionError" not in namespace and "TimeoutError" not in namespace
    assert namespace["MarrowConnectionError"] is marrow.MarrowConnectionError
    with pytest.raises(AttributeError):
        marrow.NoSuchError  # noqa: B018
