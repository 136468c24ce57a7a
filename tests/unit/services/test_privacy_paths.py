"""Paths where the noise could be smaller than what the ledger charges: each test measures the
noise (or the norm) a released sum actually carries and compares it with the charge.

- distributed DP after dropouts: the survivors' shares carry at least the charged noise;
- the charge is durable before any decryption, and a round aborted after it stays charged;
- asynchronous rounds: the applied update has the right scale and the noise covers the
  largest weight an edge can apply (staleness factor included);
- quantization after clipping: the noise covers the norm of the update after rounding.

Test-only 512-bit keys and a tiny random BERT keep them fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ffa_lora.crypto import PackingLayout
from ffa_lora.crypto.quantize import Quantizer
from ffa_lora.crypto.threshold import Combiner, decryption_share
from ffa_lora.crypto.weights import STALENESS_SCALE, staleness_weight
from ffa_lora.errors import BudgetExhaustedError, ConfigError
from ffa_lora_tools.harness.threshold import LocalThreshold, local_threshold
from ffa_lora_tools.harness.tiny_model import tiny_bert
from services.client_agent.update import encrypt_update
from services.cloud_coordinator import handlers
from services.cloud_coordinator.adapter_ops import LoraAdapterOps, lora_spec
from services.cloud_coordinator.policies import make_privacy_engine
from services.cloud_coordinator.store import CoordinatorStore, MemoryStore, SQLiteStore
from services.common import domain as d
from services.common.config import FederationConfig, parse_config
from services.common.metrics import create_metrics
from tests.unit.services.test_coordinator_rules import Outbox


@pytest.fixture()
def keys(ceremony: Any, tmp_path: Path) -> Any:
    """The threshold key with its key holders in this process (fresh records per test)."""
    local = local_threshold(tmp_path / "pki", federation="demo", min_clients=1, max_weight=64,
                            ceremony=ceremony)
    yield local
    local.close()


#: the key holders of each coordinator made below (upload() signs as its clients and edge)
_KEYS: dict[int, LocalThreshold] = {}


def decrypt_codes(keys: LocalThreshold, vec: Any) -> np.ndarray:
    """A vector's slot sums from two shares (a test reading one client's update; no service
    can do this)."""
    shares = [decryption_share(s, vec, context=b"test") for s in keys.ceremony.shares[:2]]
    return Combiner(keys.ceremony.params, workers=0).decrypt_code_sums(vec, shares, context=b"test")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("tiny"))


def federation(
    model_dir: Path,
    *,
    privacy: dict[str, Any],
    rounds: dict[str, Any],
    secure_sum: dict[str, Any] | None = None,
) -> FederationConfig:
    cfg = parse_config(
        {
            "service": "coordinator",
            "tls": {"ca": "a", "cert": "b", "key": "c"},
            "coordinator": {
                "threshold": {"params_file": "p", "share_file": "s"},
                "federation": {
                    "model": {"name_or_path": str(model_dir), "rank": 4, "max_length": 16},
                    "rounds": {"max_rounds": 5, **rounds},
                    "secure_sum": {"key_bits": 512, **(secure_sum or {})},
                    "test_mode": True,
                    "privacy": privacy,
                }
            },
        }
    )
    assert cfg.coordinator is not None
    return cfg.coordinator.federation


def coordinator(
    fed: FederationConfig, keys: Any, store: CoordinatorStore | None = None
) -> handlers.Coordinator:
    # Each coordinator gets key holders of its own (their records start empty, like its store).
    keys = local_threshold(keys.certs.parent, federation="demo", min_clients=1, max_weight=64,
                           ceremony=keys.ceremony)
    coord = handlers.Coordinator(
        fed=fed,
        store=store or MemoryStore(),
        public_key=keys.ceremony.public_key,
        decryption=keys.decryption,
        adapter_ops=LoraAdapterOps(lora_spec(fed), labels=fed.labels),
        outbox=Outbox(),
        metrics=create_metrics("coordinator"),
        privacy=make_privacy_engine(fed),
    )
    _KEYS[id(coord)] = keys
    return coord


def start_round(coord: handlers.Coordinator, clients: list[str]) -> Any:
    coord.edge_roster("edge-1", [d.RosterEntry(c, 100) for c in clients])
    cur = coord.plan_round()
    coord.current = cur
    return cur


def upload(
    coord: handlers.Coordinator,
    cur: Any,
    deltas: dict[str, np.ndarray],
    *,
    staleness: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Each client's real outgoing path (clip, noise share, quantize, encrypt); the edge
    multiplies by the weight (async: times the staleness factor) and forwards one partial.
    Returns each client's encrypted vector and task."""
    plan = cur.plans["edge-1"]
    layout = PackingLayout.from_bytes(plan.secure_sum.layout)
    contribs, sent, updates, listed, bases = [], {}, {}, {}, {}
    for cid, delta in deltas.items():
        a = plan.assignment_for(cid)
        assert a is not None
        task = plan.task_for(a)
        vec, _ = encrypt_update(delta[: a.num_values], task, coord.public_key, layout)
        factor = (
            staleness_weight((staleness or {}).get(cid, 0), plan.staleness_exponent)
            if plan.mode == "async"
            else 1
        )
        updates[cid], listed[cid] = (vec, a), a.weight * factor
        bases[cid] = plan.adapter_version - (staleness or {}).get(cid, 0)
        contribs.append(d.Contribution(cid, a.rank, a.weight * factor, 100, base_version=bases[cid]))
        sent[cid] = (vec, task)
    total, evidence = _KEYS[id(coord)].sign_partial(
        "edge-1", updates, round=cur.number, phase=cur.phase, adapter_version=plan.adapter_version,
        listed=listed, base_versions=bases)
    coord.receive_partial(
        "edge-1", round=cur.number, vec=total, contributions=contribs, key=f"k{cur.number}",
        evidence=evidence,
    )
    return sent


