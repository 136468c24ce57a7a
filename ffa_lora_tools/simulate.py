"""A federation in one process, without the crypto and the network: what the services compute,
for benchmarks that need many runs (``ffa-lora bench sites``).

Each round every site loads the global adapter, trains its share of local epochs from it as a
client agent does (:class:`~services.client_agent.trainer.LocalTrainer`: its own AdamW state
and data cursor kept from round to round, a per-round seed derived from the federation seed,
the round number and the site), and its update is clipped to the secure sum's range and
quantized with stochastic rounding like a real upload. The server side is the coordinator's:
integer weights from the sites' sizes (the coordinator's default policy), the weighted code
sums divided per position by the weight totals (:meth:`~ffa_lora.crypto.Quantizer.dequantize_mean`),
the mean applied with the server learning rate, the clients' learning rate from the
configured schedule. What is left out is exact by construction: Paillier addition of packed
codes returns the same integer sums, so the aggregate here equals the decrypted one of the
services (up to the stochastic rounding draws).

Not simulated: de-identification, the clients' validation hold-out (every site trains on all
of its data, as ``ffa-lora bench quality`` arranges for the real federation), dynamic ranks,
differential privacy, dropouts and asynchronous rounds.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ffa_lora.crypto.quantize import Quantizer
from ffa_lora.data.dataset import Dataset
from ffa_lora.errors import ConfigError
from ffa_lora.lora import LoRASpec, UpdateLayout, apply_mean_update
from ffa_lora.lora.model import LoRAModel, get_adapter_state, load_adapter_state
from ffa_lora.lora.train import DataCursor, OptimizerState, RunOptions, TrainOptions, train_local
from services.common.config import TrainingConfig

#: ``on_round(round_number, model)``: the model holds the global adapter after that round.
RoundHook = Callable[[int, LoRAModel], None]


@dataclass(frozen=True)
class SimulationSettings:
    """The federation's training settings (the fields of the coordinator's ``training`` and
    ``secure_sum`` blocks that change the result).

    Attributes:
        rounds: rounds to run (no early stop).
        local_epochs: each site's epochs of its own data per round.
        learning_rate: the clients' AdamW rate (first round's, under a schedule).
        server_learning_rate: the step the coordinator takes along the mean update.
        lr_schedule: ``constant`` or ``cosine`` (down to ``min_lr_fraction``).
        batch_size: local minibatch size.
        keep_optimizer_state: sites continue their AdamW state across rounds (the default of
            the services).
        clip, bits: the secure sum's per-coordinate range and code width; ``bits=None`` skips
            the quantization (a plaintext mean).
        max_weight: the largest integer weight (the largest site gets it).
        seed: the federation seed (per-round seeds derive from it).
    """

    rounds: int
    local_epochs: float = 0.5
    learning_rate: float = 5e-3
    server_learning_rate: float = 1.0
    lr_schedule: str = "constant"
    min_lr_fraction: float = 0.1
    batch_size: int = 16
    keep_optimizer_state: bool = True
    clip: float = 0.5
    bits: int | None = 8
    max_weight: int = 16
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.rounds < 1 or not self.local_epochs > 0 or not self.server_learning_rate > 0:
            raise ConfigError(f"rounds >= 1, local_epochs > 0 and server_learning_rate > 0 are needed "
                              f"(got {self.rounds}, {self.local_epochs}, {self.server_learning_rate})")

    def schedule(self) -> TrainingConfig:
        """The learning-rate schedule, as the coordinator's config computes it."""
        return TrainingConfig(learning_rate=self.learning_rate, lr_schedule=self.lr_schedule,  # type: ignore[arg-type]
                              min_lr_fraction=self.min_lr_fraction)


@dataclass
class SimulationResult:
    """The global adapter after the last round and what the rounds cost.

    Attributes:
        state: the final global adapter.
        rounds: per round: the phase, the clients' learning rate, the median training loss and
            the summed training seconds.
        train_seconds: wall seconds of local training, all sites and rounds.
        train_cpu_seconds: CPU seconds of this process during local training (one torch thread:
            the compute a site spends, whatever else shares the machine).
        weights: the sites' integer aggregation weights.
    """

    state: dict[str, np.ndarray]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    train_cpu_seconds: float = 0.0
    weights: dict[str, int] = field(default_factory=dict)


