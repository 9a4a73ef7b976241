"""Appends that must not wait on the caller's path: a thread with its own connection sends queued rows in batches.

``recall`` appends one access-log row per hit. Sent on the caller's thread that is a commit per recall; sent from
here, a recall returns as soon as its rows are queued, and the rows of many recalls go in one ingest (which the
server's group commit merges further with other clients'). ``flush()`` waits until everything queued so far is
written; ``close()`` flushes and stops. Rows still queued when the process is killed are lost, so only statistics go
this way (access counts), never memories.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import weakref
from typing import TYPE_CHECKING, Optional, Union

import pyarrow as pa

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger("marrow")

_Item = Union[pa.Table, threading.Event, None]


class BackgroundAppender:
    """Append tables to ``table_name`` from a daemon thread, at most every ``interval`` seconds per batch."""

    def __init__(self, client: Client, table_name: str, *, interval: float = 0.2, max_rows: int = 10_000) -> None:
        self._source = client
        self._table_name = table_name
        self._interval = interval
        self._max_rows = max_rows
        self._queue: queue.Queue[_Item] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._conn: Optional[Client] = None
        self.errors = 0
        self.last_error: Optional[BaseException] = None
        self.rows_written = 0
        self._closed = False
        self._finalizer = weakref.finalize(self, BackgroundAppender._stop, self._queue)
        atexit.register(self._finalizer)

    def append(self, table: pa.Table) -> None:
        if self._closed:
            raise RuntimeError("the background appender is closed")
        self._ensure_thread()
        self._queue.put(table)

    def flush(self, timeout: Optional[float] = 30.0) -> bool:
        """Wait until every row queued before this call is written (or failed); False on timeout."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: Optional[float] = 30.0) -> None:
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        BackgroundAppender._stop(self._queue)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @staticmethod
    def _stop(q: queue.Queue[_Item]) -> None:
        q.put(None)

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="marrow-appender", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        pending: list[pa.Table] = []
        waiters: list[threading.Event] = []
        stop = False
        while not stop:
            due = False
            try:
                first = self._queue.get(timeout=self._interval if pending else None)
            except queue.Empty:
                due = True  # the interval passed: write what is pending
                items: list[_Item] = []
            else:
                items = [first]
            # Take whatever else is queued already, so that one ingest carries it.
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for item in items:
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    waiters.append(item)
                else:
                    pending.append(item)
            rows = sum(t.num_rows for t in pending)
            if pending and (due or waiters or stop or rows >= self._max_rows):
                self._write(pending)
                pending = []
            for w in waiters:
                w.set()
            waiters = []

    def _write(self, tables: list[pa.Table]) -> None:
        try:
            if self._conn is None:
                self._conn = self._source.clone()
            table = pa.concat_tables(tables)
            self._conn.ingest(self._table_name, table)
            self.rows_written += table.num_rows
        except Exception as e:  # a background write must not kill the thread: it is counted and logged
            self.errors += 1
            self.last_error = e
            log.warning(
                "marrow: %d row(s) for %s not written: %s", sum(t.num_rows for t in tables), self._table_name, e
            )
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None
