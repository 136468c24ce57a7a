"""Conversions between protobuf messages and domain objects, in one place (x_to_proto /
x_from_proto pairs).

Enums: the domain speaks the config's strings ("ffa", "sync", ...); the wire speaks the
proto's enums. Each pair maps one onto the other; an ``_UNSPECIFIED`` or unknown value coming
in is refused with :class:`InvalidMessage` (reason ``"enum"``) naming the field, never read as
a default.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from ffalora.v1 import federation_pb2 as pb

from ffa_lora.crypto import PublicKey
from ffa_lora.lora.spec import LoRASpec
from services.common import domain as d
from services.common.rejections import InvalidMessage
from services.common.transfer import outgoing, split_blob

_STRATEGY = {"ffa": pb.STRATEGY_FFA, "fedavg": pb.STRATEGY_FEDAVG, "alternating": pb.STRATEGY_ALTERNATING}
_PHASE = {"B": pb.TRAINING_PHASE_B, "A": pb.TRAINING_PHASE_A, "AB": pb.TRAINING_PHASE_AB}
_MODE = {"sync": pb.ROUND_MODE_SYNC, "async": pb.ROUND_MODE_ASYNC}
_PRIVACY_MODE = {"off": pb.PRIVACY_MODE_OFF, "central": pb.PRIVACY_MODE_CENTRAL,
                 "distributed": pb.PRIVACY_MODE_DISTRIBUTED}
_MECHANISM = {"gaussian": pb.NOISE_MECHANISM_GAUSSIAN, "laplace": pb.NOISE_MECHANISM_LAPLACE}
_OPTIMIZER = {"adamw": pb.DPSGD_OPTIMIZER_ADAMW, "sgd": pb.DPSGD_OPTIMIZER_SGD}
_HEAD = {"pooler": pb.TASK_HEAD_POOLER, "mean_linear": pb.TASK_HEAD_MEAN_LINEAR}


def _enum_to_proto(field: str, table: Mapping[str, int], value: str) -> int:
    try:
        return table[value]
    except KeyError:
        raise InvalidMessage("enum", f"{field} {value!r} is not one of {sorted(table)}") from None


def _enum_from_proto(field: str, table: Mapping[str, int], number: int) -> str:
    for name, n in table.items():
        if n == number:
            return name
    what = "unspecified (0)" if number == 0 else f"the unknown value {number}"
    raise InvalidMessage("enum", f"{field} is {what}; the sender must set one of {sorted(table)} "
                                 "(an older or newer peer? upgrade both sides to one protocol)")


def strategy_to_proto(value: str) -> int:
    return _enum_to_proto("strategy", _STRATEGY, value)


def strategy_from_proto(number: int) -> str:
    return _enum_from_proto("strategy", _STRATEGY, number)


def head_to_proto(value: str) -> int:
    return _enum_to_proto("head", _HEAD, value)


def head_from_proto(number: int) -> str:
    return _enum_from_proto("head", _HEAD, number)


def phase_to_proto(value: str) -> int:
    return _enum_to_proto("phase", _PHASE, value)


def phase_from_proto(number: int) -> str:
    return _enum_from_proto("phase", _PHASE, number)


def mode_to_proto(value: str) -> int:
    return _enum_to_proto("mode", _MODE, value)


def mode_from_proto(number: int) -> str:
    return _enum_from_proto("mode", _MODE, number)


def privacy_mode_to_proto(value: str) -> int:
    return _enum_to_proto("privacy mode", _PRIVACY_MODE, value)


def privacy_mode_from_proto(number: int) -> str:
    return _enum_from_proto("privacy mode", _PRIVACY_MODE, number)


def mechanism_to_proto(value: str) -> int:
    return _enum_to_proto("mechanism", _MECHANISM, value)


def mechanism_from_proto(number: int) -> str:
    return _enum_from_proto("mechanism", _MECHANISM, number)


def dpsgd_optimizer_to_proto(value: str) -> int:
    """"" (DP-SGD off) is the one value that maps to UNSPECIFIED."""
    return pb.DPSGD_OPTIMIZER_UNSPECIFIED if value == "" else _enum_to_proto(
        "dpsgd_optimizer", _OPTIMIZER, value)


def dpsgd_optimizer_from_proto(number: int, *, dpsgd_on: bool) -> str:
    """UNSPECIFIED is "" (no optimizer) and valid only while DP-SGD is off."""
    if number == pb.DPSGD_OPTIMIZER_UNSPECIFIED and not dpsgd_on:
        return ""
    return _enum_from_proto("dpsgd_optimizer", _OPTIMIZER, number)


def assignment_to_proto(a: d.Assignment) -> pb.ClientAssignment:
    return pb.ClientAssignment(client_id=a.client_id, rank=a.rank, weight=a.weight, num_values=a.num_values,
                               dpsgd_noise_multiplier=a.dpsgd_noise_multiplier)


def assignment_from_proto(m: pb.ClientAssignment) -> d.Assignment:
    return d.Assignment(client_id=m.client_id, rank=m.rank, weight=m.weight, num_values=m.num_values,
                        dpsgd_noise_multiplier=m.dpsgd_noise_multiplier)


def secure_sum_to_proto(s: d.SecureSumParams) -> pb.SecureSumSpec:
    return pb.SecureSumSpec(layout=s.layout, clip=s.clip, bits=s.bits, key_fingerprint=s.key_fingerprint)


def secure_sum_from_proto(m: pb.SecureSumSpec) -> d.SecureSumParams:
    return d.SecureSumParams(layout=m.layout, clip=m.clip, bits=m.bits, key_fingerprint=m.key_fingerprint)


def privacy_to_proto(p: d.PrivacyParams) -> pb.PrivacySpec:
    return pb.PrivacySpec(
        mode=privacy_mode_to_proto(p.mode),
        mechanism=mechanism_to_proto(p.mechanism),
        norm_clip=p.norm_clip,
        noise_scale=p.noise_scale,
        share_clients=p.share_clients,
        tolerated_dropouts=p.tolerated_dropouts,
        dpsgd_noise_multiplier=p.dpsgd_noise_multiplier,
        dpsgd_max_grad_norm=p.dpsgd_max_grad_norm,
        dpsgd_delta=p.dpsgd_delta,
        dpsgd_optimizer=dpsgd_optimizer_to_proto(p.dpsgd_optimizer),
        dpsgd_learning_rate=p.dpsgd_learning_rate,
        dpsgd_head_learning_rate=p.dpsgd_head_learning_rate,
        dpsgd_expected_batch_size=p.dpsgd_expected_batch_size,
        dpsgd_physical_batch_size=p.dpsgd_physical_batch_size,
        dpsgd_momentum=p.dpsgd_momentum,
        dpsgd_head_max_grad_norm=p.dpsgd_head_max_grad_norm,
        dpsgd_head_epochs=p.dpsgd_head_epochs,
        dpsgd_adapter_only=p.dpsgd_adapter_only,
    )


def privacy_from_proto(m: pb.PrivacySpec) -> d.PrivacyParams:
    return d.PrivacyParams(
        mode=privacy_mode_from_proto(m.mode),
        mechanism=mechanism_from_proto(m.mechanism),
        norm_clip=m.norm_clip,
        noise_scale=m.noise_scale,
        share_clients=m.share_clients,
        tolerated_dropouts=m.tolerated_dropouts,
        dpsgd_noise_multiplier=m.dpsgd_noise_multiplier,
        dpsgd_max_grad_norm=m.dpsgd_max_grad_norm,
        dpsgd_delta=m.dpsgd_delta,
        dpsgd_optimizer=dpsgd_optimizer_from_proto(m.dpsgd_optimizer, dpsgd_on=m.dpsgd_noise_multiplier > 0),
        dpsgd_learning_rate=m.dpsgd_learning_rate,
        dpsgd_head_learning_rate=m.dpsgd_head_learning_rate,
        dpsgd_expected_batch_size=m.dpsgd_expected_batch_size,
        dpsgd_physical_batch_size=m.dpsgd_physical_batch_size,
        dpsgd_momentum=m.dpsgd_momentum,
        dpsgd_head_max_grad_norm=m.dpsgd_head_max_grad_norm,
        dpsgd_head_epochs=m.dpsgd_head_epochs,
        dpsgd_adapter_only=m.dpsgd_adapter_only,
    )


def training_to_proto(t: d.TrainingParams) -> pb.TrainingSpec:
    return pb.TrainingSpec(
        strategy=strategy_to_proto(t.strategy),
        phase=phase_to_proto(t.phase),
        local_epochs=t.local_epochs,
        learning_rate=t.learning_rate,
        batch_size=t.batch_size,
        seed=t.seed,
        keep_optimizer_state=t.keep_optimizer_state,
        personalization=personalization_to_proto(t.personalization) if t.personalization is not None else None,
    )


def training_from_proto(m: pb.TrainingSpec) -> d.TrainingParams:
    return d.TrainingParams(
        strategy=strategy_from_proto(m.strategy),
        phase=phase_from_proto(m.phase),
        local_epochs=m.local_epochs,
        learning_rate=m.learning_rate,
        batch_size=m.batch_size,
        seed=m.seed,
        keep_optimizer_state=m.keep_optimizer_state,
        personalization=personalization_from_proto(m.personalization) if m.HasField("personalization") else None,
    )


def personalization_to_proto(h: d.HeadPersonalization) -> pb.HeadPersonalization:
    return pb.HeadPersonalization(epochs=h.epochs, learning_rate=h.learning_rate, prox=h.prox)


def personalization_from_proto(m: pb.HeadPersonalization) -> d.HeadPersonalization:
    return d.HeadPersonalization(epochs=m.epochs, learning_rate=m.learning_rate, prox=m.prox)


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
        min_per_partial=p.min_per_partial,
        mode=mode_to_proto(p.mode),
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
        min_per_partial=m.min_per_partial,
        mode=mode_from_proto(m.mode),
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
        mode=mode_to_proto(t.mode),
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
        mode=mode_from_proto(m.mode),
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
        site_evaluation=(site_evaluation_to_proto(q.site_evaluation) if q.site_evaluation is not None else None),
    )


def quality_from_proto(m: pb.QualityStats) -> d.Quality:
    return d.Quality(
        grad_snr=m.grad_snr,
        val_loss_before=m.val_loss_before,
        val_loss_after=m.val_loss_after,
        val_accuracy=m.val_accuracy,
        train_loss=m.train_loss,
        dpsgd_epsilon=m.dpsgd_epsilon,
        site_evaluation=site_evaluation_from_proto(m.site_evaluation) if m.HasField("site_evaluation") else None,
    )


def site_evaluation_to_proto(e: d.SiteEvaluation) -> pb.SiteEvaluation:
    return pb.SiteEvaluation(global_accuracy=e.global_accuracy, global_roc_auc=e.global_roc_auc,
                             personal_accuracy=e.personal_accuracy, personal_roc_auc=e.personal_roc_auc)


def site_evaluation_from_proto(m: pb.SiteEvaluation) -> d.SiteEvaluation:
    return d.SiteEvaluation(global_accuracy=m.global_accuracy, global_roc_auc=m.global_roc_auc,
                            personal_accuracy=m.personal_accuracy, personal_roc_auc=m.personal_roc_auc)


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
        max_length=sp.max_length, seed=sp.seed, strategy=strategy_to_proto(sp.strategy),
        warmup_rounds=sp.warmup_rounds,
        head=head_to_proto(sp.head),
    )


def federation_from_proto(name: str, m: pb.ModelSpec) -> d.FederationInfo:
    spec = LoRASpec(
        model=m.name_or_path, num_labels=m.num_labels, target_modules=tuple(m.target_modules), r_max=m.rank,
        alpha=m.alpha, dropout=m.dropout, max_length=m.max_length,
        strategy=strategy_from_proto(m.strategy),  # type: ignore[arg-type]
        warmup_rounds=m.warmup_rounds, seed=m.seed,
        head=head_from_proto(m.head),  # type: ignore[arg-type]
    )
    return d.FederationInfo(name=name, labels=tuple(m.labels), spec=spec)


def spec_to_proto(spec: LoRASpec) -> pb.ModelSpec:
    """A round's adapter spec (labels are the welcome's; left empty here)."""
    return federation_to_proto(d.FederationInfo(name="", labels=(), spec=spec))


def spec_from_proto(m: pb.ModelSpec) -> LoRASpec:
    return federation_from_proto("", m).spec


# -- signed statements and threshold decryption ----------------------------------------------


def signed_to_proto(s: d.SignedBytes) -> pb.SignedStatement:
    return pb.SignedStatement(statement=s.statement, signature=s.signature, certificate=s.certificate)


def signed_from_proto(m: pb.SignedStatement) -> d.SignedBytes:
    return d.SignedBytes(statement=m.statement, signature=m.signature, certificate=m.certificate)


def signed_or_none(m: pb.SignedStatement) -> d.SignedBytes | None:
    """``None`` for an absent (empty) statement."""
    return signed_from_proto(m) if m.statement else None


def evidence_from_proto(claim: pb.SignedStatement,
                        contributions: Iterable[pb.SignedStatement]) -> d.PartialEvidence | None:
    """An edge's evidence (None when it sent no partial claim)."""
    if not claim.statement:
        return None
    return d.PartialEvidence(signed_from_proto(claim), tuple(signed_from_proto(c) for c in contributions))


