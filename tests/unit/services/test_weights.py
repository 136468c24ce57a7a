"""Client weights come from the coordinator's policy (``federation.weights``), never from what a
client says about itself; the reported losses that drive convergence are aggregated by median."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ffa_lora_tools.harness.threshold import LocalThreshold, local_threshold
from ffa_lora_tools.harness.tiny_model import tiny_bert
from services.cloud_coordinator import handlers
from services.cloud_coordinator.adapter_ops import LoraAdapterOps, lora_spec
from services.cloud_coordinator.reports import median_finite
from services.cloud_coordinator.store import MemoryStore
from services.common import domain as d
from services.common.config import WeightsConfig, parse_config
from services.common.metrics import create_metrics
from services.common.weights import WeightPolicy
from tests.unit.services.test_coordinator_rules import Outbox, partial


@pytest.fixture()
def keys(tmp_path: Path, ceremony: Any) -> Any:
    """The threshold key and its in-process holders (for a coordinator of federation 'demo')."""
    local = local_threshold(tmp_path, federation="demo", min_clients=2, ceremony=ceremony)
    yield local
    local.close()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("tiny"))


def coordinator(model_dir: Path, keys: Any, **federation: Any) -> handlers.Coordinator:
    fed_doc = {"model": {"name_or_path": str(model_dir), "rank": 4, "max_length": 16},
               "rounds": {"min_clients": 3, "patience": 2, "tolerance": 1e-3, "max_rounds": 10},
               "secure_sum": {"key_bits": 512}, "test_mode": True, **federation}
    cfg = parse_config({"service": "coordinator", "tls": {"ca": "a", "cert": "b", "key": "c"},
                        "coordinator": {"threshold": {"params_file": "p", "share_file": "s"},
                                        "federation": fed_doc}})
    fed = cfg.coordinator.federation  # type: ignore[union-attr]
    return handlers.Coordinator(fed=fed, store=MemoryStore(), public_key=keys.ceremony.public_key,
                                decryption=keys.decryption,
                                adapter_ops=LoraAdapterOps(lora_spec(fed), labels=fed.labels), outbox=Outbox(),
                                metrics=create_metrics("coordinator"))


def planned_weights(coord: handlers.Coordinator) -> dict[str, int]:
    cur = coord.plan_round()
    return {a.client_id: a.weight for p in cur.plans.values() for a in p.assignments}


def test_a_self_reported_sample_count_of_2_64_minus_1_changes_no_weight(model_dir: Path, keys: Any) -> None:
    honest = coordinator(model_dir, keys)
    honest.edge_roster("edge-1", [d.RosterEntry(c, 100) for c in ("a", "b", "c")])
    liar = coordinator(model_dir, keys)
    liar.edge_roster("edge-1", [d.RosterEntry("a", 2**64 - 1), d.RosterEntry("b", 100), d.RosterEntry("c", 100)])
    assert planned_weights(liar) == planned_weights(honest)
    assert len(set(planned_weights(liar).values())) == 1  # nothing declared: plain averaging


def test_declared_sizes_set_the_weights_whatever_the_clients_report(model_dir: Path, keys: Any) -> None:
    coord = coordinator(model_dir, keys, weights={"sizes": {"a": 1600, "b": 800, "c": 100}})
    coord.edge_roster("edge-1", [d.RosterEntry("a", 1), d.RosterEntry("b", 2**64 - 1), d.RosterEntry("c", 10**9)])
    assert planned_weights(coord) == {"a": 16, "b": 8, "c": 1}


@pytest.mark.parametrize(("config", "clients", "want"), [
    ({}, ["x", "y"], {"x": 16, "y": 16}),
    ({"sizes": {"x": 400, "y": 100}}, ["x", "y", "z"], {"x": 16, "y": 4, "z": 10}),  # z: the median, 250
    ({"sizes": {"x": 400, "y": 100}, "default_size": 50}, ["x", "y", "z"], {"x": 16, "y": 4, "z": 2}),
    ({"sizes": {"x": 10**9, "y": 100}, "max_size": 200}, ["x", "y"], {"x": 16, "y": 8}),  # the cap
    ({"sizes": {"x": 10**6, "y": 1}}, ["x", "y"], {"x": 16, "y": 1}),  # never below 1
    ({"sizes": {"x": 400}}, ["y"], {"y": 16}),  # relative to the round's participants
])
def test_weight_policy(config: dict[str, Any], clients: list[str], want: dict[str, int]) -> None:
    assert WeightPolicy(WeightsConfig(**config), max_weight=16).weights(clients) == want


def test_weight_policy_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="weights.sizes"):
        WeightsConfig(sizes={"x": 0})
    with pytest.raises(ValueError):
        WeightsConfig(sizes={"not an id!": 5})


def run_round(coord: handlers.Coordinator, keys: LocalThreshold, losses: dict[str, float]) -> handlers.RoundSummary:
    cur = coord.plan_round()
    coord.current = cur
    vec, contribs, evidence = partial(coord, cur, sorted(losses), keys)
    contribs = [d.Contribution(c.client_id, c.rank, c.weight, 100, quality=d.Quality(train_loss=losses[c.client_id]))
                for c in contribs]
    coord.receive_partial("edge-1", round=cur.number, vec=vec, contributions=contribs, key=f"k{cur.number}",
                          evidence=evidence)
    return coord.finish_round(cur)


def test_one_client_cannot_end_the_run_through_its_reported_loss(model_dir: Path, keys: Any) -> None:
    """Two honest clients' losses fall by 20 % a round; the third reports 10^4 every round, the
    largest loss the edge lets through. A mean of the reports would barely move (relative change
    below the tolerance: converged after 3 rounds); the median follows the honest clients."""
    coord = coordinator(model_dir, keys)
    coord.edge_roster("edge-1", [d.RosterEntry(c, 100) for c in ("a", "b", "m")])
    for honest in (1.0, 0.8, 0.64):
        summary = run_round(coord, keys, {"a": honest, "b": honest, "m": 1e4})
        assert summary.loss == pytest.approx(honest)
    assert coord.loss_history == pytest.approx([1.0, 0.8, 0.64])
    assert not coord._converged()


def test_median_finite() -> None:
    assert median_finite([1.0, float("nan"), 3.0, float("inf"), 2.0]) == 2.0
    assert median_finite([]) != median_finite([])  # NaN when nothing is finite