def capture_mean(coord: handlers.Coordinator, monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """The mean update the coordinator applies, each round."""
    seen: list[np.ndarray] = []
    apply = coord.ops.apply_mean

    def spy(state: Any, mean: np.ndarray, phase: str, server_lr: float) -> Any:
        seen.append(np.asarray(mean, dtype=np.float64).copy())
        return apply(state, mean, phase, server_lr)

    monkeypatch.setattr(coord.ops, "apply_mean", spy)
    return seen


def planned_weight(cur: Any) -> float:
    """The planned participants' total weight (one rank for everybody: the same per position)."""
    return float(sum(a.weight for p in cur.plans.values() for a in p.assignments))


def max_weight(cur: Any) -> int:
    return max(a.weight for p in cur.plans.values() for a in p.assignments)


# -- distributed DP after dropouts -----------------------------------------------------------------


def test_distributed_noise_after_dropouts_is_at_least_what_is_charged(
    model_dir: Path, keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten planned clients, two arrive (min_clients = 2): the decrypted sum must still carry the
    noise the ledger charges for, not sqrt(2/10) of it."""
    fed = federation(
        model_dir,
        rounds={"min_clients": 2},
        privacy={
            "mode": "distributed",
            "mechanism": "gaussian",
            "epsilon": 8.0,
            "schedule": "constant",
            "norm_clip": 1.0,
        },
        secure_sum={"bits": 16},
    )
    coord = coordinator(fed, keys)
    means = capture_mean(coord, monkeypatch)
    clients = [f"c{i}" for i in range(10)]
    cur = start_round(coord, clients)
    zeros = np.zeros(cur.num_values)
    upload(coord, cur, {"c0": zeros, "c1": zeros})
    coord.finish_round(cur)
    charged = coord.store.ledger()[-1].event.noise_multiplier
    noise_on_sum = float(np.std(means[0] * planned_weight(cur)))
    # Sensitivity of the weighted sum is at least w_max · norm_clip.
    floor = charged * max_weight(cur) * fed.privacy.norm_clip
    assert noise_on_sum >= 0.9 * floor, (noise_on_sum, floor)


def test_distributed_full_round_is_charged_for_the_noise_it_carries(
    model_dir: Path, keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every planned client arrives: the shares sized for a quorum of min_clients carry more
    noise than planned, and the charge is for that (never for less than what was added)."""
    fed = federation(
        model_dir,
        rounds={"min_clients": 2},
        privacy={
            "mode": "distributed",
            "mechanism": "gaussian",
            "epsilon": 8.0,
            "schedule": "constant",
            "norm_clip": 1.0,
        },
        secure_sum={"bits": 16},
    )
    coord = coordinator(fed, keys)
    means = capture_mean(coord, monkeypatch)
    clients = [f"c{i}" for i in range(4)]
    cur = start_round(coord, clients)
    zeros = np.zeros(cur.num_values)
    upload(coord, cur, dict.fromkeys(clients, zeros))
    coord.finish_round(cur)
    charged = coord.store.ledger()[-1].event.noise_multiplier
    planned = coord.privacy.plan.noise_multiplier(0)  # type: ignore[union-attr]
    assert charged >= planned
    noise_on_sum = float(np.std(means[0] * planned_weight(cur)))
    assert noise_on_sum >= 0.9 * charged * max_weight(cur) * fed.privacy.norm_clip


# -- the charge is durable before decryption -------------------------------------------------------


@pytest.mark.parametrize("mode", ["central", "distributed"])
def test_charge_is_durable_before_any_decryption(
    model_dir: Path, keys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    fed = federation(
        model_dir,
        rounds={"min_clients": 2},
        privacy={"mode": mode, "mechanism": "gaussian", "epsilon": 8.0, "norm_clip": 1.0},
        secure_sum={"bits": 16},
    )
    coord = coordinator(fed, keys, SQLiteStore(tmp_path / "state"))
    cur = start_round(coord, ["a", "b"])
    upload(coord, cur, {"a": np.zeros(cur.num_values), "b": np.zeros(cur.num_values)})
    rows_at_decryption: list[int] = []
    decrypt = coord._decrypt

    def spy(c: Any) -> np.ndarray:
        rows_at_decryption.append(
            len(SQLiteStore(tmp_path / "state").ledger())
        )  # what a crash would keep
        return decrypt(c)

    monkeypatch.setattr(coord, "_decrypt", spy)
    coord.finish_round(cur)
    assert rows_at_decryption == [1]


class Abort(Exception):
    pass


def test_round_aborted_after_decryption_stays_charged(
    model_dir: Path, keys: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A noised sum was decrypted, then the round aborted: its charge stays, and the retry of the
    same round is charged again (the coordinator has seen two noised sums)."""
    fed = federation(
        model_dir,
        rounds={"min_clients": 2},
        privacy={"mode": "distributed", "mechanism": "gaussian", "epsilon": 8.0, "norm_clip": 1.0},
        secure_sum={"bits": 16},
    )
    state = tmp_path / "state"
    coord = coordinator(fed, keys, SQLiteStore(state))
    cur = start_round(coord, ["a", "b"])
    upload(coord, cur, {"a": np.zeros(cur.num_values), "b": np.zeros(cur.num_values)})

    def fail(*a: Any, **k: Any) -> Any:
        raise Abort()

    monkeypatch.setattr(coord, "_apply_and_evaluate", fail)
    with pytest.raises(Abort):
        coord.finish_round(cur)
    monkeypatch.undo()
    eps_aborted = coord.privacy.epsilon_spent()  # type: ignore[union-attr]
    assert eps_aborted > 0 and len(coord.store.ledger()) == 1 and coord.committed == 0
    coord.store.close()

    restarted = coordinator(fed, keys, SQLiteStore(state))  # the charge survives a restart
    assert restarted.privacy is not None
    assert restarted.privacy.epsilon_spent() == pytest.approx(eps_aborted)
    cur = start_round(restarted, ["a", "b"])
    assert cur.index == 0  # the same round, retried
    upload(restarted, cur, {"a": np.zeros(cur.num_values), "b": np.zeros(cur.num_values)})
    restarted.finish_round(cur)
    assert len(restarted.store.ledger()) == 2 and restarted.committed == 1
    assert restarted.privacy.epsilon_spent() > eps_aborted  # type: ignore[union-attr]
    restarted.store.close()


# -- asynchronous rounds with central noise --------------------------------------------------------


def async_central(model_dir: Path) -> FederationConfig:
    return federation(
        model_dir,
        rounds={"mode": "async", "min_clients": 2, "buffer_size": 2},
        privacy={
            "mode": "central",
            "mechanism": "gaussian",
            "epsilon": 8.0,
            "schedule": "constant",
            "norm_clip": 0.5,
        },
    )


def test_async_update_is_applied_at_its_scale_with_noise_for_its_weight(
    model_dir: Path, keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two fresh updates (the edge multiplies them by weight × STALENESS_SCALE): the applied mean
    is their mean, not STALENESS_SCALE times it, and the noise on it, in units of what one
    client can move it by, is the multiplier the ledger charges."""
    fed = async_central(model_dir)
    # Without noise: the scale of the applied update.
    coord = coordinator(fed, keys)
    means = capture_mean(coord, monkeypatch)
    calls: list[float] = []

    def no_noise(
        vector: np.ndarray, *, noise_multiplier: float, sensitivity: float, rng: Any = None
    ) -> np.ndarray:
        calls.append(sensitivity)
        return np.asarray(vector, dtype=np.float64)

    monkeypatch.setattr(coord.privacy.mechanism, "add_noise", no_noise)  # type: ignore[union-attr]
    cur = start_round(coord, ["a", "b"])
    u = np.full(cur.num_values, 0.2 / np.sqrt(cur.num_values))  # norm 0.2, inside the clip
    upload(coord, cur, {"a": u, "b": u})
    coord.finish_round(cur)
    step = Quantizer(clip=cur.plans["edge-1"].secure_sum.clip, bits=8).step
    np.testing.assert_allclose(means[0], u, atol=2 * step)
    assert calls[0] >= STALENESS_SCALE * max_weight(cur) * fed.privacy.norm_clip
    scale = float(np.mean(means[0]) / np.mean(u))
    monkeypatch.undo()

    # With noise, zero updates: the noise on the applied mean.
    coord = coordinator(fed, keys)
    means = capture_mean(coord, monkeypatch)
    cur = start_round(coord, ["a", "b"])
    zeros = np.zeros(cur.num_values)
    upload(coord, cur, {"a": zeros, "b": zeros})
    coord.finish_round(cur)
    charged = coord.store.ledger()[-1].event.noise_multiplier
    # One of the two fresh clients moves the applied mean by at most scale · norm_clip / 2.
    sensitivity_of_mean = scale * fed.privacy.norm_clip / 2
    ratio = float(np.std(means[0])) / sensitivity_of_mean
    assert ratio >= 0.9 * charged, (ratio, charged)


# -- quantization after clipping -------------------------------------------------------------------


def test_stochastic_rounding_after_clipping_raises_the_norm() -> None:
    """What the quantizer does on its own (why the sensitivity must cover it): an update clipped
    to norm 0.5 has a larger norm after 8-bit stochastic rounding over ~38k coordinates."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=38_000)
    x *= 0.5 / np.linalg.norm(x)
    q = Quantizer(clip=0.5, bits=8)
    after = np.linalg.norm(q.dequantize(q.quantize(x, rng=rng)).astype(np.float64))
    assert 0.05 < after - 0.5 <= np.sqrt(x.size) * q.step


def test_noise_covers_the_norm_after_quantization(
    model_dir: Path, keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each client's update as it enters the sum (dequantized) stays within the sensitivity the
    coordinator calibrates its noise to."""
    fed = federation(
        model_dir,
        rounds={"min_clients": 2},
        privacy={"mode": "central", "mechanism": "gaussian", "epsilon": 8.0, "norm_clip": 0.5},
    )
    coord = coordinator(fed, keys)
    calls: list[float] = []
    add_noise = coord.privacy.mechanism.add_noise  # type: ignore[union-attr]

    def spy(
        vector: np.ndarray, *, noise_multiplier: float, sensitivity: float, rng: Any = None
    ) -> np.ndarray:
        calls.append(sensitivity)
        return add_noise(vector, noise_multiplier=noise_multiplier, sensitivity=sensitivity)

    monkeypatch.setattr(coord.privacy.mechanism, "add_noise", spy)  # type: ignore[union-attr]
    cur = start_round(coord, ["a", "b"])
    spike = np.zeros(cur.num_values)
    spike[0] = 10.0  # clipped to norm 0.5; every other coordinate is 0 before rounding
    sent = upload(coord, cur, {"a": spike, "b": spike})
    coord.finish_round(cur)
    for vec, task in sent.values():
        codes = decrypt_codes(keys, vec)
        q = Quantizer(clip=task.secure_sum.clip, bits=task.secure_sum.bits)
        entering = codes.astype(np.float64) * q.step - q.clip
        assert task.assignment.weight * np.linalg.norm(entering) <= calls[0]


def test_async_distributed_noise_with_stale_updates_is_at_least_what_is_charged(
    model_dir: Path, keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Edges scale a fresh update's share by STALENESS_SCALE and a stale one's by less: the
    shares are sized for the smallest factor, and the charge is for what the sum carries."""
    fed = federation(
        model_dir,
        rounds={"mode": "async", "min_clients": 2, "buffer_size": 2},
        privacy={
            "mode": "distributed",
            "mechanism": "gaussian",
            "epsilon": 8.0,
            "schedule": "constant",
            "norm_clip": 1.0,
        },
        secure_sum={"bits": 16},
    )
    coord = coordinator(fed, keys)
    coord.version = fed.rounds.max_staleness  # an adapter version a stale update can lag behind
    means = capture_mean(coord, monkeypatch)
    cur = start_round(coord, ["a", "b", "c"])
    zeros = np.zeros(cur.num_values)
    upload(coord, cur, {"a": zeros, "b": zeros}, staleness={"b": fed.rounds.max_staleness})
    coord.finish_round(cur)
    charged = coord.store.ledger()[-1].event.noise_multiplier
    assert charged >= coord.privacy.plan.noise_multiplier(0)  # type: ignore[union-attr]
    # The denominator of an async round: what min_clients fresh clients carry.
    reference = STALENESS_SCALE * fed.rounds.min_clients * max_weight(cur)
    noise_on_sum = float(np.std(means[0] * reference))
    assert noise_on_sum >= 0.9 * charged * STALENESS_SCALE * max_weight(cur) * fed.privacy.norm_clip


def test_noise_that_rounding_would_dominate_is_refused_at_start_up(
    model_dir: Path, keys: Any
) -> None:
    """Laplace needs an L1 bound; 8-bit rounding of every value adds up to d·s/2 to it, more than
    the clip bound: the coordinator refuses to start rather than charge for the wrong noise."""
    fed = federation(
        model_dir,
        rounds={"min_clients": 2},
        privacy={"mode": "central", "mechanism": "laplace", "epsilon": 8.0, "norm_clip": 1.0},
    )
    with pytest.raises(ConfigError, match="bits: 16"):
        coordinator(fed, keys)
    sixteen = federation(
        model_dir,
        rounds={"min_clients": 2},
        secure_sum={"bits": 16},
        privacy={"mode": "central", "mechanism": "laplace", "epsilon": 8.0, "norm_clip": 1.0},
    )
    assert coordinator(sixteen, keys).privacy is not None


@pytest.mark.parametrize("spares", [0, 1])
def test_spare_charges_leave_room_for_retried_rounds(
    model_dir: Path, keys: Any, spares: int
) -> None:
    """Two rounds and one retry are three charges: they fit the budget only with a spare."""
    fed = federation(
        model_dir,
        rounds={"min_clients": 2, "max_rounds": 2},
        privacy={
            "mode": "central",
            "mechanism": "gaussian",
            "epsilon": 4.0,
            "schedule": "constant",
            "spare_charges": spares,
        },
    )
    coord = coordinator(fed, keys)
    for charge in range(3):
        if charge == 2 and spares == 0:
            with pytest.raises(BudgetExhaustedError):
                coord.privacy.check_budget(0)  # type: ignore[union-attr]
            return
        coord.privacy.check_budget(0)  # type: ignore[union-attr]
        cur = start_round(coord, ["a", "b"])
        upload(coord, cur, {"a": np.zeros(cur.num_values), "b": np.zeros(cur.num_values)})
        coord.finish_round(cur)
    assert coord.privacy is not None
    assert len(coord.store.ledger()) == 3 and coord.privacy.epsilon_spent() <= 4.0
