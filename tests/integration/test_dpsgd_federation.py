"""Sample-level DP-SGD end to end: a real coordinator and edge over mutual TLS, and client agents
with the REAL local trainer (tiny BERT, Opacus) — the coordinator's plan switches DP-SGD on,
every client trains privately, reports its ε with the encrypted update, keeps its accountant
on disk across rounds, and the coordinator exports the ε per client."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from ffa_lora.privacy.dp_sgd import steps_per_round
from ffa_lora_tools.harness.tiny_model import tiny_bert
from tests.support.federation import InProcessFederation

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # servers on loopback


@pytest.mark.parametrize("probe_rounds", [0, 1])  # adapter_rounds: null, and 1 of 2
def test_dpsgd_clients_report_growing_epsilon(tmp_path: Path, probe_rounds: int) -> None:
    model_dir = tiny_bert(tmp_path / "tiny")
    fed = InProcessFederation(
        tmp_path, model_dir, edges=1, clients=2,
        rounds={"max_rounds": 2, "min_clients": 2},
        labels=["negative", "neutral", "positive"],
        privacy={"mode": "off", "delta": 1e-5,
                 "dpsgd": {"enabled": True, "noise_multiplier": 1.0, "max_grad_norm": 1.0,
                           "optimizer": "sgd", "learning_rate": 0.2,
                           "adapter_rounds": 2 - probe_rounds if probe_rounds else None}},
        training={"local_epochs": 1.0, "learning_rate": 1e-2, "batch_size": 8},
    )

    async def scenario() -> None:
        await fed.start_servers()
        for i, cid in enumerate(fed.client_ids):
            fed.start_training_client(cid, n=60, seed=i)
        try:
            await fed.wait_finished(timeout=240)
        finally:
            await fed.stop()

    asyncio.run(scenario())
    history = fed.coordinator.history
    assert len(history) == 2
    eps = [h.extra["dpsgd_epsilon"] for h in history]
    for cid in fed.client_ids:
        assert 0 < eps[0][cid] < eps[1][cid] < float("inf")  # the accountant carries across rounds
        state = json.loads((tmp_path / cid / "dpsgd_accountant.json").read_text())
        # 54 training records (10% validation), the recipe's expected batch 512 (so every record
        # every step): 3 head epochs = 3 head steps, then 1 epoch = 1 step through the model;
        # a probe round takes the head steps alone
        head = steps_per_round(54, expected_batch_size=512, local_epochs=3.0)
        model = steps_per_round(54, expected_batch_size=512, local_epochs=1.0)
        assert (head, model) == (3, 1)
        assert sum(e["count"] for e in state["events"]) == 2 * (head + model) - probe_rounds * model
    assert history[1].extra["dpsgd_epsilon_max"] == max(eps[1].values())
    gauge = fed.coordinator.metrics.registry.get_sample_value(
        "ffalora_client_dpsgd_epsilon", {"service": "coordinator", "client": "client-1"})
    assert gauge == pytest.approx(eps[1]["client-1"])
