"""What reads return: a memory row, a memory found by a search (recall or conditioned retrieval), and a history event.

A search result is always a :class:`Hit`: the :class:`MemoryRecord` and its cosine distance to the query, plus the
conditioner's ``recency`` and ``score`` when it came from :meth:`marrow.MemoryConditioner.condition`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Mapping, Optional, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["Hit", "MemoryEvent", "MemoryRecord", "MEMORY_COLUMNS"]

# The columns a MemoryRecord is read from (the embedding stays on the server).
MEMORY_COLUMNS = (
    "id, namespace, kind, content, importance, created_at, updated_at, last_accessed_at, access_count, metadata,"
    " expires_at"
)


def utc(value: Optional[datetime]) -> Optional[datetime]:
    """``value`` as an aware UTC time. Tables made by CREATE TABLE keep naive timestamps (UTC by convention);
    memories' are already UTC-aware."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def _required_utc(value: Optional[datetime]) -> datetime:
    aware = utc(value)
    assert aware is not None
    return aware


R = TypeVar("R", bound="DataclassInstance")


def _from_row(cls: type[R], row: Mapping[str, Any], **converted: Any) -> R:
    """``cls`` from the row's columns named like its fields (other columns are ignored), ``converted`` overriding."""
    return cls(**{f.name: row[f.name] for f in fields(cls) if f.name not in converted}, **converted)


@dataclass(frozen=True)
class MemoryRecord:
    """One row of ``memories`` (without the embedding)."""

    id: str
    namespace: str
    kind: str
    content: str
    importance: float
    created_at: datetime
    updated_at: Optional[datetime]
    last_accessed_at: Optional[datetime]
    access_count: int
    metadata: dict[str, Any]
    #: When the memory stops being recalled (None: never); :meth:`marrow.Memory.maintain` deletes it after.
    expires_at: Optional[datetime] = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> MemoryRecord:
        return _from_row(
            cls,
            row,
            importance=float(row["importance"]),
            created_at=_required_utc(row["created_at"]),
            updated_at=utc(row["updated_at"]),
            last_accessed_at=utc(row["last_accessed_at"]),
            access_count=int(row["access_count"] or 0),
            metadata=json.loads(row["metadata"] or "{}"),
            expires_at=utc(row.get("expires_at")),
        )


@dataclass(frozen=True)
class Hit:
    """A memory found by a search and its cosine distance to the query (``similarity = 1 - distance``).

    ``recency`` and ``score`` are set by the conditioner (its features and weighted score, see
    :mod:`marrow.conditioner`) and are None for a plain :meth:`marrow.Memory.recall`.
    """

    memory: MemoryRecord
    distance: float
    recency: Optional[float] = None
    score: Optional[float] = None
    #: The recall mode's own ranking score, higher is better: the fused relative score (hybrid), BM25 (keyword) or
    #: ``1 - distance`` (vector). None when the hit did not come from :meth:`marrow.Memory.recall`.
    rank_score: Optional[float] = None
    #: The conditioner's relevance feature (the mode's score scaled to [0, 1] over the candidate pool) and the
    #: memory's feedback feature (net helpful judgments, in (-1, 1)); None outside the conditioner.
    relevance_feature: Optional[float] = None
    feedback: Optional[float] = None

    @property
    def id(self) -> str:
        return self.memory.id

    @property
    def content(self) -> str:
        return self.memory.content

    @property
    def importance(self) -> float:
        return self.memory.importance

    @property
    def similarity(self) -> float:
        return 1.0 - self.distance

    @property
    def relevance(self) -> float:
        """The conditioner's relevance feature when set, else the similarity floored at 0."""
        if self.relevance_feature is not None:
            return self.relevance_feature
        return max(0.0, self.similarity)


@dataclass(frozen=True)
class MemoryEvent:
    """One row of ``memory_events``."""

    id: str
    memory_id: str
    namespace: str
    operation: str
    old_content: Optional[str]
    new_content: Optional[str]
    related_id: Optional[str]
    actor: Optional[str]
    at: datetime
    details: dict[str, Any]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> MemoryEvent:
        return _from_row(cls, row, at=_required_utc(row["at"]), details=json.loads(row["details"] or "{}"))
