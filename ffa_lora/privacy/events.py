"""Privacy events: one noised release, as the accountant and the ledger record it.

An event is the mechanism name, its *noise multiplier* — the noise scale divided by the
sensitivity (``b/Δ1`` for Laplace, ``σ/Δ2`` for Gaussian) — how many times it was applied,
and the probability with which each client took part (1.0: every client, no subsampling).
Events are plain JSON so the coordinator's store can persist them; the list of events is all
an accountant needs to rebuild its state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import dp_accounting

from ffa_lora.errors import ConfigError

MechanismName = Literal["laplace", "gaussian"]
MECHANISM_NAMES: tuple[str, ...] = get_args(MechanismName)


def check_mechanism(mechanism: str) -> MechanismName:
    """Return ``mechanism`` if known, else raise :class:`ConfigError` naming the choices."""
    if mechanism not in MECHANISM_NAMES:
        raise ConfigError(
            f"unknown DP mechanism {mechanism!r}; choose one of {', '.join(MECHANISM_NAMES)}"
        )
    return mechanism  # type: ignore[return-value]


@dataclass(frozen=True)
class PrivacyEvent:
    """One (possibly repeated) application of a noise mechanism.

    Attributes:
        mechanism: ``"laplace"`` or ``"gaussian"``.
        noise_multiplier: noise scale / sensitivity (> 0, finite). For Laplace this is
            ``1/ε_t`` of the round (the design's ``b = Δf/ε_t``).
        count: how many times the mechanism was applied with these parameters (>= 1).
        sample_rate: Poisson participation probability of one client (0 < q <= 1).
    """

    mechanism: MechanismName
    noise_multiplier: float
    count: int = 1
    sample_rate: float = 1.0

    def __post_init__(self) -> None:
        check_mechanism(self.mechanism)
        z = self.noise_multiplier
        if isinstance(z, bool) or not isinstance(z, (int, float)) or not math.isfinite(z):
            raise ConfigError(f"noise_multiplier must be a positive finite number, got {z!r}")
        if z <= 0:
            raise ConfigError(
                f"noise_multiplier must be > 0 (got {z}); a run without noise has no DP "
                "guarantee — disable DP in the config instead"
            )
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ConfigError(f"count must be an integer >= 1, got {self.count!r}")
        q = self.sample_rate
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q <= 1:
            raise ConfigError(f"sample_rate must be in (0, 1], got {q!r}")
        object.__setattr__(self, "noise_multiplier", float(z))
        object.__setattr__(self, "sample_rate", float(q))

    def to_dp_event(self) -> dp_accounting.DpEvent:
        """The equivalent ``dp_accounting`` event (self-composed ``count`` times)."""
        base: dp_accounting.DpEvent
        if self.mechanism == "laplace":
            base = dp_accounting.LaplaceDpEvent(self.noise_multiplier)
        else:
            base = dp_accounting.GaussianDpEvent(self.noise_multiplier)
        if self.sample_rate < 1.0:
            base = dp_accounting.PoissonSampledDpEvent(self.sample_rate, base)
        return base if self.count == 1 else dp_accounting.SelfComposedDpEvent(base, self.count)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (see :meth:`from_dict`)."""
        return {
            "mechanism": self.mechanism,
            "noise_multiplier": self.noise_multiplier,
            "count": self.count,
            "sample_rate": self.sample_rate,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrivacyEvent:
        """Rebuild an event from :meth:`to_dict` output; raises ConfigError if malformed."""
        try:
            return cls(
                mechanism=data["mechanism"],
                noise_multiplier=data["noise_multiplier"],
                count=data.get("count", 1),
                sample_rate=data.get("sample_rate", 1.0),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed privacy event record ({type(exc).__name__})") from exc
