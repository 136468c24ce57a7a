"""Conversions between protobuf messages and domain objects, in one place (x_to_proto /
x_from_proto pairs)."""

from __future__ import annotations

import hashlib

from ffalora.v1 import federation_pb2 as pb

from ffa_lora.crypto import PublicKey
from ffa_lora.lora.spec import LoRASpec
from services.common import domain as d
from services.common.rejections import InvalidMessage
from services.common.transfer import split_blob


def assignment_to_proto(a: d.Assignment) -> pb.ClientAssignment:
    return pb.ClientAssignment(client_id=a.client_id, rank=a.rank, weight=a.weight, num_values=a.num_values)


def assignment_from_proto(m: pb.ClientAssignment) -> d.Assignment:
    return d.Assignment(client_id=m.client_id, rank=m.rank, weight=m.weight, num_values=m.num_values)


def secure_sum_to_proto(s: d.SecureSumParams) -> pb.SecureSumSpec:
    return pb.SecureSumSpec(layout=s.layout, clip=s.clip, bits=s.bits, key_fingerprint=s.key_fingerprint)


def secure_sum_from_proto(m: pb.SecureSumSpec) -> d.SecureSumParams:
    return d.SecureSumParams(layout=m.layout, clip=m.clip, bits=m.bits, key_fingerprint=m.key_fingerprint)


def privacy_to_proto(p: d.PrivacyParams) -> pb.PrivacySpec:
    return pb.PrivacySpec(
        mode=p.mode,
        mechanism=p.mechanism,
        norm_clip=p.norm_clip,
        noise_scale=p.noise_scale,
        share_clients=p.share_clients,
        tolerated_dropouts=p.tolerated_dropouts,
        dpsgd_noise_multiplier=p.dpsgd_noise_multiplier,
        dpsgd_max_grad_norm=p.dpsgd_max_grad_norm,
        dpsgd_delta=p.dpsgd_delta,
        dpsgd_optimizer=p.dpsgd_optimizer,
        dpsgd_learning_rate=p.dpsgd_learning_rate,
        dpsgd_head_learning_rate=p.dpsgd_head_learning_rate,
    )


def privacy_from_proto(m: pb.PrivacySpec) -> d.PrivacyParams:
    return d.PrivacyParams(
        mode=m.mode or "off",
        mechanism=m.mechanism or "gaussian",
        norm_clip=m.norm_clip,
        noise_scale=m.noise_scale,
        share_clients=m.share_clients,
        tolerated_dropouts=m.tolerated_dropouts,
        dpsgd_noise_multiplier=m.dpsgd_noise_multiplier,
        dpsgd_max_grad_norm=m.dpsgd_max_grad_norm,
        dpsgd_delta=m.dpsgd_delta,
        dpsgd_optimizer=m.dpsgd_optimizer,
        dpsgd_learning_rate=m.dpsgd_learning_rate,
        dpsgd_head_learning_rate=m.dpsgd_head_learning_rate,
    )


def training_to_proto(t: d.TrainingParams) -> pb.TrainingSpec:
    return pb.TrainingSpec(
        strategy=t.strategy,
        phase=t.phase,
        local_epochs=t.local_epochs,
        learning_rate=t.learning_rate,
        batch_size=t.batch_size,
        seed=t.seed,
        keep_optimizer_state=t.keep_optimizer_state,
    )


def training_from_proto(m: pb.TrainingSpec) -> d.TrainingParams:
    return d.TrainingParams(
        strategy=m.strategy,
        phase=m.phase,
        local_epochs=m.local_epochs,
        learning_rate=m.learning_rate,
        batch_size=m.batch_size,
        seed=m.seed,
        keep_optimizer_state=m.keep_optimizer_state,
    )


def plan_to_proto(p: d.RoundPlan) -> pb.RoundPlan:
    return pb.RoundPlan(
        round=p.round,
        adapter_version=p.adapter_version,
        assignments=[assignment_to_proto(a) for a in p.assignments],
        secure_sum=secure_sum_to_proto(p.secure_sum),
        privacy=privacy_to_proto(p.privacy),
        training=training_to_proto(p.training),
        deadline_unix=p.deadline_unix,
        min_clients=p.min_clients,
        mode=p.mode,
        num_values=p.num_values,
        buffer_size=p.buffer_size,
        max_staleness=p.max_staleness,
        staleness_exponent=p.staleness_exponent,
        model=spec_to_proto(p.spec) if p.spec is not None else None,
    )


def plan_from_proto(m: pb.RoundPlan) -> d.RoundPlan:
    return d.RoundPlan(
        round=m.round,
        adapter_version=m.adapter_version,
        assignments=tuple(assignment_from_proto(a) for a in m.assignments),
        secure_sum=secure_sum_from_proto(m.secure_sum),
        privacy=privacy_from_proto(m.privacy),
        training=training_from_proto(m.training),
        deadline_unix=m.deadline_unix,
        min_clients=m.min_clients,
        mode=m.mode or "sync",
        num_values=m.num_values,
        buffer_size=m.buffer_size or 1,
        max_staleness=m.max_staleness,
        staleness_exponent=m.staleness_exponent,
        spec=spec_from_proto(m.model) if m.HasField("model") else None,
    )


