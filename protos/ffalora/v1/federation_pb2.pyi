from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Strategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRATEGY_UNSPECIFIED: _ClassVar[Strategy]
    STRATEGY_FFA: _ClassVar[Strategy]
    STRATEGY_FEDAVG: _ClassVar[Strategy]
    STRATEGY_ALTERNATING: _ClassVar[Strategy]

class TrainingPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAINING_PHASE_UNSPECIFIED: _ClassVar[TrainingPhase]
    TRAINING_PHASE_B: _ClassVar[TrainingPhase]
    TRAINING_PHASE_A: _ClassVar[TrainingPhase]
    TRAINING_PHASE_AB: _ClassVar[TrainingPhase]

class RoundMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUND_MODE_UNSPECIFIED: _ClassVar[RoundMode]
    ROUND_MODE_SYNC: _ClassVar[RoundMode]
    ROUND_MODE_ASYNC: _ClassVar[RoundMode]

class PrivacyMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIVACY_MODE_UNSPECIFIED: _ClassVar[PrivacyMode]
    PRIVACY_MODE_OFF: _ClassVar[PrivacyMode]
    PRIVACY_MODE_CENTRAL: _ClassVar[PrivacyMode]
    PRIVACY_MODE_DISTRIBUTED: _ClassVar[PrivacyMode]

