"""A client that sends a malformed plaintext cannot stop the federation: real coordinator and
edges on loopback with mutual TLS, one client whose first uploads are well-formed ciphertexts of
impossible plaintexts (what an edge cannot check). Each such round fails the range check after
decryption, is discarded and retried under a fresh number; once the client behaves, a round
commits. Today's code ended the federation after three such rounds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from ffa_lora.crypto import CiphertextVector, PackingLayout, PublicKey
from ffa_lora_tools.harness.tiny_model import tiny_bert
from services.client_agent.update import PreparedUpdate
from services.common import domain as d
from tests.support.federation import InProcessFederation, SyntheticTrainer

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # servers on loopback

BAD_ROUNDS = 4


class OutOfRangeTrainer(SyntheticTrainer):
    """Uploads random ciphertexts (valid group elements: every edge check passes) for its first
    ``BAD_ROUNDS`` tasks, honest updates afterwards."""

    bad_left: int = BAD_ROUNDS

    def run_task(self, task: d.RoundTask, public_key: PublicKey) -> PreparedUpdate:
        honest = super().run_task(task, public_key)
        if self.bad_left <= 0:
            return honest
        self.bad_left -= 1
        rng = np.random.default_rng(task.round)
        n2 = int(public_key.nsquare)
        values = [int.from_bytes(rng.bytes(public_key.ciphertext_bytes), "big") % (n2 - 1) + 1
                  for _ in honest.vec.values]
        vec = CiphertextVector(public_key=public_key, layout=PackingLayout.from_bytes(task.secure_sum.layout),
                               num_values=honest.vec.num_values, values=values)
        return PreparedUpdate(round=honest.round, vec=vec, idempotency_key=honest.idempotency_key + ":bad",
                              num_samples=honest.num_samples, rank=honest.rank, quality=honest.quality,
                              base_version=honest.base_version, train_seconds=honest.train_seconds,
                              crypto_seconds=honest.crypto_seconds)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def test_out_of_range_rounds_are_retried_and_the_federation_continues(tmp_path: Path, model_dir: Path) -> None:
    async def scenario() -> InProcessFederation:
        fed = InProcessFederation(tmp_path, model_dir, rounds={"max_rounds": 1, "deadline_s": 30})
        try:
            await fed.start_servers()
            for i, cid in enumerate(fed.client_ids):
                agent = fed.start_client(cid, edge_index=i % 2, seed=i)
                if cid == "client-3":  # on edge-1
                    bad = OutOfRangeTrainer(cid, 100, seed=i)
                    agent.trainer = fed.trainers[cid] = bad
            await fed.wait_finished(timeout=240)
        finally:
            await fed.stop()
        return fed

    fed = asyncio.run(scenario())
    coord = fed.coordinator
    assert coord.committed == 1, coord.finish_reason
    assert coord.finish_reason == "reached max_rounds=1"
    discarded = coord.discards.history
    assert [r.round for r in discarded] == list(range(1, BAD_ROUNDS + 1))
    assert all(r.reason == "range_check" and "edge-1" in r.edges for r in discarded)
    (summary,) = coord.history  # the committed round (the store is closed once the federation ends)
    assert summary.round == BAD_ROUNDS + 1 and sorted(summary.ranks) == sorted(fed.client_ids)
    assert [r["round"] for r in summary.extra["discarded_rounds"]] == list(range(1, BAD_ROUNDS + 1))
    value = coord.metrics.registry.get_sample_value(
        "ffalora_rounds_discarded_total", {"service": "coordinator", "reason": "range_check"})
    assert value == BAD_ROUNDS
