"""Threshold decryption and signed evidence without a network, for handler tests and fuzzing.

:func:`local_threshold` makes a federation CA, a test-only 512-bit 2-of-3 threshold key, the
coordinator's :class:`~services.cloud_coordinator.decryption.ThresholdDecryption` and key
holders that answer in this process (:class:`LocalHolderLink`: the same
:class:`~services.key_holder.handlers.KeyHolder` checks as a key-holder process, minus the
stream). :class:`LocalThreshold.sign_partial` signs a partial sum the way clients and an edge
do, with certificates of that CA.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ffa_lora.crypto import CiphertextVector, RunningSum
from ffa_lora.crypto.canonical import vector_digest
from ffa_lora.crypto.signing import ContributionClaim, PartialClaim, contributors_of
from ffa_lora.crypto.threshold import Ceremony, deal
from services.cloud_coordinator.decryption import ThresholdDecryption
from services.common import domain as d
from services.common.certs import TLSFiles, init_ca, issue_certificate
from services.common.evidence import Signer
from services.common.metrics import create_metrics
from services.common.rejections import Rejection, as_rejection
from services.key_holder.handlers import HolderPolicy, KeyHolder
from services.key_holder.store import MemoryHolderStore

__all__ = ["KEY_HOLDERS", "LocalHolderLink", "LocalThreshold", "local_threshold"]

KEY_HOLDERS = ("keyholder/keyholder-1", "keyholder/keyholder-2")
TRUST_DOMAIN = "ffa-lora"


class LocalHolderLink:
    """A key holder in this process: it answers a request at once, in the caller's thread."""

    def __init__(self, holder: KeyHolder, decryption: ThresholdDecryption) -> None:
        self.holder, self.decryption = holder, decryption
        self.requests: list[d.DecryptRequest] = []
        self.online = True

    def send(self, request: d.DecryptRequest) -> None:
        self.requests.append(request)
        if not self.online:
            return
        try:
            share = self.holder.answer(request)
        except Rejection as exc:
            rej = as_rejection(exc)
            self.decryption.on_refusal(self.holder.holder, request.request_id, rej.reason, rej.message)
            return
        self.decryption.on_share(self.holder.holder, request.request_id, share.to_bytes(self.holder.params))


@dataclass
class LocalThreshold:
    """A CA, a threshold key and its holders, all in this process."""

    certs: Path
    federation: str
    ceremony: Ceremony
    decryption: ThresholdDecryption
    holders: dict[str, KeyHolder]
    links: dict[str, LocalHolderLink]
    _signers: dict[tuple[str, str], Signer] = field(default_factory=dict)

    def signer(self, role: str, ident: str) -> Signer:
        """The signer of ``role``/``ident`` (its certificate issued on first use)."""
        key = (role, ident)
        if key not in self._signers:
            files = TLSFiles.for_identity(self.certs, role=role, id=ident)
            if not files.cert.exists():
                issue_certificate(self.certs, self.certs, role=role, id=ident)
            self._signers[key] = Signer(files.load())
        return self._signers[key]

    def sign_partial(self, edge_id: str, updates: Mapping[str, tuple[CiphertextVector, d.Assignment]], *,
                     round: int, phase: str, adapter_version: int = 0,
                     listed: Mapping[str, int] | None = None, base_versions: Mapping[str, int] | None = None,
                     ) -> tuple[CiphertextVector, d.PartialEvidence]:
        """The partial sum of ``updates`` (client -> (its encrypted update, its assignment)) and its
        evidence, signed as the clients and edge ``edge_id`` sign them. ``listed``: the weights the
        edge multiplies by (default: the assignments')."""
        first = next(iter(updates.values()))[0]
        total = RunningSum(first.public_key, first.layout, first.num_values)
        claims, weights = [], []
        for cid, (vec, a) in sorted(updates.items()):
            weight = (listed or {}).get(cid, a.weight)
            total.add_vector(vec, weight=weight)
            claim = ContributionClaim.for_vector(vec, federation=self.federation, client_id=cid, round=round,
                                                 phase=phase, rank=a.rank, weight=a.weight,
                                                 base_version=(base_versions or {}).get(cid, 0))
            claims.append((claim, self.signer("client", cid).sign(claim.canonical_bytes())))
            weights.append(weight)
        vec = total.result()
        pc = PartialClaim(self.federation, edge_id, round, phase, vec.fingerprint, vector_digest(vec),
                          vec.weight_total, contributors_of([c for c, _ in claims], weights),
                          adapter_version=adapter_version)
        signed = self.signer("edge", edge_id).sign(pc.canonical_bytes())
        return vec, d.PartialEvidence(signed, tuple(sb for _, sb in claims))

    def close(self) -> None:
        self.decryption.close()
        for h in self.holders.values():
            h.close()


def local_threshold(root: Path, *, federation: str, min_clients: int, min_per_partial: int = 1,
                    max_weight: int = 16, ceremony: Ceremony | None = None) -> LocalThreshold:
    """A 2-of-3 test-only threshold key (coordinator + :data:`KEY_HOLDERS`) whose key holders
    answer in this process. Pass ``ceremony`` to reuse a key dealt earlier."""
    certs = Path(root) / "certs"
    if not (certs / "ca.crt").exists():
        init_ca(certs, federation=TRUST_DOMAIN)
    ceremony = ceremony or deal(holders=["coordinator/coordinator", *KEY_HOLDERS], threshold=2, bits=512,
                                test_only=True, workers=0, isolate=False)  # TEST-ONLY key size
    ca = Signer(_files(certs, "coordinator", "coordinator").load()).ca_certificate
    policy = HolderPolicy(federation=federation, min_clients=min_clients, min_per_partial=min_per_partial,
                          max_weight=max_weight)

    def holder(name: str, service: str) -> KeyHolder:
        return KeyHolder(share=ceremony.share_for(name), policy=policy, store=MemoryHolderStore(),
                         ca_certificate=ca, trust_domain=TRUST_DOMAIN, metrics=create_metrics(service), workers=0)

    own = holder("coordinator/coordinator", "coordinator")
    decryption = ThresholdDecryption(params=ceremony.params, own=own, metrics=own.metrics, timeout_s=30, workers=0)
    holders, links = {}, {}
    for name in KEY_HOLDERS:
        holders[name] = holder(name, "keyholder")
        links[name] = LocalHolderLink(holders[name], decryption)
        decryption.connect(name, links[name])
    return LocalThreshold(certs, federation, ceremony, decryption, holders, links)


def _files(certs: Path, role: str, ident: str) -> TLSFiles:
    files = TLSFiles.for_identity(certs, role=role, id=ident)
    if not files.cert.exists():
        issue_certificate(certs, certs, role=role, id=ident)
    return files
