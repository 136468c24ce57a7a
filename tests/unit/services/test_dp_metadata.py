"""Under DP nothing computed from a site's records leaves the client un-noised: the commit that
goes with a DP client's encrypted update is scanned field by field, with the real local trainer
(tiny BERT) behind it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from ffa_lora_tools.demo import write_csv
from ffa_lora_tools.harness.threshold import local_threshold
from ffa_lora_tools.harness.tiny_model import tiny_bert
from services.client_agent.agent import hello_message, upload_messages
from services.client_agent.trainer import LocalTrainer
from services.cloud_coordinator import handlers
from services.cloud_coordinator.adapter_ops import LoraAdapterOps, lora_spec
from services.cloud_coordinator.policies import make_privacy_engine
from services.cloud_coordinator.store import MemoryStore
from services.common import domain as d
from services.common import serde
from services.common.config import parse_config
from services.common.metrics import create_metrics
from tests.unit.lora.conftest import make_tiny_dataset
from tests.unit.services.test_coordinator_rules import Outbox

#: commit fields that carry no information about the records: the protocol's own values,
#: digests of ciphertexts, timings (the edge sees when the upload arrives anyway) and the
#: site's DP-SGD epsilon (its own privacy accounting)
NOT_FROM_RECORDS = {
    "round",
    "sha256",
    "idempotency_key",
    "rank",
    "base_version",
    "train_seconds",
    "crypto_seconds",
    "quality.dpsgd_epsilon",
}

PRIVACY = {
    "client-level": {"mode": "central", "mechanism": "gaussian", "epsilon": 8.0, "norm_clip": 1.0},
    "dp-sgd": {
        "mode": "off",
        "delta": 1e-5,
        "dpsgd": {
            "enabled": True,
            "noise_multiplier": 1.0,
            "max_grad_norm": 1.0,
            "optimizer": "sgd",
            "learning_rate": 0.2,
        },
    },
    "off": {"mode": "off"},
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory, ceremony: Any) -> Any:
    local = local_threshold(tmp_path_factory.mktemp("pki"), federation="demo", min_clients=2,
                            ceremony=ceremony)
    yield local
    local.close()


def commit_fields(msg: Any, prefix: str = "") -> dict[str, Any]:
    """Every field set in a protobuf message, nested ones as ``outer.inner``."""
    out: dict[str, Any] = {}
    for field, value in msg.ListFields():
        if field.message_type is not None:
            out |= commit_fields(value, f"{prefix}{field.name}.")
        else:
            out[prefix + field.name] = value
    return out


def client_commit(
    model_dir: Path, keys: Any, tmp_path: Path, privacy: dict[str, Any], site: str = "site-a"
) -> dict[str, Any]:
    cfg = parse_config(
        {
            "service": "coordinator",
            "tls": {"ca": "a", "cert": "b", "key": "c"},
            "coordinator": {
                "threshold": {"params_file": "p", "share_file": "s"},
                "federation": {
                    "model": {"name_or_path": str(model_dir), "rank": 4, "max_length": 16},
                    "rounds": {"min_clients": 2},
                    "training": {"local_epochs": 1.0, "batch_size": 8, "learning_rate": 1e-2},
                    "secure_sum": {"key_bits": 512},
                    "test_mode": True,
                    "privacy": privacy,
                }
            },
        }
    )
    fed = cfg.coordinator.federation  # type: ignore[union-attr]
    coord = handlers.Coordinator(
        fed=fed,
        store=MemoryStore(),
        public_key=keys.ceremony.public_key,
        decryption=keys.decryption,
        adapter_ops=LoraAdapterOps(lora_spec(fed), labels=fed.labels),
        outbox=Outbox(),
        metrics=create_metrics("coordinator"),
        privacy=make_privacy_engine(fed),
    )
    coord.edge_roster("edge-1", [d.RosterEntry(c, 60) for c in ("site-a", "site-b")])
    # coordinator -> edge -> client over the wire formats
    plan = serde.plan_from_proto(serde.plan_to_proto(coord.plan_round().plans["edge-1"]))
    a = plan.assignment_for(site)
    assert a is not None
    task = serde.task_from_proto(serde.task_to_proto(plan.task_for(a)))

    data = make_tiny_dataset(n=60, seed=0)
    path = tmp_path / "site.csv"
    write_csv(path, data)
    client = parse_config(
        {
            "service": "client",
            "tls": {"ca": "a", "cert": "b", "key": "c"},
            "client": {
                "edges": ["127.0.0.1:1"],
                "data": {"path": str(path)},
                "deid": {"enabled": False},
                "state_dir": str(tmp_path / "state"),
                "num_threads": 1,
            },
        }
    ).client
    assert client is not None
    trainer = LocalTrainer(client, client_id=site)
    trainer.set_spec(plan.spec, tuple(fed.labels))  # type: ignore[arg-type]
    trainer.load_adapter(coord.version, coord._blob)
    up = trainer.run_task(task, coord.public_key)
    commit = upload_messages(up)[-1].update_commit
    return commit_fields(commit)


@pytest.mark.parametrize("level", ["client-level", "dp-sgd"])
def test_a_dp_client_sends_no_scalar_computed_from_its_records(
    model_dir: Path, keys: Any, tmp_path: Path, level: str
) -> None:
    fields = client_commit(model_dir, keys, tmp_path, PRIVACY[level])
    leaked = {k: v for k, v in fields.items() if k not in NOT_FROM_RECORDS and v}
    assert leaked == {}, f"sent un-noised under {level} DP: {leaked}"
    if level == "dp-sgd":
        assert 0 < fields["quality.dpsgd_epsilon"] < math.inf


def test_without_dp_the_client_reports_its_statistics(
    model_dir: Path, keys: Any, tmp_path: Path
) -> None:
    """The scan can fail: without DP the same commit carries the record count and losses."""
    fields = client_commit(model_dir, keys, tmp_path, PRIVACY["off"])
    assert fields["num_samples"] > 0 and fields["quality.train_loss"] > 0


def test_each_site_trains_with_its_own_noise_multiplier(
    model_dir: Path, keys: Any, tmp_path: Path
) -> None:
    """``privacy.dpsgd.noise_multipliers`` reaches the one client it names, through the edge's
    plan and the client's task; a client not named keeps ``noise_multiplier``."""
    dp = dict(PRIVACY["dp-sgd"])
    dp["dpsgd"] = {**dp["dpsgd"], "noise_multipliers": {"site-a": 4.0}}
    named = client_commit(model_dir, keys, tmp_path / "a", dp, site="site-a")
    other = client_commit(model_dir, keys, tmp_path / "b", dp, site="site-b")
    # same records, same steps: only the noise differs
    assert 0 < named["quality.dpsgd_epsilon"] < other["quality.dpsgd_epsilon"]


def test_the_hello_says_nothing_about_the_records() -> None:
    """The hello is sent before the client knows whether DP is on: not even the record count."""
    from types import SimpleNamespace

    trainer = SimpleNamespace(num_samples=54, version=3, state={}, device="cpu")
    fields = commit_fields(hello_message(trainer, check_in_interval_s=0.0).hello)  # type: ignore[arg-type]
    assert fields.keys() <= {"adapter_version", "has_adapter", "device", "agent_version", "check_in_interval_s"}
    assert fields["adapter_version"] == 3 and fields["has_adapter"]
