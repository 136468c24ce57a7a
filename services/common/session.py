"""Plumbing shared by the bidirectional-stream servicers: an outgoing queue per session that
other threads may feed, a reader task, rate limiting, field-size limits, back-pressure, and gRPC
server wiring (mTLS, health, message-size limits).

Back-pressure: a session's outgoing queue holds at most ``limits.max_queued_messages``. While
it is more than half full the reader stops taking requests from the peer (gRPC flow control
then holds the peer's sends), so a peer that asks for answers faster than it reads them slows
itself down; a queue that still fills up (the peer stopped reading) ends the session with
``RESOURCE_EXHAUSTED`` instead of growing without bound."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.common.certs import TLSFiles
from services.common.config import LimitsConfig, MetricsConfig, TLSConfig
from services.common.errors import status_of
from services.common.limits import check_message
from services.common.metrics import Metrics, create_metrics, serve_metrics
from services.common.rejections import Rejection
from services.common.tls import server_credentials

log = logging.getLogger(__name__)

_END = object()

#: outgoing messages a session holds when no limits are given
DEFAULT_MAX_QUEUED = LimitsConfig().max_queued_messages


class Session:
    """Outgoing messages of one stream; ``put`` is safe from any thread.

    At most ``max_queued`` messages wait; one more marks the session ``overflowed`` and ends it
    (see the module docstring). ``writable`` is set while the queue is at most half full.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, max_queued: int = DEFAULT_MAX_QUEUED) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.max_queued = max_queued
        self.closed = False
        self.overflowed = False
        self.writable = asyncio.Event()
        self.writable.set()

    def put(self, msg: Any) -> None:
        if self.closed:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self._enqueue(msg)
        else:
            self.loop.call_soon_threadsafe(self._enqueue, msg)

    def _enqueue(self, msg: Any) -> None:
        if self.overflowed:
            return
        if msg is not _END and self.queue.qsize() >= self.max_queued:
            self.overflowed = True
            log.warning("session ended: %d messages queued for a peer that does not read them", self.queue.qsize())
            msg = _END
        self.queue.put_nowait(msg)
        if self.queue.qsize() > self.max_queued // 2:
            self.writable.clear()

    def close(self) -> None:
        self.put(_END)

    async def messages(self) -> AsyncIterator[Any]:
        while True:
            msg = await self.queue.get()
            if self.queue.qsize() <= self.max_queued // 2:
                self.writable.set()
            if msg is _END:
                self.closed = True
                self.writable.set()
                return
            yield msg


class RateLimiter:
    """Token bucket: at most ``rate`` messages per second with a burst of ``2*rate``."""

    def __init__(self, rate: float) -> None:
        self.rate, self.capacity = rate, 2 * rate
        self.tokens, self.last = self.capacity, time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


async def run_session(
    requests: AsyncIterator[Any],
    session: Session,
    handle: Callable[[Any], Awaitable[None]],
    *,
    limits: LimitsConfig,
    context: grpc.aio.ServicerContext,
    metrics: Metrics | None = None,
) -> AsyncIterator[Any]:
    """Read requests in a task (calling ``handle`` for each) while yielding outgoing messages.

    Every request is checked against the field limits (:mod:`services.common.limits`) first.
    A :class:`Rejection` from that check or raised by ``handle`` ends the session with its
    status code and public message (counted in ``metrics`` when given); ``handle`` answers
    refusals that should not end the session in band itself."""
    limiter = RateLimiter(limits.max_messages_per_s)
    failure: list[tuple[grpc.StatusCode, str]] = []

    async def reader() -> None:
        try:
            async for req in requests:
                if not limiter.allow():
                    failure.append((grpc.StatusCode.RESOURCE_EXHAUSTED, "message rate limit exceeded; slow down"))
                    break
                check_message(req)
                await handle(req)
                await session.writable.wait()
        except asyncio.CancelledError:
            raise
        except Rejection as rej:
            log.info("session ended: %s", rej)
            if metrics is not None:
                metrics.reject(rej.reason)
            failure.append((status_of(rej), rej.message))
        except grpc.aio.AioRpcError:
            pass
        except DecodeError:  # bytes that are not a request message: the peer's fault, not a bug
            log.info("session ended: a request message could not be parsed")
            failure.append((grpc.StatusCode.INVALID_ARGUMENT, "request message cannot be parsed"))
        except Exception:  # a bug must not take the server down; end this session only
            log.exception("session handler failed")
            failure.append((grpc.StatusCode.INTERNAL, "internal error"))
        finally:
            session.close()

    task = asyncio.create_task(reader())
    try:
        async for msg in session.messages():
            yield msg
    finally:
        task.cancel()
    if session.overflowed and not failure:
        if metrics is not None:
            metrics.reject("slow_consumer")
        message = (f"more than {session.max_queued} messages waited for this peer to read them; "
                   "read the stream faster")
        failure.append((grpc.StatusCode.RESOURCE_EXHAUSTED, message))
    if failure:
        await context.abort(*failure[0])


def grpc_options(limits: LimitsConfig, *, server: bool = False) -> list[tuple[str, Any]]:
    """Message-size limits and keepalives. Clients ping every 20 s so a dead peer is noticed
    on idle streams; servers accept pings down to every 10 s (gRPC's default of 5 min would
    answer our pings with GOAWAY too_many_pings)."""
    opts: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.max_send_message_length", limits.max_message_bytes),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    if server:
        opts += [("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                 ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000)]
    else:
        opts += [("grpc.keepalive_time_ms", 20_000), ("grpc.keepalive_timeout_ms", 10_000)]
    return opts


def tls_files(cfg: TLSConfig) -> TLSFiles:
    return TLSFiles(ca=cfg.ca, cert=cfg.cert, key=cfg.key)


async def start_server(
    *,
    listen: str,
    tls: TLSConfig,
    limits: LimitsConfig,
    register: Callable[[grpc.aio.Server], None],
    service_names: list[str],
    interceptors: list[Any] | None = None,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """A grpc.aio server on ``listen`` with mTLS, the standard health service and limits."""
    server = grpc.aio.server(options=grpc_options(limits, server=True), interceptors=interceptors or [])
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_secure_port(listen, server_credentials(tls_files(tls)))
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    for name in ["", *service_names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port, health_servicer


def stop_event_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (where the loop can take signal handlers)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signal support
            pass
    return stop


def start_metrics(service: str, cfg: MetricsConfig) -> Metrics:
    """The service's metric families, served over HTTP when a port is configured."""
    metrics = create_metrics(service)
    if cfg.port is not None:
        port = serve_metrics(metrics, host=cfg.host, port=cfg.port)
        log.info("metrics on http://%s:%d/metrics", cfg.host, port)
    return metrics


async def every(period: float, fn: Callable[[], object], stop: asyncio.Event, *, what: str) -> None:
    """Call ``fn`` now and every ``period`` seconds until ``stop`` is set; a failure is logged
    (``"<what> failed"``) and the next call still happens."""
    while not stop.is_set():
        try:
            fn()
        except Exception:
            log.exception("%s failed", what)
        try:
            await asyncio.wait_for(stop.wait(), timeout=period)
        except TimeoutError:
            pass
