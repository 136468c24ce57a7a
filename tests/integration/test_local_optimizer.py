"""Clients continue their local AdamW across rounds when the federation says so: a real
coordinator and edge over mutual TLS, client agents with the REAL local trainer (tiny BERT)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ffa_lora_tools.harness.tiny_model import tiny_bert
from tests.support.federation import InProcessFederation

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # servers on loopback


@pytest.mark.parametrize("keep", [True, False])
def test_clients_continue_their_optimizer_only_when_told(tmp_path: Path, keep: bool) -> None:
    fed = InProcessFederation(
        tmp_path, tiny_bert(tmp_path / "tiny"), edges=1, clients=2,
        rounds={"max_rounds": 2, "min_clients": 2}, labels=["negative", "neutral", "positive"],
        training={"local_epochs": 1.0, "learning_rate": 1e-2, "batch_size": 8, "keep_optimizer_state": keep},
    )
    trainers = {}

    async def scenario() -> None:
        await fed.start_servers()
        for i, cid in enumerate(fed.client_ids):
            trainers[cid] = fed.start_training_client(cid, n=60, seed=i)
        try:
            await fed.wait_finished(timeout=240)
        finally:
            await fed.stop()

    asyncio.run(scenario())
    assert fed.coordinator.committed == 2
    for trainer in trainers.values():
        kept = trainer.optimizer_states["B"]
        # 54 training records (10% validation), batch 8: 7 steps a round. The second round's
        # AdamW continued the first's step count, or started afresh.
        assert {int(s["step"]) for s in kept.state.values()} == ({14} if keep else {7})
        # Either way the rounds continue one pass over the local data: 7 batches each.
        assert (trainer.data_cursor.n, trainer.data_cursor.step) == (54, 14)
