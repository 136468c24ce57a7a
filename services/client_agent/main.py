"""Start a client agent: config -> local data and model -> agent session with its edge."""

from __future__ import annotations

import logging
from collections import Counter

from services.client_agent.agent import AgentResult, ClientAgent
from services.client_agent.trainer import LocalTrainer
from services.common.config import ServiceConfig
from services.common.session import start_metrics, tls_files

log = logging.getLogger("ffa_lora.client")


async def serve(cfg: ServiceConfig) -> AgentResult:
    """Participate in the federation until it finishes."""
    c = cfg.client
    assert c is not None
    tls = tls_files(cfg.tls)
    identity = tls.load().identity
    metrics = start_metrics("client", cfg.metrics)

    def count(counts: Counter[str]) -> None:
        for kind, n in counts.items():
            metrics.deid_entities.labels("client", kind).inc(n)

    trainer = LocalTrainer(c, client_id=identity.id, on_deid_counts=count)
    log.info("client %s: %d training records from %s", identity.id, trainer.num_samples, c.data.path)
    agent = ClientAgent(c, tls, trainer, metrics)
    result = await agent.run()
    log.info("client %s done: %d round(s) trained, %d acknowledged (%s)", identity.id, result.rounds_trained,
             result.updates_acked, result.reason)
    return result