class NoiseMechanism(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NOISE_MECHANISM_UNSPECIFIED: _ClassVar[NoiseMechanism]
    NOISE_MECHANISM_GAUSSIAN: _ClassVar[NoiseMechanism]
    NOISE_MECHANISM_LAPLACE: _ClassVar[NoiseMechanism]

class DpsgdOptimizer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DPSGD_OPTIMIZER_UNSPECIFIED: _ClassVar[DpsgdOptimizer]
    DPSGD_OPTIMIZER_ADAMW: _ClassVar[DpsgdOptimizer]
    DPSGD_OPTIMIZER_SGD: _ClassVar[DpsgdOptimizer]

class TaskHead(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_HEAD_UNSPECIFIED: _ClassVar[TaskHead]
    TASK_HEAD_POOLER: _ClassVar[TaskHead]
    TASK_HEAD_MEAN_LINEAR: _ClassVar[TaskHead]
STRATEGY_UNSPECIFIED: Strategy
STRATEGY_FFA: Strategy
STRATEGY_FEDAVG: Strategy
STRATEGY_ALTERNATING: Strategy
TRAINING_PHASE_UNSPECIFIED: TrainingPhase
TRAINING_PHASE_B: TrainingPhase
TRAINING_PHASE_A: TrainingPhase
TRAINING_PHASE_AB: TrainingPhase
ROUND_MODE_UNSPECIFIED: RoundMode
ROUND_MODE_SYNC: RoundMode
ROUND_MODE_ASYNC: RoundMode
PRIVACY_MODE_UNSPECIFIED: PrivacyMode
PRIVACY_MODE_OFF: PrivacyMode
PRIVACY_MODE_CENTRAL: PrivacyMode
PRIVACY_MODE_DISTRIBUTED: PrivacyMode
NOISE_MECHANISM_UNSPECIFIED: NoiseMechanism
NOISE_MECHANISM_GAUSSIAN: NoiseMechanism
NOISE_MECHANISM_LAPLACE: NoiseMechanism
DPSGD_OPTIMIZER_UNSPECIFIED: DpsgdOptimizer
DPSGD_OPTIMIZER_ADAMW: DpsgdOptimizer
DPSGD_OPTIMIZER_SGD: DpsgdOptimizer
TASK_HEAD_UNSPECIFIED: TaskHead
TASK_HEAD_POOLER: TaskHead
TASK_HEAD_MEAN_LINEAR: TaskHead

class Status(_message.Message):
    __slots__ = ("code", "message", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    reason: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PublicKey(_message.Message):
    __slots__ = ("n", "fingerprint", "key_bits")
    N_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    KEY_BITS_FIELD_NUMBER: _ClassVar[int]
    n: bytes
    fingerprint: str
    key_bits: int
    def __init__(self, n: _Optional[bytes] = ..., fingerprint: _Optional[str] = ..., key_bits: _Optional[int] = ...) -> None: ...

class ModelSpec(_message.Message):
    __slots__ = ("name_or_path", "num_labels", "labels", "target_modules", "rank", "alpha", "dropout", "max_length", "seed", "warmup_rounds", "strategy", "head")
    NAME_OR_PATH_FIELD_NUMBER: _ClassVar[int]
    NUM_LABELS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    WARMUP_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    name_or_path: str
    num_labels: int
    labels: _containers.RepeatedScalarFieldContainer[str]
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    rank: int
    alpha: float
    dropout: float
    max_length: int
    seed: int
    warmup_rounds: int
    strategy: Strategy
    head: TaskHead
    def __init__(self, name_or_path: _Optional[str] = ..., num_labels: _Optional[int] = ..., labels: _Optional[_Iterable[str]] = ..., target_modules: _Optional[_Iterable[str]] = ..., rank: _Optional[int] = ..., alpha: _Optional[float] = ..., dropout: _Optional[float] = ..., max_length: _Optional[int] = ..., seed: _Optional[int] = ..., warmup_rounds: _Optional[int] = ..., strategy: _Optional[_Union[Strategy, str]] = ..., head: _Optional[_Union[TaskHead, str]] = ...) -> None: ...

class SecureSumSpec(_message.Message):
    __slots__ = ("layout", "clip", "bits", "key_fingerprint")
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    layout: bytes
    clip: float
    bits: int
    key_fingerprint: str
    def __init__(self, layout: _Optional[bytes] = ..., clip: _Optional[float] = ..., bits: _Optional[int] = ..., key_fingerprint: _Optional[str] = ...) -> None: ...

class PrivacySpec(_message.Message):
    __slots__ = ("mode", "mechanism", "norm_clip", "noise_scale", "share_clients", "tolerated_dropouts", "dpsgd_noise_multiplier", "dpsgd_max_grad_norm", "dpsgd_delta", "dpsgd_optimizer", "dpsgd_learning_rate", "dpsgd_head_learning_rate", "dpsgd_expected_batch_size", "dpsgd_physical_batch_size", "dpsgd_momentum", "dpsgd_head_max_grad_norm", "dpsgd_head_epochs", "dpsgd_adapter_only")
    MODE_FIELD_NUMBER: _ClassVar[int]
    MECHANISM_FIELD_NUMBER: _ClassVar[int]
    NORM_CLIP_FIELD_NUMBER: _ClassVar[int]
    NOISE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SHARE_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    TOLERATED_DROPOUTS_FIELD_NUMBER: _ClassVar[int]
    DPSGD_NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    DPSGD_MAX_GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    DPSGD_DELTA_FIELD_NUMBER: _ClassVar[int]
    DPSGD_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    DPSGD_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    DPSGD_HEAD_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    DPSGD_EXPECTED_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    DPSGD_PHYSICAL_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    DPSGD_MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    DPSGD_HEAD_MAX_GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    DPSGD_HEAD_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    DPSGD_ADAPTER_ONLY_FIELD_NUMBER: _ClassVar[int]
    mode: PrivacyMode
    mechanism: NoiseMechanism
    norm_clip: float
    noise_scale: float
    share_clients: int
    tolerated_dropouts: int
    dpsgd_noise_multiplier: float
    dpsgd_max_grad_norm: float
    dpsgd_delta: float
    dpsgd_optimizer: DpsgdOptimizer
    dpsgd_learning_rate: float
    dpsgd_head_learning_rate: float
    dpsgd_expected_batch_size: int
    dpsgd_physical_batch_size: int
    dpsgd_momentum: float
    dpsgd_head_max_grad_norm: float
    dpsgd_head_epochs: float
    dpsgd_adapter_only: bool
    def __init__(self, mode: _Optional[_Union[PrivacyMode, str]] = ..., mechanism: _Optional[_Union[NoiseMechanism, str]] = ..., norm_clip: _Optional[float] = ..., noise_scale: _Optional[float] = ..., share_clients: _Optional[int] = ..., tolerated_dropouts: _Optional[int] = ..., dpsgd_noise_multiplier: _Optional[float] = ..., dpsgd_max_grad_norm: _Optional[float] = ..., dpsgd_delta: _Optional[float] = ..., dpsgd_optimizer: _Optional[_Union[DpsgdOptimizer, str]] = ..., dpsgd_learning_rate: _Optional[float] = ..., dpsgd_head_learning_rate: _Optional[float] = ..., dpsgd_expected_batch_size: _Optional[int] = ..., dpsgd_physical_batch_size: _Optional[int] = ..., dpsgd_momentum: _Optional[float] = ..., dpsgd_head_max_grad_norm: _Optional[float] = ..., dpsgd_head_epochs: _Optional[float] = ..., dpsgd_adapter_only: _Optional[bool] = ...) -> None: ...

class TrainingSpec(_message.Message):
    __slots__ = ("strategy", "phase", "local_epochs", "learning_rate", "batch_size", "seed", "keep_optimizer_state", "personalization")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    KEEP_OPTIMIZER_STATE_FIELD_NUMBER: _ClassVar[int]
    PERSONALIZATION_FIELD_NUMBER: _ClassVar[int]
    strategy: Strategy
    phase: TrainingPhase
    local_epochs: float
    learning_rate: float
    batch_size: int
    seed: int
    keep_optimizer_state: bool
    personalization: HeadPersonalization
    def __init__(self, strategy: _Optional[_Union[Strategy, str]] = ..., phase: _Optional[_Union[TrainingPhase, str]] = ..., local_epochs: _Optional[float] = ..., learning_rate: _Optional[float] = ..., batch_size: _Optional[int] = ..., seed: _Optional[int] = ..., keep_optimizer_state: _Optional[bool] = ..., personalization: _Optional[_Union[HeadPersonalization, _Mapping]] = ...) -> None: ...

class HeadPersonalization(_message.Message):
    __slots__ = ("epochs", "learning_rate", "prox")
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    PROX_FIELD_NUMBER: _ClassVar[int]
    epochs: int
    learning_rate: float
    prox: float
    def __init__(self, epochs: _Optional[int] = ..., learning_rate: _Optional[float] = ..., prox: _Optional[float] = ...) -> None: ...

class ClientAssignment(_message.Message):
    __slots__ = ("client_id", "rank", "weight", "num_values", "dpsgd_noise_multiplier")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    NUM_VALUES_FIELD_NUMBER: _ClassVar[int]
    DPSGD_NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    rank: int
    weight: int
    num_values: int
    dpsgd_noise_multiplier: float
    def __init__(self, client_id: _Optional[str] = ..., rank: _Optional[int] = ..., weight: _Optional[int] = ..., num_values: _Optional[int] = ..., dpsgd_noise_multiplier: _Optional[float] = ...) -> None: ...

class AdapterChunk(_message.Message):
    __slots__ = ("version", "offset", "data", "total_size", "sha256")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    version: int
    offset: int
    data: bytes
    total_size: int
    sha256: str
    def __init__(self, version: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total_size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class CiphertextHeader(_message.Message):
    __slots__ = ("round", "header", "num_ciphertexts")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    NUM_CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    round: int
    header: bytes
    num_ciphertexts: int
    def __init__(self, round: _Optional[int] = ..., header: _Optional[bytes] = ..., num_ciphertexts: _Optional[int] = ...) -> None: ...

class CiphertextChunk(_message.Message):
    __slots__ = ("round", "offset", "data")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    round: int
    offset: int
    data: bytes
    def __init__(self, round: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class SignedStatement(_message.Message):
    __slots__ = ("statement", "signature", "certificate")
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    statement: bytes
    signature: bytes
    certificate: bytes
    def __init__(self, statement: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., certificate: _Optional[bytes] = ...) -> None: ...

class QualityStats(_message.Message):
    __slots__ = ("grad_snr", "val_loss_before", "val_loss_after", "val_accuracy", "train_loss", "dpsgd_epsilon", "site_evaluation")
    GRAD_SNR_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_BEFORE_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_AFTER_FIELD_NUMBER: _ClassVar[int]
    VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    DPSGD_EPSILON_FIELD_NUMBER: _ClassVar[int]
    SITE_EVALUATION_FIELD_NUMBER: _ClassVar[int]
    grad_snr: float
    val_loss_before: float
    val_loss_after: float
    val_accuracy: float
    train_loss: float
    dpsgd_epsilon: float
    site_evaluation: SiteEvaluation
    def __init__(self, grad_snr: _Optional[float] = ..., val_loss_before: _Optional[float] = ..., val_loss_after: _Optional[float] = ..., val_accuracy: _Optional[float] = ..., train_loss: _Optional[float] = ..., dpsgd_epsilon: _Optional[float] = ..., site_evaluation: _Optional[_Union[SiteEvaluation, _Mapping]] = ...) -> None: ...

class SiteEvaluation(_message.Message):
    __slots__ = ("global_accuracy", "global_roc_auc", "personal_accuracy", "personal_roc_auc")
    GLOBAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_ROC_AUC_FIELD_NUMBER: _ClassVar[int]
    PERSONAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    PERSONAL_ROC_AUC_FIELD_NUMBER: _ClassVar[int]
    global_accuracy: float
    global_roc_auc: float
    personal_accuracy: float
    personal_roc_auc: float
    def __init__(self, global_accuracy: _Optional[float] = ..., global_roc_auc: _Optional[float] = ..., personal_accuracy: _Optional[float] = ..., personal_roc_auc: _Optional[float] = ...) -> None: ...

class ClientSessionRequest(_message.Message):
    __slots__ = ("hello", "update_begin", "update_chunk", "update_commit", "goodbye")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    UPDATE_BEGIN_FIELD_NUMBER: _ClassVar[int]
    UPDATE_CHUNK_FIELD_NUMBER: _ClassVar[int]
    UPDATE_COMMIT_FIELD_NUMBER: _ClassVar[int]
    GOODBYE_FIELD_NUMBER: _ClassVar[int]
    hello: ClientHello
    update_begin: UpdateBegin
    update_chunk: CiphertextChunk
    update_commit: UpdateCommit
    goodbye: ClientGoodbye
    def __init__(self, hello: _Optional[_Union[ClientHello, _Mapping]] = ..., update_begin: _Optional[_Union[UpdateBegin, _Mapping]] = ..., update_chunk: _Optional[_Union[CiphertextChunk, _Mapping]] = ..., update_commit: _Optional[_Union[UpdateCommit, _Mapping]] = ..., goodbye: _Optional[_Union[ClientGoodbye, _Mapping]] = ...) -> None: ...

class ClientSessionResponse(_message.Message):
    __slots__ = ("welcome", "adapter_chunk", "task", "ack", "shutdown")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_CHUNK_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    SHUTDOWN_FIELD_NUMBER: _ClassVar[int]
    welcome: EdgeWelcome
    adapter_chunk: AdapterChunk
    task: RoundTask
    ack: UpdateAck
    shutdown: Shutdown
    def __init__(self, welcome: _Optional[_Union[EdgeWelcome, _Mapping]] = ..., adapter_chunk: _Optional[_Union[AdapterChunk, _Mapping]] = ..., task: _Optional[_Union[RoundTask, _Mapping]] = ..., ack: _Optional[_Union[UpdateAck, _Mapping]] = ..., shutdown: _Optional[_Union[Shutdown, _Mapping]] = ...) -> None: ...

class ClientHello(_message.Message):
    __slots__ = ("num_samples", "adapter_version", "device", "agent_version", "has_adapter", "check_in_interval_s")
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    HAS_ADAPTER_FIELD_NUMBER: _ClassVar[int]
    CHECK_IN_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    num_samples: int
    adapter_version: int
    device: str
    agent_version: str
    has_adapter: bool
    check_in_interval_s: float
    def __init__(self, num_samples: _Optional[int] = ..., adapter_version: _Optional[int] = ..., device: _Optional[str] = ..., agent_version: _Optional[str] = ..., has_adapter: _Optional[bool] = ..., check_in_interval_s: _Optional[float] = ...) -> None: ...

class EdgeWelcome(_message.Message):
    __slots__ = ("edge_id", "region", "public_key", "federation", "model", "key_announcement")
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KEY_ANNOUNCEMENT_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    region: str
    public_key: PublicKey
    federation: str
    model: ModelSpec
    key_announcement: SignedStatement
    def __init__(self, edge_id: _Optional[str] = ..., region: _Optional[str] = ..., public_key: _Optional[_Union[PublicKey, _Mapping]] = ..., federation: _Optional[str] = ..., model: _Optional[_Union[ModelSpec, _Mapping]] = ..., key_announcement: _Optional[_Union[SignedStatement, _Mapping]] = ...) -> None: ...

class RoundTask(_message.Message):
    __slots__ = ("round", "adapter_version", "assignment", "secure_sum", "privacy", "training", "deadline_unix", "mode", "model")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    SECURE_SUM_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    round: int
    adapter_version: int
    assignment: ClientAssignment
    secure_sum: SecureSumSpec
    privacy: PrivacySpec
    training: TrainingSpec
    deadline_unix: float
    mode: RoundMode
    model: ModelSpec
    def __init__(self, round: _Optional[int] = ..., adapter_version: _Optional[int] = ..., assignment: _Optional[_Union[ClientAssignment, _Mapping]] = ..., secure_sum: _Optional[_Union[SecureSumSpec, _Mapping]] = ..., privacy: _Optional[_Union[PrivacySpec, _Mapping]] = ..., training: _Optional[_Union[TrainingSpec, _Mapping]] = ..., deadline_unix: _Optional[float] = ..., mode: _Optional[_Union[RoundMode, str]] = ..., model: _Optional[_Union[ModelSpec, _Mapping]] = ...) -> None: ...

class UpdateBegin(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: CiphertextHeader
    def __init__(self, header: _Optional[_Union[CiphertextHeader, _Mapping]] = ...) -> None: ...

class UpdateCommit(_message.Message):
    __slots__ = ("round", "sha256", "idempotency_key", "num_samples", "rank", "quality", "base_version", "train_seconds", "crypto_seconds", "contribution")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CRYPTO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    round: int
    sha256: str
    idempotency_key: str
    num_samples: int
    rank: int
    quality: QualityStats
    base_version: int
    train_seconds: float
    crypto_seconds: float
    contribution: SignedStatement
    def __init__(self, round: _Optional[int] = ..., sha256: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., num_samples: _Optional[int] = ..., rank: _Optional[int] = ..., quality: _Optional[_Union[QualityStats, _Mapping]] = ..., base_version: _Optional[int] = ..., train_seconds: _Optional[float] = ..., crypto_seconds: _Optional[float] = ..., contribution: _Optional[_Union[SignedStatement, _Mapping]] = ...) -> None: ...

class UpdateAck(_message.Message):
    __slots__ = ("round", "status", "idempotency_key")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    round: int
    status: Status
    idempotency_key: str
    def __init__(self, round: _Optional[int] = ..., status: _Optional[_Union[Status, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class ClientGoodbye(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Shutdown(_message.Message):
    __slots__ = ("reason", "finished")
    REASON_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    reason: str
    finished: bool
    def __init__(self, reason: _Optional[str] = ..., finished: _Optional[bool] = ...) -> None: ...

class EdgeSessionRequest(_message.Message):
    __slots__ = ("hello", "roster", "partial_begin", "partial_chunk", "partial_commit")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ROSTER_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_BEGIN_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_CHUNK_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_COMMIT_FIELD_NUMBER: _ClassVar[int]
    hello: EdgeHello
    roster: Roster
    partial_begin: PartialSumBegin
    partial_chunk: CiphertextChunk
    partial_commit: PartialSumCommit
    def __init__(self, hello: _Optional[_Union[EdgeHello, _Mapping]] = ..., roster: _Optional[_Union[Roster, _Mapping]] = ..., partial_begin: _Optional[_Union[PartialSumBegin, _Mapping]] = ..., partial_chunk: _Optional[_Union[CiphertextChunk, _Mapping]] = ..., partial_commit: _Optional[_Union[PartialSumCommit, _Mapping]] = ...) -> None: ...

class EdgeSessionResponse(_message.Message):
    __slots__ = ("welcome", "adapter_chunk", "plan", "ack", "shutdown")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_CHUNK_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    SHUTDOWN_FIELD_NUMBER: _ClassVar[int]
    welcome: CoordinatorWelcome
    adapter_chunk: AdapterChunk
    plan: RoundPlan
    ack: PartialSumAck
    shutdown: Shutdown
    def __init__(self, welcome: _Optional[_Union[CoordinatorWelcome, _Mapping]] = ..., adapter_chunk: _Optional[_Union[AdapterChunk, _Mapping]] = ..., plan: _Optional[_Union[RoundPlan, _Mapping]] = ..., ack: _Optional[_Union[PartialSumAck, _Mapping]] = ..., shutdown: _Optional[_Union[Shutdown, _Mapping]] = ...) -> None: ...

class EdgeHello(_message.Message):
    __slots__ = ("region", "adapter_version")
    REGION_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    region: str
    adapter_version: int
    def __init__(self, region: _Optional[str] = ..., adapter_version: _Optional[int] = ...) -> None: ...

class Roster(_message.Message):
    __slots__ = ("clients",)
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    clients: _containers.RepeatedCompositeFieldContainer[RosterEntry]
    def __init__(self, clients: _Optional[_Iterable[_Union[RosterEntry, _Mapping]]] = ...) -> None: ...

class RosterEntry(_message.Message):
    __slots__ = ("client_id", "num_samples", "device")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    num_samples: int
    device: str
    def __init__(self, client_id: _Optional[str] = ..., num_samples: _Optional[int] = ..., device: _Optional[str] = ...) -> None: ...

class CoordinatorWelcome(_message.Message):
    __slots__ = ("federation", "public_key", "model", "mode", "key_announcement")
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    KEY_ANNOUNCEMENT_FIELD_NUMBER: _ClassVar[int]
    federation: str
    public_key: PublicKey
    model: ModelSpec
    mode: RoundMode
    key_announcement: SignedStatement
    def __init__(self, federation: _Optional[str] = ..., public_key: _Optional[_Union[PublicKey, _Mapping]] = ..., model: _Optional[_Union[ModelSpec, _Mapping]] = ..., mode: _Optional[_Union[RoundMode, str]] = ..., key_announcement: _Optional[_Union[SignedStatement, _Mapping]] = ...) -> None: ...

class RoundPlan(_message.Message):
    __slots__ = ("round", "adapter_version", "assignments", "secure_sum", "privacy", "training", "deadline_unix", "min_clients", "num_values", "buffer_size", "model", "max_staleness", "staleness_exponent", "mode", "min_per_partial")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    SECURE_SUM_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_FIELD_NUMBER: _ClassVar[int]
    MIN_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    NUM_VALUES_FIELD_NUMBER: _ClassVar[int]
    BUFFER_SIZE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_FIELD_NUMBER: _ClassVar[int]
    STALENESS_EXPONENT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MIN_PER_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    round: int
    adapter_version: int
    assignments: _containers.RepeatedCompositeFieldContainer[ClientAssignment]
    secure_sum: SecureSumSpec
    privacy: PrivacySpec
    training: TrainingSpec
    deadline_unix: float
    min_clients: int
    num_values: int
    buffer_size: int
    model: ModelSpec
    max_staleness: int
    staleness_exponent: float
    mode: RoundMode
    min_per_partial: int
    def __init__(self, round: _Optional[int] = ..., adapter_version: _Optional[int] = ..., assignments: _Optional[_Iterable[_Union[ClientAssignment, _Mapping]]] = ..., secure_sum: _Optional[_Union[SecureSumSpec, _Mapping]] = ..., privacy: _Optional[_Union[PrivacySpec, _Mapping]] = ..., training: _Optional[_Union[TrainingSpec, _Mapping]] = ..., deadline_unix: _Optional[float] = ..., min_clients: _Optional[int] = ..., num_values: _Optional[int] = ..., buffer_size: _Optional[int] = ..., model: _Optional[_Union[ModelSpec, _Mapping]] = ..., max_staleness: _Optional[int] = ..., staleness_exponent: _Optional[float] = ..., mode: _Optional[_Union[RoundMode, str]] = ..., min_per_partial: _Optional[int] = ...) -> None: ...

class PartialSumBegin(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: CiphertextHeader
    def __init__(self, header: _Optional[_Union[CiphertextHeader, _Mapping]] = ...) -> None: ...

class Contribution(_message.Message):
    __slots__ = ("client_id", "rank", "weight", "num_samples", "quality", "base_version", "train_seconds", "crypto_seconds", "bytes_uploaded", "values_uploaded")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CRYPTO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_UPLOADED_FIELD_NUMBER: _ClassVar[int]
    VALUES_UPLOADED_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    rank: int
    weight: int
    num_samples: int
    quality: QualityStats
    base_version: int
    train_seconds: float
    crypto_seconds: float
    bytes_uploaded: int
    values_uploaded: int
    def __init__(self, client_id: _Optional[str] = ..., rank: _Optional[int] = ..., weight: _Optional[int] = ..., num_samples: _Optional[int] = ..., quality: _Optional[_Union[QualityStats, _Mapping]] = ..., base_version: _Optional[int] = ..., train_seconds: _Optional[float] = ..., crypto_seconds: _Optional[float] = ..., bytes_uploaded: _Optional[int] = ..., values_uploaded: _Optional[int] = ...) -> None: ...

class PartialSumCommit(_message.Message):
    __slots__ = ("round", "sha256", "contributions", "idempotency_key", "partial_claim", "contribution_claims")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_CLAIM_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_CLAIMS_FIELD_NUMBER: _ClassVar[int]
    round: int
    sha256: str
    contributions: _containers.RepeatedCompositeFieldContainer[Contribution]
    idempotency_key: str
    partial_claim: SignedStatement
    contribution_claims: _containers.RepeatedCompositeFieldContainer[SignedStatement]
    def __init__(self, round: _Optional[int] = ..., sha256: _Optional[str] = ..., contributions: _Optional[_Iterable[_Union[Contribution, _Mapping]]] = ..., idempotency_key: _Optional[str] = ..., partial_claim: _Optional[_Union[SignedStatement, _Mapping]] = ..., contribution_claims: _Optional[_Iterable[_Union[SignedStatement, _Mapping]]] = ...) -> None: ...

class PartialSumAck(_message.Message):
    __slots__ = ("round", "status", "idempotency_key")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    round: int
    status: Status
    idempotency_key: str
    def __init__(self, round: _Optional[int] = ..., status: _Optional[_Union[Status, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class KeyHolderSessionRequest(_message.Message):
    __slots__ = ("hello", "share_chunk", "refusal")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    SHARE_CHUNK_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    hello: KeyHolderHello
    share_chunk: DecryptionShareChunk
    refusal: DecryptRefusal
    def __init__(self, hello: _Optional[_Union[KeyHolderHello, _Mapping]] = ..., share_chunk: _Optional[_Union[DecryptionShareChunk, _Mapping]] = ..., refusal: _Optional[_Union[DecryptRefusal, _Mapping]] = ...) -> None: ...

class KeyHolderSessionResponse(_message.Message):
    __slots__ = ("welcome", "decrypt_begin", "decrypt_partial", "partial_chunk", "decrypt_commit", "shutdown")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    DECRYPT_BEGIN_FIELD_NUMBER: _ClassVar[int]
    DECRYPT_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_CHUNK_FIELD_NUMBER: _ClassVar[int]
    DECRYPT_COMMIT_FIELD_NUMBER: _ClassVar[int]
    SHUTDOWN_FIELD_NUMBER: _ClassVar[int]
    welcome: KeyHolderWelcome
    decrypt_begin: DecryptBegin
    decrypt_partial: DecryptPartial
    partial_chunk: CiphertextChunk
    decrypt_commit: DecryptCommit
    shutdown: Shutdown
    def __init__(self, welcome: _Optional[_Union[KeyHolderWelcome, _Mapping]] = ..., decrypt_begin: _Optional[_Union[DecryptBegin, _Mapping]] = ..., decrypt_partial: _Optional[_Union[DecryptPartial, _Mapping]] = ..., partial_chunk: _Optional[_Union[CiphertextChunk, _Mapping]] = ..., decrypt_commit: _Optional[_Union[DecryptCommit, _Mapping]] = ..., shutdown: _Optional[_Union[Shutdown, _Mapping]] = ...) -> None: ...

class KeyHolderHello(_message.Message):
    __slots__ = ("params_fingerprint",)
    PARAMS_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    params_fingerprint: str
    def __init__(self, params_fingerprint: _Optional[str] = ...) -> None: ...

class KeyHolderWelcome(_message.Message):
    __slots__ = ("federation", "params_fingerprint")
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    federation: str
    params_fingerprint: str
    def __init__(self, federation: _Optional[str] = ..., params_fingerprint: _Optional[str] = ...) -> None: ...

class DecryptBegin(_message.Message):
    __slots__ = ("request_id", "round", "phase", "mode", "min_clients", "min_per_partial", "adapter_version", "max_staleness", "staleness_exponent", "assignments", "layout", "num_values", "num_partials")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MIN_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    MIN_PER_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_FIELD_NUMBER: _ClassVar[int]
    STALENESS_EXPONENT_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    NUM_VALUES_FIELD_NUMBER: _ClassVar[int]
    NUM_PARTIALS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    round: int
    phase: TrainingPhase
    mode: RoundMode
    min_clients: int
    min_per_partial: int
    adapter_version: int
    max_staleness: int
    staleness_exponent: float
    assignments: _containers.RepeatedCompositeFieldContainer[ClientAssignment]
    layout: bytes
    num_values: int
    num_partials: int
    def __init__(self, request_id: _Optional[int] = ..., round: _Optional[int] = ..., phase: _Optional[_Union[TrainingPhase, str]] = ..., mode: _Optional[_Union[RoundMode, str]] = ..., min_clients: _Optional[int] = ..., min_per_partial: _Optional[int] = ..., adapter_version: _Optional[int] = ..., max_staleness: _Optional[int] = ..., staleness_exponent: _Optional[float] = ..., assignments: _Optional[_Iterable[_Union[ClientAssignment, _Mapping]]] = ..., layout: _Optional[bytes] = ..., num_values: _Optional[int] = ..., num_partials: _Optional[int] = ...) -> None: ...

class DecryptPartial(_message.Message):
    __slots__ = ("request_id", "index", "partial_claim", "contribution_claims", "header", "sha256")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_CLAIM_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_CLAIMS_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    index: int
    partial_claim: SignedStatement
    contribution_claims: _containers.RepeatedCompositeFieldContainer[SignedStatement]
    header: CiphertextHeader
    sha256: str
    def __init__(self, request_id: _Optional[int] = ..., index: _Optional[int] = ..., partial_claim: _Optional[_Union[SignedStatement, _Mapping]] = ..., contribution_claims: _Optional[_Iterable[_Union[SignedStatement, _Mapping]]] = ..., header: _Optional[_Union[CiphertextHeader, _Mapping]] = ..., sha256: _Optional[str] = ...) -> None: ...

class DecryptCommit(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    def __init__(self, request_id: _Optional[int] = ...) -> None: ...

class DecryptionShareChunk(_message.Message):
    __slots__ = ("request_id", "round", "offset", "data", "total_size", "sha256")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    round: int
    offset: int
    data: bytes
    total_size: int
    sha256: str
    def __init__(self, request_id: _Optional[int] = ..., round: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total_size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class DecryptRefusal(_message.Message):
    __slots__ = ("request_id", "round", "status")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    round: int
    status: Status
    def __init__(self, request_id: _Optional[int] = ..., round: _Optional[int] = ..., status: _Optional[_Union[Status, _Mapping]] = ...) -> None: ...
