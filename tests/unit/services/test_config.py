"""Configuration errors name the field and say how to fix it."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from pydantic import ValidationError

from ffa_lora.errors import ConfigError
from services.common.config import load_config, parse_config

TLS = {"ca": "ca.crt", "cert": "c.crt", "key": "c.key"}


def coordinator(**fed: object) -> dict:
    return {"service": "coordinator", "tls": TLS, "coordinator": {
        "federation": fed, "threshold": {"params_file": "keys/threshold.params",
                                         "share_file": "keys/coordinator-coordinator.share"}}}


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (coordinator(rounds={"min_clients": 0}), "coordinator.federation.rounds.min_clients"),
        (coordinator(secure_sum={"bits": 12}), "coordinator.federation.secure_sum.bits"),
        (coordinator(privacy={"mode": "sometimes"}), "coordinator.federation.privacy.mode"),
        (
            coordinator(training={"learning_rate": -1}),
            "coordinator.federation.training.learning_rate",
        ),
        (coordinator(modle={}), "unknown field"),
        (coordinator(labels=["a", "b"]), "labels has 2 names but model.num_labels is 3"),
        (coordinator(rounds={"min_clients": 100}), "raise secure_sum.max_clients"),
        (
            coordinator(privacy={"mode": "central"}, rank={"scheduler": "dynamic"}),
            "use rank.scheduler: fixed",
        ),
        (
            coordinator(privacy={"dpsgd": {"enabled": True}}, rank={"scheduler": "dynamic"}),
            "use rank.scheduler: fixed",
        ),
        (coordinator(privacy={"mode": "distributed"}), "secure_sum.bits: 16"),
        (
            coordinator(
                privacy={"mode": "distributed", "mechanism": "laplace", "schedule": "constant"},
                rounds={"mode": "async"},
                secure_sum={"bits": 16},
            ),
            "use gaussian or rounds.mode: sync",
        ),
        (
            coordinator(
                privacy={"mode": "distributed"}, rounds={"mode": "async"}, secure_sum={"bits": 16}
            ),
            "privacy.schedule: constant",
        ),
        ({"service": "edge", "tls": TLS}, "the 'edge:' block is missing"),
        (
            {
                "service": "edge",
                "tls": TLS,
                "edge": {},
                "client": {"edges": ["a:1"], "data": {"path": "x"}},
            },
            "remove them",
        ),
        (
            {"service": "edge", "tls": TLS, "edge": {"coordinator_address": "nohostport"}},
            "edge.coordinator_address",
        ),
        ({"service": "client", "tls": TLS, "client": {"edges": []}}, "client.edges"),
        (
            {
                "service": "client",
                "tls": TLS,
                "client": {"edges": ["a:1"], "data": {"path": "x"}, "session": "sometimes"},
            },
            "client.session",
        ),
        (
            {
                "service": "client",
                "tls": TLS,
                "client": {"edges": ["a:1"], "data": {"path": "x"}, "check_in_interval_s": 0},
            },
            "client.check_in_interval_s",
        ),
        (
            {"service": "edge", "tls": TLS, "edge": {"limits": {"max_client_sessions": 0}}},
            "edge.limits.max_client_sessions",
        ),
        ({"service": "edge", "tls": TLS, "edge": {"malloc_arena_max": 0}}, "edge.malloc_arena_max"),
        ({"service": "router", "tls": TLS}, "service"),
        (["not", "a", "mapping"], "expected a YAML mapping"),
    ],
)
def test_bad_values_name_the_field(doc: object, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(doc, source="test.yaml")
    assert needle in str(err.value)
    assert "test.yaml" in str(err.value) or "mapping" in str(err.value)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("service: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_defaults_are_a_valid_federation() -> None:
    cfg = parse_config(coordinator())
    fed = cfg.coordinator.federation  # type: ignore[union-attr]
    assert fed.training.strategy == "ffa" and fed.secure_sum.key_bits == 2048 and fed.secure_sum.bits == 8


def test_cosine_learning_rate_schedule() -> None:
    from services.common.config import TrainingConfig

    flat = TrainingConfig(learning_rate=5e-3)
    assert [flat.learning_rate_at(i, 6) for i in range(6)] == [5e-3] * 6
    cos = TrainingConfig(learning_rate=5e-3, lr_schedule="cosine", min_lr_fraction=0.1)
    lrs = [cos.learning_rate_at(i, 6) for i in range(6)]
    assert lrs[0] == pytest.approx(5e-3) and lrs[-1] == pytest.approx(5e-4)
    assert all(a > b for a, b in itertools.pairwise(lrs))
    assert cos.learning_rate_at(99, 6) == pytest.approx(5e-4)  # rounds past the plan keep the floor
    with pytest.raises(ValidationError):
        TrainingConfig(lr_schedule="step")


def test_dpsgd_settings_travel_with_the_task() -> None:
    from services.common import domain as d
    from services.common import serde
    from services.common.config import DPSGDConfig

    cfg = DPSGDConfig(enabled=True, noise_multiplier=0.8, optimizer="sgd", learning_rate=0.1, head_learning_rate=0.5)
    p = d.PrivacyParams(dpsgd_noise_multiplier=cfg.noise_multiplier, dpsgd_max_grad_norm=cfg.max_grad_norm,
                        dpsgd_delta=1e-5, dpsgd_optimizer=cfg.optimizer, dpsgd_learning_rate=cfg.learning_rate or 0.0,
                        dpsgd_head_learning_rate=cfg.head_learning_rate or 0.0,
                        dpsgd_expected_batch_size=512, dpsgd_physical_batch_size=32, dpsgd_momentum=0.5,
                        dpsgd_head_max_grad_norm=0.7, dpsgd_head_epochs=2.5, dpsgd_adapter_only=True)
    assert serde.privacy_from_proto(serde.privacy_to_proto(p)) == p
    with pytest.raises(ValidationError):
        DPSGDConfig(optimizer="lion")
    with pytest.raises(ValidationError):
        DPSGDConfig(noise_multiplier=0)
    for bad in ({"site-a": 0.0}, {"site-a": float("nan")}, {"no spaces": 1.0}):
        with pytest.raises(ValidationError):
            DPSGDConfig(noise_multipliers=bad)
    a = d.Assignment("site-a", 4, 1, 100, dpsgd_noise_multiplier=2.5)
    assert serde.assignment_from_proto(serde.assignment_to_proto(a)) == a


def test_dpsgd_recipe_picks_the_mean_linear_head_and_probe_rounds() -> None:
    from services.cloud_coordinator.adapter_ops import lora_spec
    from services.common import serde

    plain = parse_config(coordinator()).coordinator
    assert plain is not None and plain.federation.head() == "pooler"  # no DP: unchanged
    doc = coordinator(rounds={"max_rounds": 6}, training={"local_epochs": 0.5},
                      privacy={"dpsgd": {"enabled": True, "adapter_rounds": 2}})
    dp = parse_config(doc).coordinator
    assert dp is not None
    fed = dp.federation
    assert fed.head() == "mean_linear" and lora_spec(fed).head == "mean_linear"
    # the head travels to the clients with the spec
    assert serde.spec_from_proto(serde.spec_to_proto(lora_spec(fed))).head == "mean_linear"
    # head-only rounds (no steps through the model): first, and by default the last one
    assert fed.dpsgd_probe_rounds() == 4
    assert [fed.local_epochs_at(i) for i in range(6)] == [0.0] * 3 + [0.5] * 2 + [0.0]
    doc["coordinator"]["federation"]["privacy"]["dpsgd"]["final_head_rounds"] = 0
    first = parse_config(doc).coordinator
    assert first is not None
    assert [first.federation.local_epochs_at(i) for i in range(6)] == [0.0] * 4 + [0.5] * 2
    # every round trains the adapter: the default final head round has no head-only round to take
    doc["coordinator"]["federation"]["privacy"]["dpsgd"] = {"enabled": True, "adapter_rounds": None}
    every = parse_config(doc).coordinator
    assert every is not None and [every.federation.local_epochs_at(i) for i in range(6)] == [0.5] * 6


@pytest.mark.parametrize(("dpsgd", "model", "needle"), [
    ({"adapter_rounds": 0}, {}, "adapter_rounds"),
    ({"final_head_rounds": 5}, {}, "final_head_rounds (5)"),
    ({"adapter_rounds": None, "final_head_rounds": 1}, {}, "needs adapter_rounds set"),
    ({"head_epochs": 0}, {}, "adapter_only needs head_epochs > 0"),
    ({"head_epochs": 0, "adapter_only": False}, {}, "head-only rounds, which need head_epochs > 0"),
    ({}, {"head": "pooler"}, "needs model.head: mean_linear"),
])
def test_dpsgd_recipe_refuses_what_cannot_train(dpsgd: dict, model: dict, needle: str) -> None:
    doc = coordinator(rounds={"max_rounds": 6}, model=model,
                      privacy={"dpsgd": {"enabled": True, **dpsgd}})
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        parse_config(doc)


@pytest.mark.parametrize(("fed", "needle"), [
    ({"secure_sum": {"key_bits": 512}}, "secure_sum.key_bits is 512"),
    ({"secure_sum": {"key_bits": 1024}}, "secure_sum.key_bits is 1024"),
    ({"rounds": {"min_clients": 1}}, "rounds.min_clients is 1"),
])
def test_unsafe_settings_are_refused_outside_test_mode(fed: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(coordinator(**fed), source="test.yaml")
    assert needle in str(err.value) and "federation.test_mode" in str(err.value)
    parse_config(coordinator(**fed, test_mode=True))  # the explicit switch the tests use


def test_a_coordinator_needs_its_threshold_share() -> None:
    doc = coordinator()
    del doc["coordinator"]["threshold"]
    with pytest.raises(ConfigError, match="coordinator.threshold: required field is missing"):
        parse_config(doc)
    doc = coordinator()
    doc["coordinator"]["threshold"]["t"] = 1
    with pytest.raises(ConfigError, match="coordinator.threshold.t"):
        parse_config(doc)


def test_a_key_holder_config() -> None:
    cfg = parse_config({"service": "keyholder", "tls": TLS, "keyholder": {
        "federation": "bank-demo", "share_file": "kh1.share", "weights": {"max_weight": 8}}})
    k = cfg.keyholder
    assert k is not None and k.min_clients == 2 and k.weights.max_weight == 8 and k.weights.declared is None
    with pytest.raises(ConfigError, match="keyholder.share_file: required"):
        parse_config({"service": "keyholder", "tls": TLS, "keyholder": {"federation": "x"}})
    with pytest.raises(ConfigError, match="key_fingerprint"):
        parse_config({"service": "client", "tls": TLS, "client": {
            "edges": ["127.0.0.1:1"], "data": {"path": "x.csv"}, "key_fingerprint": "not-hex"}})