def integer_weights(sizes: Mapping[str, int], max_weight: int) -> dict[str, int]:
    """``max(1, min(W, round(W · n / n_max)))`` per site: the coordinator's default weights."""
    n_max = max(max(sizes.values()), 1)
    return {s: max(1, min(max_weight, round(max_weight * n / n_max))) for s, n in sizes.items()}


def round_seed(federation_seed: int, round_number: int, site: str) -> int:
    """The seed a client derives for one round (the client agent's formula, site as its id)."""
    text = f"{federation_seed * 1_000_003 + round_number}:site-{site}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def simulate_federation(model: LoRAModel, parts: Mapping[str, Dataset], settings: SimulationSettings, *,
                        on_round: RoundHook | None = None, num_threads: int | None = None) -> SimulationResult:
    """Run the federation on ``model`` (which holds the initial global adapter).

    ``parts``: each site's training data. ``on_round(r, model)`` runs after round ``r`` (1-based)
    with the model holding the new global adapter. On return the model holds the final one.
    """
    if not parts:
        raise ConfigError("a federation needs at least one site")
    spec: LoRASpec = model.spec
    glob = get_adapter_state(model)
    weights = integer_weights({s: len(d) for s, d in parts.items()}, settings.max_weight)
    quantizer = Quantizer(clip=settings.clip, bits=settings.bits) if settings.bits else None
    schedule = settings.schedule()
    optimizer: dict[tuple[str, str], OptimizerState | None] = {}
    cursors: dict[str, DataCursor] = {}
    result = SimulationResult(state=glob, weights=weights)
    for index in range(settings.rounds):
        number = index + 1
        phase = spec.phase(index)
        lr = schedule.learning_rate_at(index, settings.rounds)
        layout = UpdateLayout.build(glob, phase=phase)
        code_sum = np.zeros(layout.total_len, dtype=np.float64)
        losses, seconds = [], 0.0
        for site, data in parts.items():
            load_adapter_state(model, glob)
            seed = round_seed(settings.seed, number, site)
            cursors.setdefault(site, DataCursor(seed=seed, n=len(data)))
            t0, c0 = time.perf_counter(), time.process_time()
            res = train_local(model, data,
                              TrainOptions(epochs=settings.local_epochs, lr=lr, batch_size=settings.batch_size,
                                           phase=phase, seed=seed),
                              run=RunOptions(loss_samples=0, num_threads=num_threads),
                              optimizer_state=optimizer.get((site, phase)) if settings.keep_optimizer_state else None,
                              cursor=cursors[site])
            seconds += time.perf_counter() - t0
            result.train_cpu_seconds += time.process_time() - c0
            optimizer[(site, phase)] = res.optimizer_state
            if res.cursor is not None:
                cursors[site] = res.cursor
            code_sum += weights[site] * _codes(res.delta, quantizer, seed)
            losses.append(res.train_loss)
        total = float(sum(weights.values()))
        mean = (quantizer.dequantize_mean(code_sum, total) if quantizer is not None
                else (code_sum / total).astype(np.float32))
        glob = apply_mean_update(glob, mean, layout, server_lr=settings.server_learning_rate)
        load_adapter_state(model, glob)
        result.train_seconds += seconds
        result.rounds.append({"round": number, "phase": phase, "learning_rate": lr,
                              "median_train_loss": float(np.median(losses)), "train_seconds": seconds})
        if on_round is not None:
            on_round(number, model)
            load_adapter_state(model, glob)
    result.state = glob
    return result


def _codes(delta: np.ndarray, quantizer: Quantizer | None, seed: int) -> np.ndarray:
    """One site's upload before encryption: quantized codes, or the values themselves."""
    if quantizer is None:
        return np.asarray(delta, dtype=np.float64)
    return quantizer.quantize(delta, rng=np.random.default_rng([seed, 0x51])).astype(np.float64)
