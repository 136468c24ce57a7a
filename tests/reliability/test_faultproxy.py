"""The test-only TCP fault proxy: forwarding, latency, dropped connections, partitions."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from ffa_lora_tools.harness.faultproxy import FaultProxy, ProxyThread

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]  # servers on loopback


async def _echo_server() -> tuple[asyncio.base_events.Server, int]:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(4096):
                w.write(data)
                await w.drain()
        except ConnectionError:
            pass
        finally:
            w.close()

    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1]


async def _roundtrip(port: int, payload: bytes = b"ping", timeout: float = 3.0) -> tuple[bytes, float]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    w.write(payload)
    await w.drain()
    got = await asyncio.wait_for(r.readexactly(len(payload)), timeout)
    w.close()
    return got, time.monotonic() - t0


@contextlib.asynccontextmanager
async def _proxied_echo() -> AsyncIterator[FaultProxy]:
    """An echo server on loopback behind a started FaultProxy; both stopped on exit."""
    srv, port = await _echo_server()
    p = FaultProxy("127.0.0.1", port)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()
        srv.close()


def test_forwards_and_adds_latency() -> None:
    async def go() -> None:
        async with _proxied_echo() as p:
            got, _ = await _roundtrip(p.port, b"x" * 100_000)
            assert got == b"x" * 100_000
            p.set_latency(0.2)
            got, slow = await _roundtrip(p.port)
            assert got == b"ping" and 0.38 < slow < 2.0, slow  # 0.2 s each way
            p.set_latency(0)
            assert p.faults["latency"] == 1 and p.bytes_forwarded >= 200_000

    asyncio.run(go())


def test_drop_and_partitions() -> None:
    async def go() -> None:
        async with _proxied_echo() as p:
            r, w = await asyncio.open_connection("127.0.0.1", p.port)
            w.write(b"a")
            await w.drain()
            assert await r.readexactly(1) == b"a"
            assert p.drop_all() == 1
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(r.readexactly(1), 2)
            # refuse: nothing listens
            await p.partition("refuse")
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", p.port)
            await p.heal()
            assert (await _roundtrip(p.port))[0] == b"ping"
            # hold: connections are accepted but nothing flows until the heal
            await p.partition("hold")
            r, w = await asyncio.open_connection("127.0.0.1", p.port)
            w.write(b"held")
            await w.drain()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(r.readexactly(4), 0.5)
            await p.heal()
            assert await asyncio.wait_for(r.readexactly(4), 3) == b"held"
            w.close()
            assert p.faults == {"drop": 1, "partition_refuse": 1, "partition_hold": 1}

    asyncio.run(go())


def test_proxy_thread_has_blocking_controls() -> None:
    async def go() -> None:
        srv, port = await _echo_server()
        with ProxyThread("127.0.0.1", port) as p:
            assert (await _roundtrip(p.port))[0] == b"ping"
            await asyncio.get_running_loop().run_in_executor(None, p.partition, "refuse")
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", p.port)
            await asyncio.get_running_loop().run_in_executor(None, p.heal)
            assert (await _roundtrip(p.port))[0] == b"ping"
            assert p.faults["partition_refuse"] == 1
        srv.close()

    asyncio.run(go())
