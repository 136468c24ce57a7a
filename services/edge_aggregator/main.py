"""Start an edge aggregator: config -> edge state -> servicer -> server + coordinator link."""

from __future__ import annotations

import asyncio
import logging
import time

from ffalora.v1 import federation_pb2_grpc as pb_grpc

from services.common import native_memory
from services.common.config import ServiceConfig
from services.common.evidence import Signer
from services.common.session import (
    every,
    start_metrics,
    start_server,
    stop_event_on_signals,
    tls_files,
)
from services.edge_aggregator.handlers import EdgeAggregator
from services.edge_aggregator.servicer import (
    EdgeOutboxImpl,
    EdgeServicer,
    upstream_loop,
)

log = logging.getLogger("ffa_lora.edge")

#: after the federation finished, wait at most this long for away check-in clients to be told
FINISH_GRACE_S = 120.0


async def serve(cfg: ServiceConfig, *, ready=None) -> EdgeAggregator:  # type: ignore[no-untyped-def]
    """Run one edge replica until the federation finishes (or SIGTERM)."""
    e = cfg.edge
    assert e is not None
    if e.malloc_arena_max is not None:
        native_memory.limit_arenas(e.malloc_arena_max)  # before the server's threads allocate
    tls = tls_files(cfg.tls)
    loaded = tls.load()
    identity = loaded.identity
    metrics = start_metrics("edge", cfg.metrics)
    outbox = EdgeOutboxImpl(metrics)
    edge = EdgeAggregator(edge_id=identity.id, region=e.region, limits=e.limits, metrics=metrics, outbox=outbox,
                          signer=Signer(loaded), min_per_partial=e.min_per_partial)
    servicer = EdgeServicer(edge, outbox, e, federation=loaded.federation)
    server, port, health_servicer = await start_server(
        listen=e.listen, tls=cfg.tls, limits=e.limits,
        register=lambda s: pb_grpc.add_EdgeServiceServicer_to_server(servicer, s),
        service_names=["ffalora.v1.EdgeService"],
    )
    log.info("edge %s (region %s) listening on port %d", identity.id, e.region, port)
    if ready is not None:
        ready(port, edge)
    stop = stop_event_on_signals()
    tasks = [asyncio.create_task(upstream_loop(edge, outbox, e, tls, stop, federation=loaded.federation)),
             asyncio.create_task(every(0.5, edge.tick, stop, what="deadline check"))]
    if e.malloc_trim_s is not None:  # hand freed heap back to the OS (see services.common.native_memory)
        tasks.append(asyncio.create_task(every(e.malloc_trim_s, native_memory.trim, stop, what="heap trim")))
    try:
        await stop.wait()
        if edge.finished:
            # Check-in clients that are away hear that it finished at their next check-in
            # (away_clients() leaves out those past their check-in window).
            until = time.monotonic() + FINISH_GRACE_S
            while edge.away_clients() and time.monotonic() < until:
                await asyncio.sleep(0.2)
        else:
            # Draining (SIGTERM): clients reconnect elsewhere and resend their kept updates.
            for cid in list(edge.clients):
                outbox.shutdown(cid, "edge draining; reconnect", False)
        log.info("edge %s stopping", identity.id)
        await asyncio.sleep(0.3)
    finally:
        for t in tasks:
            t.cancel()
        await health_servicer.enter_graceful_shutdown()
        await server.stop(grace=1.0)
    return edge
