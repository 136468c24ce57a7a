"""The coordinator's durable state: rounds, adapters, the privacy ledger, scheduler state.

:class:`CoordinatorStore` is the interface; :class:`SQLiteStore` keeps it in one SQLite file
(WAL, ``synchronous=FULL``) beside the adapter files in the state folder, and
:class:`MemoryStore` keeps it in memory for tests. One abstract test suite runs against both.

Commit protocol of a round (crash-safe at every step):
1. ``record_privacy_spend`` — the ledger row is committed BEFORE any noised model exists, so a
   crash can never under-count epsilon (write-ahead);
2. ``commit_round`` — the adapter file is written atomically (tmp, fsync, rename), then one
   transaction records the round, the adapter and the scheduler/accountant state together.
A restart resumes from the last committed round with the same adapter and ledger.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ffa_lora.errors import StateError
from ffa_lora.files import atomic_write
from ffa_lora.privacy.ledger import LedgerEntry
from services.common.sqlite import connect_durable

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class RoundRecord:
    round: int
    adapter_version: int
    contributors: list[str]
    metrics: dict[str, Any]
    finished: float


class CoordinatorStore(ABC):
    """Durable coordinator state."""

    @abstractmethod
    def get_meta(self, key: str) -> str | None: ...

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None: ...

    @abstractmethod
    def record_privacy_spend(self, entry: LedgerEntry) -> None:
        """Durably append a ledger row (idempotent per round)."""

    @abstractmethod
    def ledger(self) -> list[LedgerEntry]: ...

    @abstractmethod
    def commit_round(self, record: RoundRecord, adapter_blob: bytes, state: dict[str, Any]) -> None:
        """Atomically store the round, its adapter and the named state blobs."""

    @abstractmethod
    def rounds(self) -> list[RoundRecord]: ...

    @abstractmethod
    def load_adapter(self, version: int) -> bytes: ...

    @abstractmethod
    def load_state(self, name: str) -> Any | None: ...

    def last_committed(self) -> RoundRecord | None:
        rs = self.rounds()
        return rs[-1] if rs else None

    def next_round(self) -> int:
        """Round numbers are never reused: after the last committed or started round, so late
        uploads for an aborted or crashed round are recognised as foreign."""
        last = self.last_committed()
        top = last.round if last else 0
        started = self.get_meta("last_round_started")
        return max(top, int(started) if started else 0) + 1

    def close(self) -> None:
        pass


class MemoryStore(CoordinatorStore):
    """In-memory store for tests and simulations."""

    def __init__(self) -> None:
        self._meta: dict[str, str] = {}
        self._ledger: dict[int, LedgerEntry] = {}
        self._rounds: list[RoundRecord] = []
        self._adapters: dict[int, bytes] = {}
        self._state: dict[str, Any] = {}

    def get_meta(self, key: str) -> str | None:
        return self._meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        self._meta[key] = value

    def record_privacy_spend(self, entry: LedgerEntry) -> None:
        self._ledger.setdefault(entry.round_index, entry)

    def ledger(self) -> list[LedgerEntry]:
        return [self._ledger[k] for k in sorted(self._ledger)]

    def commit_round(self, record: RoundRecord, adapter_blob: bytes, state: dict[str, Any]) -> None:
        if any(r.round == record.round for r in self._rounds):
            raise StateError(f"round {record.round} is already committed")
        self._adapters[record.adapter_version] = adapter_blob
        self._state.update(json.loads(json.dumps(state)))
        self._rounds.append(record)

    def rounds(self) -> list[RoundRecord]:
        return list(self._rounds)

    def load_adapter(self, version: int) -> bytes:
        try:
            return self._adapters[version]
        except KeyError:
            raise StateError(f"adapter version {version} is not in the store") from None

    def load_state(self, name: str) -> Any | None:
        return self._state.get(name)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
  round INTEGER PRIMARY KEY, adapter_version INTEGER NOT NULL, contributors TEXT NOT NULL,
  metrics TEXT NOT NULL, finished REAL NOT NULL);
CREATE TABLE IF NOT EXISTS adapters (
  version INTEGER PRIMARY KEY, file TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS privacy_ledger (
  round INTEGER PRIMARY KEY, mechanism TEXT NOT NULL, epsilon REAL NOT NULL, delta REAL NOT NULL,
  noise_scale REAL NOT NULL, event TEXT NOT NULL, written REAL NOT NULL);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class SQLiteStore(CoordinatorStore):
    """SQLite file ``coordinator.db`` plus ``adapters/v<N>.safetensors`` in the state folder."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "adapters").mkdir(exist_ok=True)
        self.path = self.dir / "coordinator.db"
        self._lock = threading.Lock()
        try:
            self._db = connect_durable(self.path, _SCHEMA)
            version = self.get_meta("schema_version")
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"state file {self.path} is not a readable SQLite database ({exc}); restore it from a "
                "backup or move it away to start a new federation"
            ) from None
        if version is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif int(version) != SCHEMA_VERSION:
            raise StateError(f"{self.path} has schema version {version}, this build reads {SCHEMA_VERSION}")

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as exc:
                raise StateError(f"state file {self.path}: {exc}") from None

    def get_meta(self, key: str) -> str | None:
        rows = self._q("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self._q("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))

    def record_privacy_spend(self, entry: LedgerEntry) -> None:
        self._q(
            "INSERT OR IGNORE INTO privacy_ledger VALUES(?,?,?,?,?,?,?)",
            (entry.round_index, entry.event.mechanism, entry.epsilon_after, entry.delta,
             entry.event.noise_multiplier, json.dumps(entry.to_dict(), sort_keys=True), time.time()),
        )

    def ledger(self) -> list[LedgerEntry]:
        rows = self._q("SELECT event FROM privacy_ledger ORDER BY round")
        return [LedgerEntry.from_dict(json.loads(r[0])) for r in rows]

    def commit_round(self, record: RoundRecord, adapter_blob: bytes, state: dict[str, Any]) -> None:
        name = f"adapters/v{record.adapter_version}.safetensors"
        atomic_write(self.dir / name, adapter_blob)
        sha = hashlib.sha256(adapter_blob).hexdigest()
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "INSERT INTO rounds VALUES(?,?,?,?,?)",
                    (record.round, record.adapter_version, json.dumps(record.contributors),
                     json.dumps(record.metrics, sort_keys=True), record.finished),
                )
                self._db.execute("INSERT OR REPLACE INTO adapters VALUES(?,?,?,?)",
                                 (record.adapter_version, name, sha, len(adapter_blob)))
                for k, v in state.items():
                    self._db.execute("INSERT OR REPLACE INTO state VALUES(?,?)", (k, json.dumps(v, sort_keys=True)))
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError:
                self._db.execute("ROLLBACK")
                raise StateError(f"round {record.round} is already committed") from None
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def rounds(self) -> list[RoundRecord]:
        rows = self._q("SELECT round, adapter_version, contributors, metrics, finished FROM rounds ORDER BY round")
        return [RoundRecord(r[0], r[1], json.loads(r[2]), json.loads(r[3]), r[4]) for r in rows]

    def load_adapter(self, version: int) -> bytes:
        rows = self._q("SELECT file, sha256, size FROM adapters WHERE version=?", (version,))
        if not rows:
            raise StateError(f"adapter version {version} is not recorded in {self.path}")
        file, sha, size = rows[0]
        path = self.dir / file
        try:
            blob = path.read_bytes()
        except OSError:
            raise StateError(f"adapter file {path} is missing; restore the state folder from a backup") from None
        if len(blob) != size or hashlib.sha256(blob).hexdigest() != sha:
            raise StateError(f"adapter file {path} is corrupt (size or sha256 differs from the store)")
        return blob

    def load_state(self, name: str) -> Any | None:
        rows = self._q("SELECT value FROM state WHERE name=?", (name,))
        return json.loads(rows[0][0]) if rows else None

    def close(self) -> None:
        with self._lock:
            self._db.close()
