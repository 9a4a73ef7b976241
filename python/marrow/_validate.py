"""Checks of caller input, shared by every API of the package: bad input is refused before anything is sent.

Each check returns the value in the form that is bound as a SQL parameter (the string as given, a float, JSON text,
a float32 vector) or raises :class:`~marrow.errors.InvalidArgumentError`.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .errors import InvalidArgumentError

__all__ = ["text", "namespace", "importance", "metadata", "embedding", "embeddings", "int_in_range", "expiry"]


def text(value: Any, what: str) -> str:
    """``value`` if it is a string with something besides white space in it."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgumentError(f"{what} must be a non-empty string")
    return value


def namespace(value: Any) -> str:
    """A namespace: a path of one or more non-empty ``/``-separated segments (``alice``, ``user=alice/agent=bot``)."""
    text(value, "namespace")
    if any(not part.strip() for part in value.split("/")):
        raise InvalidArgumentError(
            f"namespace {value!r} has an empty segment: use non-empty parts separated by single '/'"
        )
    return str(value)


def importance(value: Any) -> float:
    """An importance in [0, 1]."""
    result = float(value)
    if not 0.0 <= result <= 1.0:
        raise InvalidArgumentError(f"importance must be in [0, 1], got {value!r}")
    return result


def metadata(value: Optional[Mapping[str, Any]]) -> str:
    """A mapping as the JSON text stored in ``metadata`` columns (``{}`` for None)."""
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        raise InvalidArgumentError("metadata must be a mapping (stored as JSON)")
    try:
        return json.dumps(dict(value), sort_keys=True)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"metadata is not JSON-serializable: {e}") from e


def embedding(value: Optional[Sequence[float]], dimension: int) -> Optional[np.ndarray]:
    """A finite float32 vector of ``dimension`` values (None stays None: the server embeds the text)."""
    if value is None:
        return None
    try:
        values = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"embedding is not a vector of numbers: {e}") from e
    if values.ndim != 1 or values.shape[0] != dimension:
        raise InvalidArgumentError(f"embedding has shape {values.shape}, memories.embedding is FLOAT[{dimension}]")
    if not np.isfinite(values).all():
        raise InvalidArgumentError("embedding contains NaN or infinity")
    return values


def embeddings(values: Sequence[Any], dimension: int) -> np.ndarray:
    """Vectors as one ``(n, dimension)`` float32 array, each checked as :func:`embedding` checks one; in one pass
    when they stack, else one by one (which also names the first bad vector)."""
    try:
        stacked = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        stacked = None
    if stacked is not None and stacked.shape == (len(values), dimension) and np.isfinite(stacked).all():
        return stacked
    checked = [embedding(v, dimension) for v in values]
    if any(v is None for v in checked):
        raise InvalidArgumentError("embeddings must not be None here: leave the field out to have the server embed")
    return np.stack([v for v in checked if v is not None])


def int_in_range(value: Any, what: str, lo: int, hi: int) -> int:
    """An ``int`` in [lo, hi]."""
    if not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidArgumentError(f"{what} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def expiry(ttl: Any, expires_at: Any) -> Optional[datetime]:
    """When a memory expires: ``expires_at`` (an aware datetime; a naive one is taken as UTC) or now + ``ttl``
    (seconds or a timedelta, > 0); None when neither is given."""
    if ttl is not None and expires_at is not None:
        raise InvalidArgumentError("give ttl or expires_at, not both")
    if expires_at is not None:
        if not isinstance(expires_at, datetime):
            raise InvalidArgumentError(f"expires_at must be a datetime, got {expires_at!r}")
        return expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=timezone.utc)
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float, timedelta)):
        raise InvalidArgumentError(f"ttl must be seconds or a timedelta, got {ttl!r}")
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    if not 0 < seconds < 1e11:
        raise InvalidArgumentError(f"ttl must be a positive duration, got {ttl!r}")
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)
