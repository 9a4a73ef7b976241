"""Marrow's exceptions, mapped from the gRPC status codes the server returns (``flight/src/status.rs``).

Every class is also the matching DB-API exception of ``adbc_driver_manager``, so code written against the plain ADBC
connection (``except adbc_driver_manager.ProgrammingError``) keeps catching them.
"""

from __future__ import annotations

import builtins
import re
import warnings
from typing import Any, Optional

import adbc_driver_manager as adbc

__all__ = [
    "MarrowError",
    "MarrowConnectionError",
    "AuthenticationError",
    "PermissionDeniedError",
    "SQLError",
    "InvalidArgumentError",
    "NotFoundError",
    "AlreadyExistsError",
    "NotSupportedError",
    "ResourceExhaustedError",
    "MarrowTimeoutError",
    "InternalError",
    "map_error",
    "map_flight_error",
]


class MarrowError(adbc.Error):
    """Base class of every error raised by the ``marrow`` package.

    ``grpc_code`` is the gRPC status name (``"INVALID_ARGUMENT"``, …) when the server answered, else ``None``.
    """

    grpc_code: Optional[str] = None

    def __init__(
        self,
        message: str,
        *,
        grpc_code: Optional[str] = None,
        status_code: adbc.AdbcStatusCode = adbc.AdbcStatusCode.UNKNOWN,
        vendor_code: Any = None,
    ) -> None:
        # adbc's NotSupportedError has its own constructor; the base one sets the fields every subclass reads.
        adbc.Error.__init__(self, message, status_code=status_code, vendor_code=vendor_code)
        if grpc_code is not None:
            self.grpc_code = grpc_code


class MarrowConnectionError(MarrowError, adbc.OperationalError, builtins.ConnectionError):
    """The server is not running, not reachable, or stopped answering (gRPC UNAVAILABLE)."""


class AuthenticationError(MarrowError, adbc.OperationalError):
    """Wrong or missing credentials (gRPC UNAUTHENTICATED)."""


class PermissionDeniedError(MarrowError, adbc.ProgrammingError):
    """The request reaches outside what the server allows, e.g. a path outside ``--export-root`` (PERMISSION_DENIED)."""


class SQLError(MarrowError, adbc.ProgrammingError):
    """Bad SQL or bad input to a statement (gRPC INVALID_ARGUMENT)."""


class InvalidArgumentError(SQLError, ValueError):
    """A Python-side argument was rejected before anything was sent or written (empty query, wrong dimension, …)."""


class NotFoundError(MarrowError, adbc.ProgrammingError, LookupError):
    """A table, memory, namespace, version or adapter does not exist (gRPC NOT_FOUND)."""


class AlreadyExistsError(MarrowError, adbc.IntegrityError):
    """A table or primary key already exists (gRPC ALREADY_EXISTS)."""


class NotSupportedError(MarrowError, adbc.NotSupportedError):
    """The server does not support the statement (gRPC UNIMPLEMENTED)."""


class FailedPreconditionError(MarrowError, adbc.ProgrammingError):
    """The system is not in the state the call needs, e.g. no embedding model (gRPC FAILED_PRECONDITION)."""


class ResourceExhaustedError(MarrowError, adbc.OperationalError):
    """A memory limit or a full disk (gRPC RESOURCE_EXHAUSTED)."""


class MarrowTimeoutError(MarrowError, adbc.OperationalError, builtins.TimeoutError):
    """The call did not finish within the configured timeout (gRPC DEADLINE_EXCEEDED)."""


class InternalError(MarrowError, adbc.InternalError):
    """Anything else the server reported (gRPC INTERNAL; details are in the server's log)."""


# gRPC status numbers (the Flight SQL driver reports them as the vendor code) → (name, class).
_BY_GRPC: dict[int, tuple[str, type[MarrowError]]] = {
    3: ("INVALID_ARGUMENT", SQLError),
    4: ("DEADLINE_EXCEEDED", MarrowTimeoutError),
    5: ("NOT_FOUND", NotFoundError),
    6: ("ALREADY_EXISTS", AlreadyExistsError),
    7: ("PERMISSION_DENIED", PermissionDeniedError),
    8: ("RESOURCE_EXHAUSTED", ResourceExhaustedError),
    9: ("FAILED_PRECONDITION", FailedPreconditionError),
    12: ("UNIMPLEMENTED", NotSupportedError),
    13: ("INTERNAL", InternalError),
    14: ("UNAVAILABLE", MarrowConnectionError),
    16: ("UNAUTHENTICATED", AuthenticationError),
}

# ADBC status codes, when the driver gives no gRPC code.
_BY_ADBC: dict[adbc.AdbcStatusCode, tuple[str, type[MarrowError]]] = {
    adbc.AdbcStatusCode.INVALID_ARGUMENT: ("INVALID_ARGUMENT", SQLError),
    adbc.AdbcStatusCode.NOT_FOUND: ("NOT_FOUND", NotFoundError),
    adbc.AdbcStatusCode.ALREADY_EXISTS: ("ALREADY_EXISTS", AlreadyExistsError),
    adbc.AdbcStatusCode.NOT_IMPLEMENTED: ("UNIMPLEMENTED", NotSupportedError),
    adbc.AdbcStatusCode.UNAUTHENTICATED: ("UNAUTHENTICATED", AuthenticationError),
    adbc.AdbcStatusCode.UNAUTHORIZED: ("PERMISSION_DENIED", PermissionDeniedError),
    adbc.AdbcStatusCode.IO: ("UNAVAILABLE", MarrowConnectionError),
    adbc.AdbcStatusCode.TIMEOUT: ("DEADLINE_EXCEEDED", MarrowTimeoutError),
    adbc.AdbcStatusCode.INTERNAL: ("INTERNAL", InternalError),
}