def task_to_proto(t: d.RoundTask) -> pb.RoundTask:
    return pb.RoundTask(
        round=t.round,
        adapter_version=t.adapter_version,
        assignment=assignment_to_proto(t.assignment),
        secure_sum=secure_sum_to_proto(t.secure_sum),
        privacy=privacy_to_proto(t.privacy),
        training=training_to_proto(t.training),
        deadline_unix=t.deadline_unix,
        mode=t.mode,
        model=spec_to_proto(t.spec) if t.spec is not None else None,
    )


def task_from_proto(m: pb.RoundTask) -> d.RoundTask:
    return d.RoundTask(
        round=m.round,
        adapter_version=m.adapter_version,
        assignment=assignment_from_proto(m.assignment),
        secure_sum=secure_sum_from_proto(m.secure_sum),
        privacy=privacy_from_proto(m.privacy),
        training=training_from_proto(m.training),
        deadline_unix=m.deadline_unix,
        mode=m.mode or "sync",
        spec=spec_from_proto(m.model) if m.HasField("model") else None,
    )


def quality_to_proto(q: d.Quality) -> pb.QualityStats:
    return pb.QualityStats(
        grad_snr=q.grad_snr,
        val_loss_before=q.val_loss_before,
        val_loss_after=q.val_loss_after,
        val_accuracy=q.val_accuracy,
        train_loss=q.train_loss,
        dpsgd_epsilon=q.dpsgd_epsilon,
    )


def quality_from_proto(m: pb.QualityStats) -> d.Quality:
    return d.Quality(
        grad_snr=m.grad_snr,
        val_loss_before=m.val_loss_before,
        val_loss_after=m.val_loss_after,
        val_accuracy=m.val_accuracy,
        train_loss=m.train_loss,
        dpsgd_epsilon=m.dpsgd_epsilon,
    )


def contribution_to_proto(c: d.Contribution) -> pb.Contribution:
    return pb.Contribution(
        client_id=c.client_id,
        rank=c.rank,
        weight=c.weight,
        num_samples=c.num_samples,
        quality=quality_to_proto(c.quality),
        base_version=c.base_version,
        train_seconds=c.train_seconds,
        crypto_seconds=c.crypto_seconds,
        bytes_uploaded=c.bytes_uploaded,
        values_uploaded=c.values_uploaded,
    )


def contribution_from_proto(m: pb.Contribution) -> d.Contribution:
    return d.Contribution(
        client_id=m.client_id,
        rank=m.rank,
        weight=m.weight,
        num_samples=m.num_samples,
        quality=quality_from_proto(m.quality),
        base_version=m.base_version,
        train_seconds=m.train_seconds,
        crypto_seconds=m.crypto_seconds,
        bytes_uploaded=m.bytes_uploaded,
        values_uploaded=m.values_uploaded,
    )


def roster_entry_to_proto(r: d.RosterEntry) -> pb.RosterEntry:
    return pb.RosterEntry(client_id=r.client_id, num_samples=r.num_samples, device=r.device)


def roster_entry_from_proto(m: pb.RosterEntry) -> d.RosterEntry:
    return d.RosterEntry(client_id=m.client_id, num_samples=m.num_samples, device=m.device or "cpu")


def status_to_proto(code: int, reason: str = "", message: str = "") -> pb.Status:
    return pb.Status(code=code, reason=reason, message=message)


def public_key_to_proto(pk: PublicKey) -> pb.PublicKey:
    return pb.PublicKey(n=pk.to_bytes(), fingerprint=pk.fingerprint, key_bits=pk.bits)


def public_key_from_proto(m: pb.PublicKey) -> PublicKey:
    pk = PublicKey.from_bytes(m.n)
    if pk.fingerprint != m.fingerprint:
        raise InvalidMessage("key_fingerprint", "public key fingerprint mismatch")
    return pk


def adapter_messages(version: int, blob: bytes) -> list[pb.AdapterChunk]:
    sha = hashlib.sha256(blob).hexdigest()
    return [pb.AdapterChunk(version=version, offset=off, data=data, total_size=len(blob), sha256=sha)
            for off, data in split_blob(blob)]


def federation_to_proto(info: d.FederationInfo) -> pb.ModelSpec:
    sp = info.spec
    return pb.ModelSpec(
        name_or_path=sp.model, num_labels=sp.num_labels, labels=list(info.labels),
        target_modules=list(sp.target_modules), rank=sp.r_max, alpha=sp.alpha, dropout=sp.dropout,
        max_length=sp.max_length, seed=sp.seed, strategy=sp.strategy, warmup_rounds=sp.warmup_rounds,
    )


def federation_from_proto(name: str, m: pb.ModelSpec) -> d.FederationInfo:
    spec = LoRASpec(
        model=m.name_or_path, num_labels=m.num_labels, target_modules=tuple(m.target_modules), r_max=m.rank,
        alpha=m.alpha, dropout=m.dropout, max_length=m.max_length, strategy=m.strategy or "ffa",  # type: ignore[arg-type]
        warmup_rounds=m.warmup_rounds, seed=m.seed,
    )
    return d.FederationInfo(name=name, labels=tuple(m.labels), spec=spec)


def spec_to_proto(spec: LoRASpec) -> pb.ModelSpec:
    """A round's adapter spec (labels are the welcome's; left empty here)."""
    return federation_to_proto(d.FederationInfo(name="", labels=(), spec=spec))


def spec_from_proto(m: pb.ModelSpec) -> LoRASpec:
    return federation_from_proto("", m).spec
