"""A key holder's durable memory: which vector it agreed to decrypt for each round.

The holder records (round, vector digest) BEFORE it sends its decryption share and never
answers a different vector for a recorded round, so a crash between recording and answering
can only make it refuse, never decrypt twice. :class:`HolderStore` is the interface,
:class:`SQLiteHolderStore` the durable backend (WAL, ``synchronous=FULL``),
:class:`MemoryHolderStore` the one for tests; one test suite runs against both.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ffa_lora.errors import StateError
from services.common.sqlite import connect_durable

__all__ = ["DecryptionRecord", "HolderStore", "MemoryHolderStore", "SQLiteHolderStore"]


@dataclass(frozen=True)
class DecryptionRecord:
    """One round a holder agreed to decrypt."""

    round: int
    vector_digest: bytes
    clients: tuple[str, ...]
    edges: tuple[str, ...]
    weight_total: int


class HolderStore(ABC):
    """Durable (round -> agreed vector) records."""

    @abstractmethod
    def record(self, rec: DecryptionRecord) -> DecryptionRecord:
        """Record ``rec`` durably unless its round is already recorded; return the record that
        holds for the round afterwards (``rec``, or the earlier one)."""

    @abstractmethod
    def records(self) -> list[DecryptionRecord]:
        """Every record, by round."""

    def close(self) -> None:
        pass


class MemoryHolderStore(HolderStore):
    """In-memory records for tests."""

    def __init__(self) -> None:
        self._records: dict[int, DecryptionRecord] = {}
        self._lock = threading.Lock()

    def record(self, rec: DecryptionRecord) -> DecryptionRecord:
        with self._lock:
            return self._records.setdefault(rec.round, rec)

    def records(self) -> list[DecryptionRecord]:
        return [self._records[r] for r in sorted(self._records)]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS decryptions (
  round INTEGER PRIMARY KEY, digest BLOB NOT NULL, clients TEXT NOT NULL, edges TEXT NOT NULL,
  weight_total INTEGER NOT NULL, recorded REAL NOT NULL);
"""


class SQLiteHolderStore(HolderStore):
    """``keyholder.db`` in the holder's state folder."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "keyholder.db"
        self._lock = threading.Lock()
        try:
            self._db = connect_durable(self.path, _SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StateError(f"state file {self.path} is not a readable SQLite database ({exc}); "
                             "restore it from a backup (never delete it: it is what stops this "
                             "holder from decrypting a round twice)") from None

    def record(self, rec: DecryptionRecord) -> DecryptionRecord:
        with self._lock:
            try:
                self._db.execute(
                    "INSERT OR IGNORE INTO decryptions VALUES(?,?,?,?,?,?)",
                    (rec.round, rec.vector_digest, json.dumps(rec.clients), json.dumps(rec.edges),
                     rec.weight_total, time.time()))
                row = self._db.execute(
                    "SELECT round, digest, clients, edges, weight_total FROM decryptions "
                    "WHERE round=?", (rec.round,)).fetchone()
            except sqlite3.DatabaseError as exc:
                raise StateError(f"state file {self.path}: {exc}") from None
        return _row(row)

    def records(self) -> list[DecryptionRecord]:
        with self._lock:
            rows = self._db.execute("SELECT round, digest, clients, edges, weight_total "
                                    "FROM decryptions ORDER BY round").fetchall()
        return [_row(r) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _row(row: tuple[Any, ...]) -> DecryptionRecord:
    rnd, digest, clients, edges, total = row
    return DecryptionRecord(int(rnd), bytes(digest), tuple(json.loads(clients)), tuple(json.loads(edges)),
                            int(total))
