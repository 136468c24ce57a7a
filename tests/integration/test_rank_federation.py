"""Dynamic rank end to end: real coordinator and edges on loopback with mutual TLS, synthetic
clients uploading known updates through the real encryption path (512-bit test-only keys,
tiny BERT).

One federation of three rounds checks (1) heterogeneous ranks aggregate exactly — each rank
column is the weighted mean over the clients whose rank covers it, so the global ΔW is the
per-column weighted mean of the clients' B_i·A; (2) a loss plateau makes the coordinator reduce
the global adapter by truncated SVD, publish it with the new rank and alpha, and switch every
client to the lower rank; (3) a restarted coordinator resumes with the reduced adapter.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load as st_load

from ffa_lora.lora import UpdateLayout, apply_mean_update, initial_adapter_state
from ffa_lora.rank.keys import lora_modules
from ffa_lora_tools.harness.tiny_model import tiny_bert
from services.cloud_coordinator.adapter_ops import LoraAdapterOps, lora_spec
from services.cloud_coordinator.handlers import Coordinator
from services.cloud_coordinator.policies import make_rank_policy
from services.cloud_coordinator.rank import ScheduledRank, report_from_quality
from services.cloud_coordinator.store import SQLiteStore
from services.common import domain as d
from services.common.config import parse_federation
from services.common.metrics import create_metrics
from tests.support.federation import InProcessFederation

pytestmark = pytest.mark.timeout(300)

R_MAX, ALPHA, REDUCED = 4, 8.0, 2
STEP = 2 * 0.5 / (2**16 - 1)  # one 16-bit quantization step of the clip range (clip 0.5)
SAMPLES = {"client-1": 100, "client-2": 200, "client-3": 300}
RANKS = {"client-1": 1, "client-2": 2, "client-3": 4}  # from initial_ranks below
WEIGHTS = {"client-1": 5, "client-2": 11, "client-3": 16}  # 16 * n / n_max, rounded

RANK_OPTIONS: dict[str, Any] = {
    "initial_ranks": [[0, 1], [150, 2], [250, 4]],
    "max_cumulative_fraction": None,
    "budget_fraction": 1.0,
    "promote_from_round": 99,
    # The synthetic loss falls 10% a round: a loose tolerance makes that a plateau, so the
    # commit of the second round reduces the adapter to rank 2 for the third.
    "plateau_tol": 0.5,
    "plateau_patience": 1,
    "min_rounds_before_reduce": 1,
    "reduced_rank": REDUCED,
    "reduce_energy": 0.1,
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def per_column_mean(layout: UpdateLayout, deltas: dict[str, np.ndarray], ranks: dict[str, int],
                    weights: dict[str, int]) -> np.ndarray:
    """Plaintext reference: position p averaged over the clients whose prefix covers p."""
    num = np.zeros(layout.total_len)
    den = np.zeros(layout.total_len)
    for cid, delta in deltas.items():
        assert len(delta) == layout.prefix_len(ranks[cid])
        num[: len(delta)] += weights[cid] * delta
        den[: len(delta)] += weights[cid]
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def stored_state(store: SQLiteStore, version: int) -> dict[str, np.ndarray]:
    return dict(st_load(store.load_adapter(version)))


@pytest.mark.slow  # servers on loopback
def test_heterogeneous_ranks_then_svd_reduction(tmp_path: Path, model_dir: Path) -> None:
    async def scenario() -> InProcessFederation:
        fed = InProcessFederation(tmp_path, model_dir, rounds={"max_rounds": 3, "patience": 10},
                                  rank={"scheduler": "dynamic", "options": RANK_OPTIONS},
                                  weights={"sizes": SAMPLES})  # sizes (ranks, weights) the operators declared
        try:
            await fed.start_servers()
            for i, cid in enumerate(fed.client_ids):
                fed.start_client(cid, edge_index=i % 2, num_samples=SAMPLES[cid], seed=i)
            await fed.wait_finished()
        finally:
            await fed.stop()
        return fed

    fed = asyncio.run(scenario())
    coord = fed.coordinator
    assert isinstance(coord.rank_policy, ScheduledRank)
    state_dir = Path(coord.store.dir)
    store = SQLiteStore(state_dir)  # the coordinator closed its own when the federation finished
    try:
        check_federation(fed, coord, store, tmp_path)
    finally:
        store.close()


def check_federation(fed: InProcessFederation, coord: Coordinator, store: SQLiteStore, tmp_path: Path) -> None:
    records = store.rounds()
    assert [r.round for r in records] == [1, 2, 3]
    m1, m2, m3 = (r.metrics for r in records)

    # -- (1) heterogeneous ranks aggregate per column, exactly -----------------------------
    assert m1["ranks"] == RANKS and m2["ranks"] == RANKS
    spec4 = lora_spec(coord.fed)
    assert (spec4.r_max, spec4.alpha) == (R_MAX, ALPHA)
    s0 = initial_adapter_state(spec4)
    layout4 = UpdateLayout.build(s0, phase="B")
    deltas1 = {cid: fed.trainers[cid].deltas[1] for cid in fed.client_ids}
    mean1 = per_column_mean(layout4, deltas1, RANKS, WEIGHTS)
    want1 = apply_mean_update(s0, mean1, layout4)
    v1 = stored_state(store, 1)
    for k, v in want1.items():
        np.testing.assert_allclose(v1[k], v, atol=STEP, rtol=0, err_msg=k)
    # ... so the global ΔW is the per-column weighted mean of the clients' B_i·A (A shared).
    scaling = ALPHA / R_MAX
    for mod in lora_modules(s0):
        a = s0[mod.a_key].astype(np.float64)
        client_b = {cid: layout4.unflatten(layout4.pad(deltas1[cid]))[mod.b_key].astype(np.float64)
                    for cid in fed.client_ids}
        want_dw = np.zeros((client_b["client-1"].shape[0], a.shape[1]))
        for j in range(R_MAX):
            have = [cid for cid in fed.client_ids if RANKS[cid] > j]
            w = sum(WEIGHTS[c] for c in have)
            want_dw += sum(WEIGHTS[c] * np.outer(client_b[c][:, j], a[j]) for c in have) / w
        got_dw = (v1[mod.b_key].astype(np.float64) - s0[mod.b_key]) @ a
        np.testing.assert_allclose(scaling * got_dw, scaling * want_dw, atol=4 * STEP * scaling, rtol=0)

    # -- (2) the plateau reduces the adapter by truncated SVD -------------------------------
    assert m1["r_max"] == R_MAX and "rank_reduction" not in m1
    red = m2["rank_reduction"]
    assert (red["old_rank"], red["new_rank"]) == (R_MAX, REDUCED)
    assert red["lora_alpha"] == pytest.approx(ALPHA * REDUCED / R_MAX)  # scaling alpha/r kept
    deltas2 = {cid: fed.trainers[cid].deltas[2] for cid in fed.client_ids}
    pre = apply_mean_update(v1, per_column_mean(layout4, deltas2, RANKS, WEIGHTS), layout4)
    v2 = stored_state(store, 2)
    for mod in lora_modules(pre):
        assert v2[mod.a_key].shape == (REDUCED, pre[mod.a_key].shape[1])
        assert v2[mod.b_key].shape == (pre[mod.b_key].shape[0], REDUCED)
        # s'·B'·A' is the best rank-2 approximation of the unreduced s·B·A (Eckart–Young).
        dw = scaling * pre[mod.b_key].astype(np.float64) @ pre[mod.a_key].astype(np.float64)
        u, sig, vt = np.linalg.svd(dw)
        best = (u[:, :REDUCED] * sig[:REDUCED]) @ vt[:REDUCED]
        got = scaling * v2[mod.b_key].astype(np.float64) @ v2[mod.a_key].astype(np.float64)
        np.testing.assert_allclose(got, best, atol=1e-3 * float(np.abs(dw).max()) + 1e-6, rtol=0)
        np.testing.assert_allclose(v2[mod.a_key] @ v2[mod.a_key].T, np.eye(REDUCED), atol=1e-5)  # A' orthonormal
    assert m2["r_max"] == REDUCED and m2["adapter_values"] < m1["adapter_values"]

    # Every client trained the third round at the reduced rank, from the reduced adapter.
    assert m3["ranks"] == dict.fromkeys(fed.client_ids, REDUCED) and m3["r_max"] == REDUCED
    for t in fed.trainers.values():
        assert t.spec is not None and (t.spec.r_max, t.spec.alpha) == (REDUCED, ALPHA * REDUCED / R_MAX)
        assert t.state is not None and all(t.state[m.a_key].shape[0] == REDUCED for m in lora_modules(t.state))
    spec2 = coord.ops.spec
    assert (spec2.r_max, spec2.alpha) == (REDUCED, ALPHA * REDUCED / R_MAX)
    layout2 = UpdateLayout.build(v2, phase="B")
    deltas3 = {cid: fed.trainers[cid].deltas[3] for cid in fed.client_ids}
    want3 = apply_mean_update(v2, per_column_mean(layout2, deltas3, dict.fromkeys(deltas3, REDUCED), WEIGHTS),
                              layout2)
    for k, v in want3.items():
        np.testing.assert_allclose(coord.state[k], v, atol=STEP, rtol=0, err_msg=k)

    # Uploads: per round the clients' prefixes; the running total; the exported adapter's rank.
    assert m1["values_uploaded"] == sum(layout4.prefix_len(r) for r in RANKS.values())
    assert m3["values_uploaded"] == 3 * layout2.prefix_len(REDUCED)
    assert m3["values_uploaded_total"] == m1["values_uploaded"] + m2["values_uploaded"] + m3["values_uploaded"]
    assert m3["adapter_values"] == sum(v.size for v in coord.state.values())
    exported = json.loads((Path(coord.export_dir) / "adapter_config.json").read_text())
    assert exported["r"] == REDUCED and exported["lora_alpha"] == pytest.approx(ALPHA * REDUCED / R_MAX)

    # -- (3) a restarted coordinator resumes with the reduced adapter -----------------------
    cfg = coord.fed
    ops = LoraAdapterOps(lora_spec(cfg), labels=cfg.labels)
    again = Coordinator(fed=cfg, store=store, public_key=coord.public_key, decryption=coord.decryption, adapter_ops=ops,
                        outbox=None, metrics=create_metrics("coordinator"),  # type: ignore[arg-type]
                        rank_policy=make_rank_policy(cfg, ops))
    assert again.ops.spec == replace(spec4, r_max=REDUCED, alpha=ALPHA * REDUCED / R_MAX)
    for k, v in coord.state.items():
        np.testing.assert_array_equal(again.state[k], v)
    roster = {cid: d.RosterEntry(cid, SAMPLES[cid]) for cid in fed.client_ids}
    assert again.rank_policy.ranks(3, roster) == dict.fromkeys(fed.client_ids, REDUCED)


def test_policy_promotes_from_reports_and_a_reduction_probe_changes_nothing(model_dir: Path) -> None:
    """ScheduledRank on its own: ranks from sample counts, a promotion from the contributors'
    quality scalars, and a commit-time probe without a plateau leaves the scheduler as it was."""
    cfg = parse_federation({"model": {"name_or_path": str(model_dir), "rank": R_MAX, "max_length": 16},
                            "rank": {"scheduler": "dynamic", "options": {
                                "initial_ranks": [[0, 1], [150, 2]], "max_cumulative_fraction": None,
                                "budget_fraction": 1.0, "reduced_rank": 1}}})
    ops = LoraAdapterOps(lora_spec(cfg), labels=cfg.labels)
    policy = make_rank_policy(cfg, ops)
    assert isinstance(policy, ScheduledRank)
    roster = {cid: d.RosterEntry(cid, n) for cid, n in SAMPLES.items()}
    assert policy.ranks(0, roster) == {"client-1": 1, "client-2": 2, "client-3": 2}
    quality = {"client-1": d.Quality(grad_snr=0.5, val_loss_before=1.0, val_loss_after=0.9, train_loss=1.0),
               "client-2": d.Quality(grad_snr=3.0, val_loss_before=1.0, val_loss_after=0.8, train_loss=1.0),
               "client-3": d.Quality(grad_snr=2.0, val_loss_before=1.0, val_loss_after=1.1, train_loss=1.0)}
    policy.observe(0, [d.Contribution(cid, 1, 1, SAMPLES[cid], quality[cid]) for cid in SAMPLES], 1.0)
    before = json.dumps(policy.state_dict(), sort_keys=True)
    assert policy.maybe_reduce(1, ops.initial_state()) is None  # one loss value: no plateau
    assert json.dumps(policy.state_dict(), sort_keys=True) == before
    # Best SNR at or above the median with an improving validation loss: client-2 (client-3's
    # validation loss got worse, client-1's SNR is below the median).
    assert policy.ranks(1, roster) == {"client-1": 1, "client-2": R_MAX, "client-3": 2}
    assert policy.last_decision is not None and "promoted" in policy.last_decision.reasons["client-2"]
    assert report_from_quality(10, d.Quality()).val_loss_improvement is None  # no validation split
    assert report_from_quality(10, d.Quality(grad_snr=float("inf"))).grad_snr is None
    # The state survives a JSON round trip into a fresh policy.
    again = ScheduledRank(cfg, ops)
    again.load_state_dict(json.loads(json.dumps(policy.state_dict())))
    assert again.state_dict() == policy.state_dict()