def decrypt_request_messages(req: d.DecryptRequest) -> list[pb.KeyHolderSessionResponse]:
    """A decrypt request as the messages of a key-holder session: begin, per partial its
    evidence and ciphertext chunks, commit."""
    msgs = [pb.KeyHolderSessionResponse(decrypt_begin=pb.DecryptBegin(
        request_id=req.request_id, round=req.round, phase=phase_to_proto(req.phase),
        mode=mode_to_proto(req.mode), min_clients=req.min_clients, min_per_partial=req.min_per_partial,
        adapter_version=req.adapter_version, max_staleness=req.max_staleness,
        staleness_exponent=req.staleness_exponent,
        assignments=[assignment_to_proto(a) for a in req.assignments], layout=req.layout,
        num_values=req.num_values, num_partials=len(req.partials)))]
    for i, (vec, ev) in enumerate(req.partials):
        out = outgoing(vec)
        msgs.append(pb.KeyHolderSessionResponse(decrypt_partial=pb.DecryptPartial(
            request_id=req.request_id, index=i, partial_claim=signed_to_proto(ev.claim),
            contribution_claims=[signed_to_proto(c) for c in ev.contributions],
            header=pb.CiphertextHeader(round=req.round, header=out.header, num_ciphertexts=out.num_ciphertexts),
            sha256=out.sha256)))
        msgs += [pb.KeyHolderSessionResponse(partial_chunk=pb.CiphertextChunk(round=req.round, offset=off, data=data))
                 for off, data in out.chunks]
    msgs.append(pb.KeyHolderSessionResponse(decrypt_commit=pb.DecryptCommit(request_id=req.request_id)))
    return msgs


