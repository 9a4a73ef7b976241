"""Marrow's Python package: a client over ADBC's Flight SQL driver and the evolution layer above it.

>>> import marrow
>>> with marrow.connect("grpc://127.0.0.1:50051") as db:                      # doctest: +SKIP
...     mem = marrow.Memory(db)
...     mem.remember("the user prefers Rust", namespace="alice")
...     hits = mem.recall("which language does the user like?", namespace="alice", k=3)

Everything the layer stores (memories, their history, access logs, feedback, learned weights and thresholds, router
decisions, training-job requests) is a Marrow table reached through SQL; nothing reads Lance files directly.
"""

from __future__ import annotations

from .client import Client, connect
from .conditioner import ConditionedContext, MemoryConditioner, ScoredMemory, Weights
from .errors import (
    AlreadyExistsError,
    AuthenticationError,
    ConnectionError,
    InternalError,
    InvalidArgumentError,
    MarrowError,
    NotFoundError,
    NotSupportedError,
    PermissionDeniedError,
    ResourceExhaustedError,
    SQLError,
    TimeoutError,
)
from .memory import ForgetReport, Hit, MaintenanceReport, Memory, MemoryEvent, MemoryRecord, Merge
from .router import AdapterMatch, Decision, EvolutionRouter, MaintenanceResult, Thresholds
from .uncertainty import Uncertainty, UncertaintyEstimator

__all__ = [
    "AdapterMatch",
    "AlreadyExistsError",
    "AuthenticationError",
    "Client",
    "ConditionedContext",
    "ConnectionError",
    "Decision",
    "EvolutionRouter",
    "ForgetReport",
    "Hit",
    "MaintenanceReport",
    "MaintenanceResult",
    "Memory",
    "MemoryConditioner",
    "MemoryEvent",
    "MemoryRecord",
    "Merge",
    "ScoredMemory",
    "Thresholds",
    "Uncertainty",
    "UncertaintyEstimator",
    "Weights",
    "InternalError",
    "InvalidArgumentError",
    "MarrowError",
    "NotFoundError",
    "NotSupportedError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "SQLError",
    "TimeoutError",
    "connect",
]
