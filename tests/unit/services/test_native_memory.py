"""glibc heap settings of the edge (services.common.native_memory)."""

from __future__ import annotations

import ctypes
import platform

import pytest

from services.common import native_memory


def _is_glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not _is_glibc(), reason="glibc only")
def test_arena_cap_and_trim_reach_glibc() -> None:
    assert native_memory.limit_arenas(2) is True
    blocks = [ctypes.create_string_buffer(256 * 1024) for _ in range(64)]  # 16 MB in large blocks
    del blocks
    assert isinstance(native_memory.trim(), bool)  # True when memory was released; never raises


def test_without_glibc_both_are_no_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native_memory, "_glibc", lambda: None)
    assert native_memory.limit_arenas(2) is False
    assert native_memory.trim() is False
