"""The durable SQLite connection the services' stores share."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def connect_durable(path: Path, schema: str) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode (transactions are explicit), with a write-ahead log and
    ``synchronous=FULL`` (a committed transaction survives a crash or power loss), and apply
    ``schema`` (idempotent ``CREATE ... IF NOT EXISTS`` statements). Shared by threads that
    serialise access with their own lock. Raises :class:`sqlite3.DatabaseError` for a file
    that is not a database; the caller says which state file that is and what to do."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(schema)
    except sqlite3.DatabaseError:
        db.close()
        raise
    return db
