"""SQLite order store: keeps each order once by order_id and counts refused redeliveries."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS orders (
        order_id TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        stored_second INTEGER NOT NULL,
        stored_at REAL NOT NULL
    )
    """,
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO counters (name, value) VALUES ('duplicates', 0)",
)
_INSERT = (
    "INSERT OR IGNORE INTO orders (order_id, body, stored_second, stored_at) VALUES (?, ?, ?, ?)"
)
_COUNT_DUPLICATE = "UPDATE counters SET value = value + 1 WHERE name = 'duplicates'"


@dataclass(frozen=True, slots=True)
class StoredOrder:
    """One stored order: the JSON body as received and when it was stored (unix seconds)."""

    order_id: str
    body: str
    stored_at: float


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Unique orders stored, redeliveries refused, and new orders per unix second."""

    orders: int
    duplicates: int
    per_second: dict[int, int]


class OrderStore:
    """One SQLite connection (WAL, synchronous=NORMAL) owned by the backend.

    Counts are loaded once at open and kept in memory afterwards, so ``stats()`` costs
    nothing however many orders are stored. With ``batch_commits`` the writes of several
    ``put`` calls share one transaction that ``flush()`` commits; otherwise each ``put``
    commits on its own.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        clock: Callable[[], float] = time.time,
        batch_commits: bool = False,
    ) -> None:
        self._path = Path(path)
        self._clock = clock
        self._batch_commits = batch_commits
        self._conn: sqlite3.Connection | None = None
        self._orders = 0
        self._duplicates = 0
        self._per_second: dict[int, int] = {}

    @property
    def path(self) -> Path:
        return self._path

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def open(self) -> Self:
        """Open (creating parent directories, file and tables as needed) and load the counts."""
        if self._conn is not None:
            return self
        if str(self._path) != ":memory:":
            self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                conn.execute(statement)
            per_second = dict(
                conn.execute(
                    "SELECT stored_second, COUNT(*) FROM orders GROUP BY stored_second"
                ).fetchall()
            )
            row = conn.execute("SELECT value FROM counters WHERE name = 'duplicates'").fetchone()
        except BaseException:
            conn.close()
            raise
        self._per_second = {int(second): int(count) for second, count in per_second.items()}
        self._orders = sum(self._per_second.values())
        self._duplicates = int(row[0])
        self._conn = conn
        return self

    def close(self) -> None:
        """Commit whatever is pending and close the connection; closing twice is harmless."""
        conn = self._conn
        if conn is None:
            return
        try:
            if conn.in_transaction:
                conn.execute("COMMIT")
        finally:
            self._conn = None
            conn.close()

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("order store is not open")
        return self._conn

    def put(self, order_id: str, body: bytes | str) -> bool:
        """Store the order unless its id is known; True if new, False for a redelivery."""
        conn = self._connection()
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        if self._batch_commits and not conn.in_transaction:
            conn.execute("BEGIN")
        now = self._clock()
        second = int(now)
        if conn.execute(_INSERT, (order_id, text, second, now)).rowcount == 1:
            self._orders += 1
            self._per_second[second] = self._per_second.get(second, 0) + 1
            return True
        conn.execute(_COUNT_DUPLICATE)
        self._duplicates += 1
        return False

    def flush(self) -> None:
        """Commit the open batch, if any (only needed with ``batch_commits``)."""
        conn = self._connection()
        if conn.in_transaction:
            conn.execute("COMMIT")

    def get(self, order_id: str) -> StoredOrder | None:
        """The stored order with this id, or None."""
        row = (
            self._connection()
            .execute("SELECT body, stored_at FROM orders WHERE order_id = ?", (order_id,))
            .fetchone()
        )
        if row is None:
            return None
        return StoredOrder(order_id=order_id, body=str(row[0]), stored_at=float(row[1]))

    def stats(self) -> StoreStats:
        """Counts as of now (from memory, consistent with what was written)."""
        self._connection()
        return StoreStats(
            orders=self._orders,
            duplicates=self._duplicates,
            per_second=dict(self._per_second),
        )