def map_error(err: BaseException, context: str = "") -> MarrowError:
    """The Marrow exception for an ADBC/gRPC error (``err`` itself if it already is one)."""
    if isinstance(err, MarrowError):
        return err
    name: str = "UNKNOWN"
    cls: type[MarrowError] = InternalError
    vendor = getattr(err, "vendor_code", None)
    status = getattr(err, "status_code", None)
    if isinstance(vendor, int) and vendor in _BY_GRPC:
        name, cls = _BY_GRPC[vendor]
    elif status in _BY_ADBC:
        name, cls = _BY_ADBC[status]
    text = str(err)
    # The Flight SQL driver reports a refused connection as IO/UNAVAILABLE, and wrong credentials on the handshake
    # sometimes as UNAVAILABLE too, with the real reason only in the message.
    if "nauthenticated" in text or "UNAUTHENTICATED" in text:
        name, cls = "UNAUTHENTICATED", AuthenticationError
    # The Go driver reports RESOURCE_EXHAUSTED (a memory limit hit while a result streams) as INTERNAL without a
    # vendor code; the server's message names it.
    if cls is InternalError and ("Resources exhausted" in text or "RESOURCE_EXHAUSTED" in text):
        name, cls = "RESOURCE_EXHAUSTED", ResourceExhaustedError
    message = f"{context}: {text}" if context else text
    return cls(
        message,
        grpc_code=name,
        status_code=status if isinstance(status, adbc.AdbcStatusCode) else adbc.AdbcStatusCode.UNKNOWN,
        vendor_code=vendor if isinstance(vendor, int) else None,
    )


# pyarrow.flight raises its own classes for a few gRPC codes and Arrow errors for the others, naming the code in the
# message: "Flight returned invalid argument error, with message: …" (or "gRPC returned …" for some codes).
_FLIGHT_RETURNED = re.compile(r"(?:Flight|gRPC) returned ([a-z]+(?: [a-z]+)*) error")
# pyarrow's words for some codes ("Flight returned timeout error").
_FLIGHT_NAMES: dict[str, str] = {"TIMEOUT": "DEADLINE_EXCEEDED", "UNAUTHORIZED": "PERMISSION_DENIED"}
_BY_FLIGHT_CLASS: dict[str, str] = {
    "FlightUnauthenticatedError": "UNAUTHENTICATED",
    "FlightUnauthorizedError": "PERMISSION_DENIED",
    "FlightUnavailableError": "UNAVAILABLE",
    "FlightTimedOutError": "DEADLINE_EXCEEDED",
    "FlightCancelledError": "CANCELLED",
    "FlightInternalError": "INTERNAL",
}


def map_flight_error(err: BaseException, context: str = "") -> MarrowError:
    """The Marrow exception for an error raised by ``pyarrow.flight`` (the client's single-call statement path)."""
    if isinstance(err, MarrowError):
        return err
    text = str(err)
    found = _FLIGHT_RETURNED.search(text)
    name = found.group(1).upper().replace(" ", "_") if found else None
    if name is None:
        name = next((n for c, n in _BY_FLIGHT_CLASS.items() if type(err).__name__ == c), "INTERNAL")
    name = _FLIGHT_NAMES.get(name, name)
    if name == "UNAUTHENTICATED" or "UNAUTHENTICATED" in text:
        name = "UNAUTHENTICATED"
    by_name = {n: (code, cls) for code, (n, cls) in _BY_GRPC.items()}
    code, cls = by_name.get(name, (None, InternalError))
    # The server's own message, without pyarrow's framing and gRPC debug context.
    message = text
    if found and ", with message: " in text:
        message = text.split(", with message: ", 1)[1]
    message = message.split(". gRPC client debug context:", 1)[0]
    # Led by the status name, as the ADBC path's messages are.
    if not message.startswith(f"{name}:"):
        message = f"{name}: {message}"
    message = f"{context}: {message}" if context else message
    return cls(message, grpc_code=name, vendor_code=code)


# The old names shadowed the builtins under `from marrow import *`: they stay importable by name, with a
# DeprecationWarning, for one more release, and are never exported.
_DEPRECATED: dict[str, type[MarrowError]] = {
    "ConnectionError": MarrowConnectionError,
    "TimeoutError": MarrowTimeoutError,
}


def deprecated_alias(name: str) -> Optional[type[MarrowError]]:
    """The renamed class for an old name (warning that it is deprecated), or ``None`` for any other name."""
    cls = _DEPRECATED.get(name)
    if cls is not None:
        warnings.warn(
            f"marrow.{name} is deprecated and will be removed in the next release: use marrow.{cls.__name__}",
            DeprecationWarning,
            stacklevel=3,
        )
    return cls


def __getattr__(name: str) -> Any:
    cls = deprecated_alias(name)
    if cls is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return cls
