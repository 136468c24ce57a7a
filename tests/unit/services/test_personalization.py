"""Personalized heads in the services (``training.personalization: head``): the coordinator asks
for them on its evaluation rounds; a client fits its own head, keeps it, and reports only its
validation scores; its update and the messages it sends are exactly those of a client without
a personal head; the scores reach the round summary and the metrics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from ffa_lora.data import Dataset
from ffa_lora.lora.state import is_head
from ffa_lora_tools.demo import write_csv
from ffa_lora_tools.harness.threshold import LocalThreshold, local_threshold
from ffa_lora_tools.harness.tiny_model import tiny_bert
from services.client_agent import trainer as trainer_module
from services.client_agent.agent import upload_messages
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
from tests.unit.services.test_coordinator_rules import Outbox, partial

#: what a client's commit carries besides the protocol's own fields, with a personal head
REPORTED_SCALARS = {"num_samples", "quality.grad_snr", "quality.train_loss", "quality.val_loss_before",
                    "quality.val_loss_after", "quality.val_accuracy", "quality.site_evaluation.global_accuracy",
                    "quality.site_evaluation.global_roc_auc", "quality.site_evaluation.personal_accuracy",
                    "quality.site_evaluation.personal_roc_auc"}
PROTOCOL = {"round", "sha256", "idempotency_key", "rank", "base_version", "train_seconds", "crypto_seconds"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory, ceremony: Any) -> Any:
    """The threshold key and its in-process holders (for a coordinator of federation 'demo')."""
    local = local_threshold(tmp_path_factory.mktemp("pki"), federation="demo", min_clients=2,
                            ceremony=ceremony)
    yield local
    local.close()


def csv_of(path: Path, data: Dataset) -> Path:
    write_csv(path, data)
    return path


def coordinator(model_dir: Path, keys: LocalThreshold, *, training: dict[str, Any], privacy: dict[str, Any] | None = None,
                max_rounds: int = 1, evaluation: Path | None = None) -> handlers.Coordinator:
    cfg = parse_config({"service": "coordinator", "tls": {"ca": "a", "cert": "b", "key": "c"}, "coordinator": {
        "threshold": {"params_file": "p", "share_file": "s"},
        "federation": {"model": {"name_or_path": str(model_dir), "rank": 4, "max_length": 16},
                       "rounds": {"min_clients": 2, "max_rounds": max_rounds},
                       "training": {"local_epochs": 1.0, "batch_size": 8, "learning_rate": 1e-2, **training},
                       "secure_sum": {"key_bits": 512}, "privacy": privacy or {"mode": "off"},
                       "test_mode": True,  # 512-bit keys: test-only
                       **({"evaluation": {"path": str(evaluation)}} if evaluation else {})}}})
    fed = cfg.coordinator.federation  # type: ignore[union-attr]
    return handlers.Coordinator(fed=fed, store=MemoryStore(), public_key=keys.ceremony.public_key,
                                decryption=keys.decryption,
                                adapter_ops=LoraAdapterOps(lora_spec(fed), labels=fed.labels, evaluation=fed.evaluation),
                                outbox=Outbox(), metrics=create_metrics("coordinator"),
                                privacy=make_privacy_engine(fed))


def first_task(coord: handlers.Coordinator) -> d.RoundTask:
    coord.edge_roster("edge-1", [d.RosterEntry(c, 60) for c in ("site-a", "site-b")])
    plan = coord.plan_round().plans["edge-1"]
    a = plan.assignment_for("site-a")
    assert a is not None
    return plan.task_for(a)


def client(coord: handlers.Coordinator, tmp_path: Path, name: str) -> LocalTrainer:
    data = make_tiny_dataset(n=90, seed=0)
    cfg = parse_config({"service": "client", "tls": {"ca": "a", "cert": "b", "key": "c"},
                        "client": {"edges": ["127.0.0.1:1"], "data": {"path": str(csv_of(tmp_path / "site.csv", data)),
                                                                      "validation_fraction": 0.3},
                                   "deid": {"enabled": False}, "state_dir": str(tmp_path / name),
                                   "num_threads": 1}}).client
    assert cfg is not None
    t = LocalTrainer(cfg, client_id="site-a")
    t.set_spec(coord.ops.spec, tuple(coord.fed.labels))
    t.load_adapter(coord.version, coord._blob)
    return t


def run(t: LocalTrainer, task: d.RoundTask, keys: LocalThreshold, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, np.ndarray]:
    """The trainer's update and the plaintext delta it encrypted."""
    seen: list[np.ndarray] = []
    real = trainer_module.encrypt_update

    def spy(delta: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        seen.append(np.array(delta, copy=True))
        return real(delta, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "encrypt_update", spy)
    up = t.run_task(task, keys.ceremony.public_key)
    return up, seen[0]


def commit_fields(msg: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, value in msg.ListFields():
        if field.message_type is not None:
            out |= commit_fields(value, f"{prefix}{field.name}.")
        else:
            out[prefix + field.name] = value
    return out


HEAD = {"personalization": "head", "head_epochs": 30, "head_learning_rate": 0.05, "head_prox": 0.0}


@pytest.mark.slow  # trains the tiny model three times
def test_the_personal_head_never_enters_the_update_or_the_messages(model_dir: Path, keys: LocalThreshold, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    coord = coordinator(model_dir, keys, training=HEAD)
    task = first_task(coord)
    assert task.training.personalization == d.HeadPersonalization(epochs=30, learning_rate=0.05, prox=0.0)
    plain_task = d.RoundTask(**{**task.__dict__, "training": d.TrainingParams(
        **{**task.training.__dict__, "personalization": None})})

    with_head = client(coord, tmp_path, "with")
    up, delta = run(with_head, task, keys, monkeypatch)
    without = client(coord, tmp_path, "without")
    up_plain, delta_plain = run(without, plain_task, keys, monkeypatch)

    # The site fitted and kept a head of its own, different from the global one it started from.
    personal = with_head.personal_head
    assert personal is not None and without.personal_head is None
    saved = load_file(with_head.personal_head_path)
    assert set(saved) == set(personal) and all(np.array_equal(saved[k], personal[k]) for k in personal)
    glob = {k: v for k, v in coord.state.items() if is_head(k)}
    assert set(personal) == set(glob)
    assert max(float(np.abs(personal[k] - glob[k]).max()) for k in glob) > 1e-3
    # ... and the update it encrypted is bit for bit the update of a client without one.
    assert delta.shape == delta_plain.shape and np.array_equal(delta, delta_plain)
    personal_delta = np.concatenate([(personal[k] - glob[k]).ravel() for k in sorted(glob)])
    assert not np.isin(np.round(personal_delta, 6), np.round(delta, 6)).all()
    # The model it trains and sends from carries the global head again.
    assert all(np.array_equal(with_head.state[k], glob[k]) for k in glob)  # type: ignore[index]

    # The messages: ciphertext chunks of the same number of values, and scalars only.
    msgs, plain_msgs = upload_messages(up), upload_messages(up_plain)
    assert len(msgs) == len(plain_msgs) and up.vec.num_values == up_plain.vec.num_values == len(delta)
    fields = commit_fields(msgs[-1].update_commit)
    assert set(fields) - PROTOCOL == REPORTED_SCALARS
    assert set(commit_fields(plain_msgs[-1].update_commit)) - PROTOCOL == REPORTED_SCALARS - {
        k for k in REPORTED_SCALARS if "site_evaluation" in k}
    e = up.quality.site_evaluation
    assert e is not None and all(0.0 <= v <= 1.0 for v in (e.global_accuracy, e.global_roc_auc,
                                                           e.personal_accuracy, e.personal_roc_auc))
    # What the coordinator receives is what the client sent.
    back = serde.quality_from_proto(serde.quality_to_proto(up.quality))
    assert back.site_evaluation == e


@pytest.mark.slow  # trains the tiny model
def test_under_dp_a_client_reports_no_site_scores(model_dir: Path, keys: LocalThreshold, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    coord = coordinator(model_dir, keys, training=HEAD,
                        privacy={"mode": "central", "mechanism": "gaussian", "epsilon": 8.0, "norm_clip": 1.0})
    task = first_task(coord)
    t = client(coord, tmp_path, "dp")
    up, _ = run(t, task, keys, monkeypatch)
    assert t.personal_head is not None  # the site still has its head ...
    assert up.quality.site_evaluation is None  # ... but its scores stay at the site
    assert "quality.site_evaluation.personal_roc_auc" not in commit_fields(upload_messages(up)[-1].update_commit)


def test_the_coordinator_asks_on_evaluation_rounds_only(model_dir: Path, keys: LocalThreshold) -> None:
    coord = coordinator(model_dir, keys, training={**HEAD, "personalize_every": 2}, max_rounds=5)
    assert [coord._personalization(i) is not None for i in range(5)] == [False, True, False, True, True]
    off = coordinator(model_dir, keys, training={}, max_rounds=5)
    assert all(off._personalization(i) is None for i in range(5))
    last_only = coordinator(model_dir, keys, training=HEAD, max_rounds=3)
    assert [last_only._personalization(i) is not None for i in range(3)] == [False, False, True]


def test_site_scores_and_auc_reach_the_summary_and_the_metrics(model_dir: Path, keys: LocalThreshold, tmp_path: Path) -> None:
    evaluation = csv_of(tmp_path / "eval.csv", make_tiny_dataset(n=30, seed=1))
    coord = coordinator(model_dir, keys, training=HEAD, evaluation=evaluation)
    coord.edge_roster("edge-1", [d.RosterEntry(c, 100) for c in ("a", "b", "c")])
    cur = coord.plan_round()
    coord.current = cur
    vec, contribs, evidence = partial(coord, cur, ["a", "b", "c"], keys)
    scores = d.SiteEvaluation(global_accuracy=0.5, global_roc_auc=0.6, personal_accuracy=0.7, personal_roc_auc=0.8)
    broken = d.SiteEvaluation(global_accuracy=0.5, global_roc_auc=math.nan, personal_accuracy=2.0,
                              personal_roc_auc=0.8)
    contribs = [contribs[0].__class__(**{**c.__dict__, "quality": d.Quality(site_evaluation=e)})
                for c, e in zip(contribs, (scores, broken, None), strict=True)]
    coord.receive_partial("edge-1", round=cur.number, vec=vec, contributions=contribs, key="k", evidence=evidence)
    summary = coord.finish_round(cur)

    assert summary.extra["sites"] == {"a": {"global_accuracy": 0.5, "global_roc_auc": 0.6,
                                            "personal_accuracy": 0.7, "personal_roc_auc": 0.8}}
    assert summary.roc_auc is not None and 0.0 <= summary.roc_auc <= 1.0
    per_class = summary.extra["roc_auc_per_class"]
    assert set(per_class) == set(coord.fed.labels) and summary.extra["roc_auc_classes"] == 3
    assert summary.roc_auc == pytest.approx(sum(per_class.values()) / 3)
    stored = coord.store.rounds()[-1].metrics
    assert stored["roc_auc"] == summary.roc_auc and stored["sites"] == summary.extra["sites"]
    reg = coord.metrics.registry
    assert reg.get_sample_value("ffalora_global_roc_auc", {"service": "coordinator"}) == summary.roc_auc
    assert reg.get_sample_value("ffalora_global_class_roc_auc",
                                {"service": "coordinator", "class": "positive"}) == per_class["positive"]
    assert reg.get_sample_value("ffalora_client_val_roc_auc",
                                {"service": "coordinator", "client": "a", "head": "personal"}) == 0.8
    assert reg.get_sample_value("ffalora_client_val_roc_auc",
                                {"service": "coordinator", "client": "b", "head": "personal"}) is None
