"""Marrow's Python package: a client over ADBC's Flight SQL driver and the evolution layer above it.

>>> import marrow
>>> with marrow.connect("grpc://127.0.0.1:50051") as db:                      # doctest: +SKIP
...     mem = marrow.Memory(db)
...     mem.remember("the user prefers Rust", namespace="alice")
...     hits = mem.recall("which language does the user like?", namespace="alice", k=3)

Everything the layer stores (memories, their history, access logs, feedback, learned weights and thresholds, router
decisions, training-job requests) is a Marrow table reached through SQL; nothing reads Lance files directly. The
tables it creates are defined in ``marrow/_schema.py`` and created by :func:`ensure_tables`.

Modules: ``client`` (the connection), ``errors``, ``records`` (what reads return), ``memory``, ``conditioner``,
``uncertainty`` and ``router`` (the evolution layer).
"""

from __future__ import annotations

from typing import Any

from . import adapters
from ._schema import ensure_tables
from .client import Client, connect
from .conditioner import ConditionedContext, MemoryConditioner, ScoredMemory, Weights
from .errors import (
    AlreadyExistsError,
    AuthenticationError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    MarrowConnectionError,
    MarrowError,
    MarrowTimeoutError,
    NotFoundError,
    NotSupportedError,
    PermissionDeniedError,
    ResourceExhaustedError,
    SQLError,
    deprecated_alias,
)
from .memory import ForgetReport, MaintenanceReport, Memory, Merge, judge_by_words, scope
from .records import Hit, MemoryEvent, MemoryRecord
from .router import Action, AdapterMatch, Decision, EvolutionRouter, Level, MaintenanceResult, Thresholds
from .uncertainty import Uncertainty, UncertaintyEstimator

__all__ = [
    "Action",
    "AdapterMatch",
    "AlreadyExistsError",
    "AuthenticationError",
    "Client",
    "ConditionedContext",
    "Decision",
    "EvolutionRouter",
    "ForgetReport",
    "Hit",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "Level",
    "MaintenanceReport",
    "MaintenanceResult",
    "MarrowConnectionError",
    "MarrowError",
    "MarrowTimeoutError",
    "Memory",
    "MemoryConditioner",
    "MemoryEvent",
    "MemoryRecord",
    "Merge",
    "NotFoundError",
    "NotSupportedError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "SQLError",
    "ScoredMemory",
    "Thresholds",
    "Uncertainty",
    "UncertaintyEstimator",
    "Weights",
    "connect",
    "adapters",
    "ensure_tables",
    "judge_by_words",
    "scope",
]


def __getattr__(name: str) -> Any:
    # marrow.ConnectionError / marrow.TimeoutError: deprecated, reachable by name only, so `from marrow import *`
    # never shadows the builtins.
    cls = deprecated_alias(name)
    if cls is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return cls