def decrypt_begin_from_proto(m: pb.DecryptBegin) -> d.DecryptRequest:
    """The request's plan part (``partials`` empty: they follow in their own messages)."""
    return d.DecryptRequest(
        request_id=m.request_id, round=m.round, phase=phase_from_proto(m.phase), mode=mode_from_proto(m.mode),
        min_clients=m.min_clients, min_per_partial=m.min_per_partial, adapter_version=m.adapter_version,
        max_staleness=m.max_staleness, staleness_exponent=m.staleness_exponent,
        assignments=tuple(assignment_from_proto(a) for a in m.assignments), layout=m.layout,
        num_values=m.num_values, partials=())


def share_messages(request_id: int, round: int, blob: bytes) -> list[pb.KeyHolderSessionRequest]:
    """A serialized decryption share in chunks of at most 1 MiB."""
    sha = hashlib.sha256(blob).hexdigest()
    return [pb.KeyHolderSessionRequest(share_chunk=pb.DecryptionShareChunk(
        request_id=request_id, round=round, offset=off, data=data, total_size=len(blob), sha256=sha))
        for off, data in split_blob(blob)]


def refusal_message(request_id: int, round: int, code: int, reason: str, message: str) -> pb.KeyHolderSessionRequest:
    return pb.KeyHolderSessionRequest(refusal=pb.DecryptRefusal(
        request_id=request_id, round=round, status=status_to_proto(code, reason, message)))
