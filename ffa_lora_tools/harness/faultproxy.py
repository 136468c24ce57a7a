"""A TCP fault proxy on loopback for fault tests and benchmarks (never in a deployment):
forwards bytes between a listen port and a target and injects network faults at run time.

Put it between two tiers by pointing the caller at the proxy instead of the server (a client's
``edges`` list, an edge's ``coordinator_address``). TLS passes through untouched: the servers'
certificates carry ``127.0.0.1`` and ``localhost`` SANs, so connecting to ``127.0.0.1:<proxy
port>`` verifies exactly as connecting to the server itself (no server-name override needed).

Faults (each counted in :attr:`FaultProxy.faults` by kind):

- ``set_latency(s)``   every chunk of bytes is delivered ``s`` seconds after it arrived, in both
  directions, order preserved (throughput is not reduced: the pipe stays full);
- ``drop_all()``       reset every open connection (both sides see a broken connection);
- ``partition("refuse")`` stop listening (new connections are refused) and reset the open ones;
- ``partition("hold")``   keep accepting, but forward nothing in either direction (open and new
  connections stall, as behind a black-holing firewall);
- ``heal()``           end a partition.

:class:`FaultProxy` runs in the caller's event loop; :class:`ProxyThread` runs one in a thread of
its own with blocking methods, for tests that drive processes or several event loops.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, Self, TypeVar

T = TypeVar("T")
PartitionMode = Literal["refuse", "hold"]
_READ = 64 * 1024


@dataclass(eq=False)  # hashed by identity: kept in a set
class _Conn:
    client_writer: asyncio.StreamWriter
    server_writer: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for w in (self.client_writer, self.server_writer):
            if w is not None and not w.is_closing():
                w.transport.abort()
        for t in self.tasks:
            t.cancel()


class FaultProxy:
    """A TCP proxy ``127.0.0.1:listen_port -> target_host:target_port`` with injectable faults."""

    def __init__(self, target_host: str, target_port: int, *, listen_port: int = 0, name: str = "proxy") -> None:
        self.target_host, self.target_port = target_host, target_port
        self.name = name
        self.port = listen_port
        self.latency = 0.0
        self.partitioned: PartitionMode | None = None
        self.faults: Counter[str] = Counter()
        self.connections_total = 0
        self.bytes_forwarded = 0
        self._conns: set[_Conn] = set()
        self._server: asyncio.base_events.Server | None = None
        self._open = asyncio.Event()
        self._open.set()

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``: what the caller connects to instead of the target."""
        return f"127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    async def start(self) -> int:
        """Start listening; returns the port (chosen by the OS when ``listen_port`` was 0)."""
        self._open = asyncio.Event()
        if self.partitioned is None:
            self._open.set()
        await self._listen()
        return self.port

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and reset every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._abort_all()
        self._open.set()  # wake connections held by a partition so that they end

    # -- faults --------------------------------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        """Delay every forwarded chunk by ``seconds`` (0 removes the delay)."""
        if seconds < 0:
            raise ValueError("latency must be >= 0 seconds")
        self.latency = float(seconds)
        if seconds > 0:
            self.faults["latency"] += 1

    def drop_all(self) -> int:
        """Reset every open connection; returns how many were dropped."""
        n = self._abort_all()
        self.faults["drop"] += 1
        return n

    async def partition(self, mode: PartitionMode = "refuse") -> None:
        """Cut the link: ``refuse`` new connections (and reset open ones), or ``hold`` all traffic."""
        if mode not in ("refuse", "hold"):
            raise ValueError("partition mode must be 'refuse' or 'hold'")
        self.partitioned = mode
        self.faults[f"partition_{mode}"] += 1
        self._open.clear()
        if mode == "refuse":
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
                self._server = None
            self._abort_all()

    async def heal(self) -> None:
        """End a partition: listen again (same port) and let held bytes flow."""
        mode, self.partitioned = self.partitioned, None
        if mode == "refuse" and self._server is None:
            await self._listen()
        self._open.set()

    # -- plumbing ------------------------------------------------------------------------------

    def _abort_all(self) -> int:
        conns = list(self._conns)
        for c in conns:
            c.abort()
        self._conns.clear()
        return len(conns)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.partitioned == "refuse":
            writer.transport.abort()
            return
        self.connections_total += 1
        conn = _Conn(writer)
        self._conns.add(conn)
        try:
            await self._open.wait()  # hold: the connection stays accepted but goes nowhere
            if conn not in self._conns:
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
            except OSError:
                writer.transport.abort()
                return
            conn.server_writer = up_writer
            if conn not in self._conns:  # dropped while connecting
                conn.abort()
                return
            conn.tasks = [asyncio.create_task(self._pipe(reader, up_writer, conn)),
                          asyncio.create_task(self._pipe(up_reader, writer, conn))]
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        finally:
            self._conns.discard(conn)
            conn.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn) -> None:
        """Copy one direction; a sender task applies latency without stalling the reader."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def sender() -> None:
            while True:
                item = await queue.get()
                if item is None:
                    break
                due, data = item
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._open.wait()
                writer.write(data)
                await writer.drain()
                self.bytes_forwarded += len(data)
            if writer.can_write_eof():
                writer.write_eof()

        send = asyncio.create_task(sender())
        try:
            while True:
                data = await reader.read(_READ)
                if not data:
                    break
                queue.put_nowait((loop.time() + self.latency, data))
            queue.put_nowait(None)
            await send
        except (ConnectionError, OSError):
            conn.abort()
        finally:
            send.cancel()


class ProxyThread:
    """A :class:`FaultProxy` in its own thread and event loop, with blocking controls.

    Use as a context manager: ``with ProxyThread("127.0.0.1", port) as p: ... p.address``.
    """

    def __init__(self, target_host: str, target_port: int, *, listen_port: int = 0, name: str = "proxy") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"faultproxy-{name}", daemon=True)
        self.proxy = FaultProxy(target_host, target_port, listen_port=listen_port, name=name)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _sync(self, fn: Any, *args: Any) -> Any:
        async def run() -> Any:
            return fn(*args)
        return self._call(run())

    def start(self) -> int:
        self._thread.start()
        return self._call(self.proxy.start())

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self.proxy.stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        return self.proxy.address

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def faults(self) -> Counter[str]:
        return Counter(self.proxy.faults)

    def set_latency(self, seconds: float) -> None:
        self._sync(self.proxy.set_latency, seconds)

    def drop_all(self) -> int:
        return int(self._sync(self.proxy.drop_all))

    def partition(self, mode: PartitionMode = "refuse") -> None:
        self._call(self.proxy.partition(mode))

    def heal(self) -> None:
        self._call(self.proxy.heal())

    @property
    def open_connections(self) -> int:
        return int(self._sync(lambda: self.proxy.open_connections))
