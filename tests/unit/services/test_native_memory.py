"""glibc heap settings of the edge (services.common.native_memory)."""

from __future__ import annotations

import ctypes
import platform

import psutil
import pytest

from services.common import native_memory


def _is_glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not _is_glibc(), reason="glibc only")
def test_arena_cap_reaches_glibc() -> None:
    assert native_memory.limit_arenas(2) is True


@pytest.mark.skipif(not _is_glibc(), reason="glibc only")
def test_trim_returns_freed_heap_memory_to_the_os() -> None:
    """32 MB of small blocks freed below a block that stays allocated: free() cannot shrink the
    heap (its top is in use), so the memory stays resident until trim() releases it."""
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    proc = psutil.Process()
    native_memory.trim()
    blocks = [libc.malloc(4096) for _ in range(8192)]
    for b in blocks:
        ctypes.memset(b, 1, 4096)  # touch every page: resident
    pin = libc.malloc(4096)
    try:
        for b in blocks:
            libc.free(b)
        before = proc.memory_info().rss
        assert native_memory.trim() is True
        assert proc.memory_info().rss < before - 16 * 2**20
    finally:
        libc.free(pin)


def test_without_glibc_both_are_no_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native_memory, "_glibc", lambda: None)
    assert native_memory.limit_arenas(2) is False
    assert native_memory.trim() is False
