"""Differential privacy for the federation: clipping, noise mechanisms, the ε schedule and
plan, the accountant (Google dp-accounting, PLD with an RDP cross-check), the write-ahead
ledger, distributed noise shares, and client-side DP-SGD (Opacus).

Modules:
    clipping      L1/L2 norm clipping of a client update.
    sensitivity   neighbouring relation (add/remove one client) and Δ of the weighted mean.
    mechanisms    Laplace and Gaussian noise on the aggregate (registry by name).
    events        PrivacyEvent: one release as the accountant and ledger record it.
    accountant    PLD / RDP accountants over dp-accounting (registry by name).
    schedule      per-round ε schedule and plan_privacy() → PrivacyPlan.
    ledger        write-ahead PrivacyLedger and LedgerEntry.
    distributed   per-client noise shares and quantization headroom.
    rounding      stochastic rounding with a bounded norm (C + β) after clipping.
    round_noise   one round's noise plan and the noise a decrypted sum actually carries.
    rng           OS-CSPRNG noise source (and a seeded one for tests).
    dp_sgd        Opacus DP-SGD helper (imports torch; import it explicitly).
"""

from ffa_lora.privacy.accountant import (
    ACCOUNTANTS,
    PLDPrivacyAccountant,
    PrivacyAccountant,
    RDPPrivacyAccountant,
    cross_check,
    epsilon_of,
    make_accountant,
    register_accountant,
)
from ffa_lora.privacy.clipping import ClipResult, clip_by_norm, clip_l1, clip_l2, vector_norm
from ffa_lora.privacy.distributed import (
    NoiseHeadroom,
    aggregate_noise_std,
    check_survivors,
    min_contributors,
    noise_headroom,
    noise_share,
    share_std,
)
from ffa_lora.privacy.events import MECHANISM_NAMES, PrivacyEvent
from ffa_lora.privacy.ledger import LedgerEntry, PrivacyLedger
from ffa_lora.privacy.mechanisms import (
    MECHANISMS,
    GaussianMechanism,
    LaplaceMechanism,
    NoiseMechanism,
    get_mechanism,
)
from ffa_lora.privacy.rng import NoiseSource, SeededNoiseSource, SystemNoiseSource
from ffa_lora.privacy.schedule import PrivacyPlan, RoundPlan, plan_privacy, schedule_weights
from ffa_lora.privacy.sensitivity import mean_sensitivity, sum_sensitivity

__all__ = [
    "ACCOUNTANTS",
    "MECHANISMS",
    "MECHANISM_NAMES",
    "ClipResult",
    "GaussianMechanism",
    "LaplaceMechanism",
    "LedgerEntry",
    "NoiseHeadroom",
    "NoiseMechanism",
    "NoiseSource",
    "PLDPrivacyAccountant",
    "PrivacyAccountant",
    "PrivacyEvent",
    "PrivacyLedger",
    "PrivacyPlan",
    "RDPPrivacyAccountant",
    "RoundPlan",
    "SeededNoiseSource",
    "SystemNoiseSource",
    "aggregate_noise_std",
    "check_survivors",
    "clip_by_norm",
    "clip_l1",
    "clip_l2",
    "cross_check",
    "epsilon_of",
    "get_mechanism",
    "make_accountant",
    "mean_sensitivity",
    "min_contributors",
    "noise_headroom",
    "noise_share",
    "plan_privacy",
    "register_accountant",
    "schedule_weights",
    "share_std",
    "sum_sensitivity",
    "vector_norm",
]
