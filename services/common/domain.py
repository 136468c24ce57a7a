"""Plain domain objects that cross the service boundaries (converted to and from protobuf in
``services.common.serde``). Handlers work on these, never on generated classes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ffa_lora.crypto.vector import CiphertextVector
from ffa_lora.lora.spec import LoRASpec


@dataclass(frozen=True)
class FederationInfo:
    """What every participant must agree on: the federation's name, labels and adapter."""

    name: str
    labels: tuple[str, ...]
    spec: LoRASpec


@dataclass(frozen=True)
class Assignment:
    """One client's part of a round: rank, integer weight, number of values it uploads and, under
    DP-SGD, its own noise multiplier (0: the round's ``PrivacyParams.dpsgd_noise_multiplier``)."""

    client_id: str
    rank: int
    weight: int
    num_values: int
    dpsgd_noise_multiplier: float = 0.0


@dataclass(frozen=True)
class SecureSumParams:
    layout: bytes
    clip: float
    bits: int
    key_fingerprint: str


@dataclass(frozen=True)
class PrivacyParams:
    mode: str = "off"
    mechanism: str = "gaussian"
    norm_clip: float = 0.0
    noise_scale: float = 0.0
    share_clients: int = 0
    tolerated_dropouts: int = 0
    dpsgd_noise_multiplier: float = 0.0
    dpsgd_max_grad_norm: float = 0.0
    dpsgd_delta: float = 0.0
    dpsgd_optimizer: str = ""
    dpsgd_learning_rate: float = 0.0
    dpsgd_head_learning_rate: float = 0.0
    dpsgd_expected_batch_size: int = 0
    dpsgd_physical_batch_size: int = 0
    dpsgd_momentum: float = 0.0
    dpsgd_head_max_grad_norm: float = 0.0
    dpsgd_head_epochs: float = 0.0
    dpsgd_adapter_only: bool = False


@dataclass(frozen=True)
class HeadPersonalization:
    """How a client fits its personal task head in a round that asks for one."""

    epochs: int
    learning_rate: float
    prox: float


@dataclass(frozen=True)
class TrainingParams:
    strategy: str
    phase: str
    local_epochs: float
    learning_rate: float
    batch_size: int
    seed: int
    keep_optimizer_state: bool = False
    # Set on evaluation rounds under ``training.personalization: head``; None: no head fitting.
    personalization: HeadPersonalization | None = None


@dataclass(frozen=True)
class RoundPlan:
    """What the coordinator tells one edge about a round."""

    round: int
    adapter_version: int
    assignments: tuple[Assignment, ...]
    secure_sum: SecureSumParams
    privacy: PrivacyParams
    training: TrainingParams
    deadline_unix: float
    min_clients: int
    mode: str
    num_values: int
    buffer_size: int = 1
    max_staleness: int = 0
    staleness_exponent: float = 0.5
    # The adapter of this round (rank and alpha change when the coordinator reduces the rank).
    spec: LoRASpec | None = None
    # The edge forwards no partial sum of fewer clients than this (nor than its own floor).
    min_per_partial: int = 1

    def assignment_for(self, client_id: str) -> Assignment | None:
        for a in self.assignments:
            if a.client_id == client_id:
                return a
        return None

    def task_for(self, assignment: Assignment) -> RoundTask:
        """The task an edge forwards to the client of ``assignment`` in this round; a client with
        its own DP-SGD noise multiplier gets it in the task's privacy parameters."""
        privacy = self.privacy
        if assignment.dpsgd_noise_multiplier > 0 and privacy.dpsgd_noise_multiplier > 0:
            privacy = dataclasses.replace(privacy, dpsgd_noise_multiplier=assignment.dpsgd_noise_multiplier)
        return RoundTask(
            round=self.round, adapter_version=self.adapter_version, assignment=assignment,
            secure_sum=self.secure_sum, privacy=privacy, training=self.training,
            deadline_unix=self.deadline_unix, mode=self.mode, spec=self.spec,
        )


@dataclass(frozen=True)
class RoundTask:
    """What an edge tells one client about a round."""

    round: int
    adapter_version: int
    assignment: Assignment
    secure_sum: SecureSumParams
    privacy: PrivacyParams
    training: TrainingParams
    deadline_unix: float
    mode: str
    # The adapter to train (None: keep the one from the welcome).
    spec: LoRASpec | None = None


@dataclass(frozen=True)
class SiteEvaluation:
    """A site's validation scores of the received global adapter with the global head and
    with its own personalized head (the head itself never leaves the site)."""

    global_accuracy: float
    global_roc_auc: float
    personal_accuracy: float
    personal_roc_auc: float


@dataclass(frozen=True)
class Quality:
    grad_snr: float = 0.0
    val_loss_before: float = 0.0
    val_loss_after: float = 0.0
    val_accuracy: float = 0.0
    train_loss: float = 0.0
    dpsgd_epsilon: float = 0.0
    site_evaluation: SiteEvaluation | None = None


@dataclass(frozen=True)
class Contribution:
    """One client's update as counted by an edge (plaintext metadata only)."""

    client_id: str
    rank: int
    weight: int
    num_samples: int
    quality: Quality = field(default_factory=Quality)
    base_version: int = 0
    train_seconds: float = 0.0
    crypto_seconds: float = 0.0
    bytes_uploaded: int = 0
    values_uploaded: int = 0


@dataclass(frozen=True)
class RosterEntry:
    client_id: str
    num_samples: int
    device: str = "cpu"


@dataclass(frozen=True)
class SignedBytes:
    """A statement a federation party signed: its canonical bytes, the signature and the
    signer's certificate (DER). See :mod:`services.common.evidence`."""

    statement: bytes
    signature: bytes
    certificate: bytes


@dataclass(frozen=True)
class PartialEvidence:
    """What an edge sends with a partial sum: its signed partial claim and the signed claim of
    every client it lists."""

    claim: SignedBytes
    contributions: tuple[SignedBytes, ...]


@dataclass(frozen=True)
class DecryptRequest:
    """A request for one key holder's decryption share of a round's global sum.

    The holder multiplies ``partials`` itself and decrypts only their product, after checking
    the evidence against the round plan (``assignments``, quorum, floors) and its own policy.
    """

    request_id: int
    round: int
    phase: str
    mode: str
    min_clients: int
    min_per_partial: int
    adapter_version: int
    max_staleness: int
    staleness_exponent: float
    assignments: tuple[Assignment, ...]
    layout: bytes
    num_values: int
    partials: tuple[tuple[CiphertextVector, PartialEvidence], ...]
