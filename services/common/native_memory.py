"""glibc heap settings for servers whose connections come and go.

Every TLS handshake allocates and frees a few hundred kilobytes on whichever gRPC thread runs
it; with glibc's default of up to 8 malloc arenas per core, that memory fragments across the
arenas and stays resident long after the connections closed. An edge serving check-in clients
(thousands of short sessions) therefore grows with the number of clients although the sessions
open at a time stay few. Capping the arenas and trimming the heap now and then keeps it flat
(the measurement: ``docs/experiments/edge-native-memory.md``).

Both calls are no-ops (returning False) where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # mallopt parameter (glibc malloc.h)


def _glibc() -> Any | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def limit_arenas(n: int) -> bool:
    """Let glibc create at most ``n`` malloc arenas from now on (threads started later share them)."""
    libc = _glibc()
    ok = bool(libc is not None and libc.mallopt(_M_ARENA_MAX, int(n)) == 1)
    log.debug("malloc arenas capped at %d: %s", n, ok)
    return ok


def trim() -> bool:
    """Return the free memory at the top of every glibc heap to the OS."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))
