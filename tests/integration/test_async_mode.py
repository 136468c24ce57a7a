"""Asynchronous (FedBuff) mode: a client ten times slower than the others never holds a round
back, and its late updates are applied with their staleness weight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ffa_lora.crypto.weights import STALENESS_SCALE, staleness_weight
from ffa_lora_tools.harness.tiny_model import tiny_bert
from services.common import domain as d
from tests.support.federation import InProcessFederation

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # servers on loopback


def _until(ready: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    """Block the calling (training) thread until ``ready()``; fail loudly after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.02)


def test_slow_client_never_blocks_and_is_weighted_by_staleness(tmp_path: Path) -> None:
    model_dir = tiny_bert(tmp_path / "tiny")

    async def scenario() -> None:
        fed = InProcessFederation(
            tmp_path, model_dir, edges=2,
            rounds={"mode": "async", "max_rounds": 8, "min_clients": 2, "buffer_size": 1, "max_staleness": 8,
                    "staleness_exponent": 0.5, "patience": 10, "deadline_s": 60},
        )

        # The schedule is set by the federation's progress, not by sleeps, so it does not depend
        # on how fast this machine is. The slow client joins once round 1 is under way without
        # it (a round planned with it would wait for it until the deadline). Its first update is
        # held until the fast clients have trained round 4, so it arrives stale. The fast
        # clients then wait at round 6 until the edge has taken it, so the federation cannot
        # end before it is applied.
        def fast_progress() -> int:
            return min(max(fed.trainers[c].deltas, default=0) for c in ("client-1", "client-2"))

        def slow_wait(task: d.RoundTask) -> None:
            if not fed.trainers["client-3"].deltas:
                _until(lambda: fast_progress() >= 4, "the fast clients to train round 4")

        def fast_wait(task: d.RoundTask) -> None:
            if task.round >= 6:
                _until(lambda: fed.agents["client-3"].result.updates_acked >= 1, "the slow client's update")

        try:
            await fed.start_servers()
            fed.start_client("client-1", edge_index=0, num_samples=100, seed=1, delay=0.1, wait=fast_wait)
            fed.start_client("client-2", edge_index=1, num_samples=100, seed=2, delay=0.1, wait=fast_wait)
            while fast_progress() < 1:  # round 1 is planned for the fast clients alone
                await asyncio.sleep(0.02)
            fed.start_client("client-3", edge_index=0, num_samples=100, seed=3, delay=1.0, wait=slow_wait)
            await fed.wait_finished(timeout=240)
            rounds = fed.coordinator.store.rounds()
        finally:
            await fed.stop()
        assert len(rounds) == 8
        fast_only = [r for r in rounds if "client-3" not in r.contributors]
        assert len(fast_only) >= 2, "the fast clients must complete rounds without the slow one"
        slow = [r for r in rounds if "client-3" in r.contributors]
        assert slow, "the slow client's updates must be applied eventually"
        # (The edge fixes tau when it counts an update; a buffer carried into the next round
        # keeps that weight, so tau is not recomputed against the later round here.)
        stale_weights = {16 * staleness_weight(tau, 0.5) for tau in range(1, 9)}
        fresh = 16 * STALENESS_SCALE
        slow_weights = [r.metrics["weights"]["client-3"] for r in slow]
        # A slow update trained on an older version is scaled by w * s(tau) < w * s(0) by the
        # edge, homomorphically; one that happens to be current keeps the fresh weight.
        assert set(slow_weights) <= stale_weights | {fresh}, slow_weights
        assert any(w in stale_weights for w in slow_weights), slow_weights
        assert any(w == fresh for r in fast_only for w in r.metrics["weights"].values())

    asyncio.run(scenario())
