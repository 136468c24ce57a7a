"""Start a client agent: config -> local data and model -> agent session with its edge."""

from __future__ import annotations

import asyncio
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
    if result.finished and trainer.personalization is not None:
        # The site's personalized model: the final global adapter with its own head (kept locally).
        await asyncio.get_running_loop().run_in_executor(None, trainer.personalize_final)
        log.info("client %s: personal head on adapter v%d saved to %s", identity.id, trainer.version,
                 trainer.personal_head_path)
    return result
