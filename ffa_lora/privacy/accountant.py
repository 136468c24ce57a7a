"""Privacy accountants: composition of the rounds' noise by Google's ``dp-accounting``.

Two accountants share one interface (modelled on Opacus' ``IAccountant``):

* ``"pld"`` — privacy loss distributions (``dp_accounting.pld.PLDAccountant``), numerically
  tight for Laplace and Gaussian; the one that guards the budget.
* ``"rdp"`` — Rényi DP (``dp_accounting.rdp.RdpAccountant``), a looser cross-check. It supports
  Gaussian, Laplace (Mironov 2017, Prop. 6) and Poisson-subsampled Gaussian; it does *not*
  support Poisson-subsampled Laplace (``get_epsilon`` then raises :class:`PrivacyError`).

No composition formula is written here. The one rewriting done before handing events to the
library is exact: unsampled Gaussian rounds with multipliers ``z_i`` compose to one Gaussian
with ``z = (Σ 1/z_i²)^(-1/2)`` (their privacy-loss distributions are Gaussian and add; Dong,
Roth & Su 2019, μ-GDP composition; dp-accounting uses the same identity for a self-composed
Gaussian). This keeps a 100-round heterogeneous schedule fast.

The neighbouring relation is add/remove one client (see :mod:`ffa_lora.privacy.sensitivity`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import dp_accounting
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from ffa_lora.errors import BudgetExhaustedError, ConfigError, PrivacyError, StateError
from ffa_lora.privacy.events import MechanismName, PrivacyEvent

_STATE_VERSION = 1
_ADD_REMOVE = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE


def check_delta(delta: float) -> float:
    """Validate δ: a number in (0, 1)."""
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
        raise ConfigError(
            f"delta must be in (0, 1), typically below 1/(number of clients); got {delta!r}"
        )
    return float(delta)


def check_epsilon(epsilon: float, *, name: str = "epsilon") -> float:
    """Validate an ε budget: a positive finite number."""
    if (
        isinstance(epsilon, bool)
        or not isinstance(epsilon, (int, float))
        or not math.isfinite(epsilon)
        or epsilon <= 0
    ):
        raise ConfigError(
            f"{name} must be a positive finite number (use no DP instead of an infinite "
            f"budget); got {epsilon!r}"
        )
    return float(epsilon)


class _Composer:
    """Incremental library accountant: non-mergeable events are composed as they arrive,
    unsampled Gaussians are folded into one precision sum Σ count/z²."""

    def __init__(self, fresh: Any, gaussian_epsilon: Any = None) -> None:
        self.base = fresh()
        self._base_empty = True
        # Exact ε of a lone (merged) Gaussian, used when nothing else was composed.
        self._gaussian_epsilon = gaussian_epsilon
        self.gaussian_precision = 0.0
        # Runs of identical events are composed once as a self-composition (much faster for
        # PLD than composing them one by one); the run is flushed before any query.
        self._pending: PrivacyEvent | None = None

    @staticmethod
    def _mergeable(event: PrivacyEvent) -> bool:
        return event.mechanism == "gaussian" and event.sample_rate == 1.0

    def add(self, event: PrivacyEvent) -> None:
        if self._mergeable(event):
            self.gaussian_precision += event.count / event.noise_multiplier**2
            return
        p = self._pending
        if p is not None and (p.mechanism, p.noise_multiplier, p.sample_rate) == (
            event.mechanism,
            event.noise_multiplier,
            event.sample_rate,
        ):
            self._pending = dataclasses.replace(p, count=p.count + event.count)
            return
        self._flush()
        self._pending = event

    def _flush(self) -> None:
        if self._pending is not None:
            self.base.compose(self._pending.to_dp_event())
            self._base_empty = False
            self._pending = None

    def epsilon(self, delta: float, extra: Sequence[PrivacyEvent] = ()) -> float:
        self._flush()
        acc = self.base
        precision = self.gaussian_precision
        precision += sum(e.count / e.noise_multiplier**2 for e in extra if self._mergeable(e))
        others = [e for e in extra if not self._mergeable(e)]
        if precision > 0 and not others and self._base_empty and self._gaussian_epsilon:
            return float(self._gaussian_epsilon(1.0 / math.sqrt(precision), delta))
        if others:
            acc = copy.deepcopy(acc)
            for e in others:
                acc.compose(e.to_dp_event())
        if precision > 0:
            acc = copy.deepcopy(acc)
            acc.compose(dp_accounting.GaussianDpEvent(1.0 / math.sqrt(precision)))
        return float(acc.get_epsilon(delta))


class PrivacyAccountant(ABC):
    """Tracks the privacy events applied so far and answers "how much ε at δ?".

    Stateful: :meth:`state_dict` is the JSON list of events (enough to rebuild exactly);
    :meth:`load_state_dict` replaces the history.
    """

    name: ClassVar[str]

    def __init__(self) -> None:
        self._events: list[PrivacyEvent] = []
        self._composer: _Composer | None = None
        self._cache: dict[float, float] = {}

    # --- the library accountant --------------------------------------------------------
    @abstractmethod
    def _fresh_library_accountant(self) -> dp_accounting.PrivacyAccountant:
        """A new, empty dp-accounting accountant (add/remove-one neighbouring relation)."""

    def _check_supported(self, event: PrivacyEvent) -> None:
        """Raise PrivacyError if this accountant cannot account ``event``."""
        if not self._fresh_library_accountant().supports(event.to_dp_event()):
            raise PrivacyError(
                f"the {self.name!r} accountant does not support {event.mechanism} noise with "
                f"sample_rate={event.sample_rate}; use the 'pld' accountant"
            )

    def _lone_gaussian_epsilon_fn(self) -> Any:
        """Callable ``(noise_multiplier, delta) -> ε`` exact for one unsampled Gaussian
        release, or None to let the library accountant compose it."""
        return None

    def _get_composer(self) -> _Composer:
        if self._composer is None:
            self._composer = _Composer(
                self._fresh_library_accountant, self._lone_gaussian_epsilon_fn()
            )
            for e in self._events:
                self._composer.add(e)
        return self._composer

    # --- public interface --------------------------------------------------------------
    @property
    def history(self) -> tuple[PrivacyEvent, ...]:
        """The events applied so far, oldest first."""
        return tuple(self._events)

    def __len__(self) -> int:
        return sum(e.count for e in self._events)

    def step(
        self,
        *,
        noise_multiplier: float,
        mechanism: MechanismName,
        count: int = 1,
        sample_rate: float = 1.0,
    ) -> None:
        """Record ``count`` releases with the given mechanism and noise multiplier.

        ``noise_multiplier`` is the noise scale divided by the sensitivity: ``b/Δ1`` for
        Laplace (``= 1/ε_t``), ``σ/Δ2`` for Gaussian.
        """
        self.add_event(
            PrivacyEvent(
                mechanism=mechanism,
                noise_multiplier=noise_multiplier,
                count=count,
                sample_rate=sample_rate,
            )
        )

    def add_event(self, event: PrivacyEvent) -> None:
        """Record an already-built :class:`PrivacyEvent`."""
        self._check_supported(event)
        composer = self._get_composer()
        self._events.append(event)
        composer.add(event)
        self._cache.clear()

    def get_epsilon(self, *, delta: float) -> float:
        """ε spent so far at the given δ (0.0 before any event)."""
        delta = check_delta(delta)
        if not self._events:
            return 0.0
        if delta not in self._cache:
            self._cache[delta] = self._get_composer().epsilon(delta)
        return self._cache[delta]

    def epsilon_after(self, *, next_events: Iterable[PrivacyEvent], delta: float) -> float:
        """ε that would be spent at δ after also applying ``next_events`` (nothing recorded)."""
        delta = check_delta(delta)
        extra = list(next_events)
        for e in extra:
            self._check_supported(e)
        if not extra:
            return self.get_epsilon(delta=delta)
        return self._get_composer().epsilon(delta, extra)

    def would_exceed(
        self, *, next_event: PrivacyEvent, epsilon_budget: float, delta: float
    ) -> bool:
        """True if applying ``next_event`` would take ε at δ above ``epsilon_budget``."""
        budget = check_epsilon(epsilon_budget, name="epsilon_budget")
        return self.epsilon_after(next_events=[next_event], delta=delta) > budget

    def check_budget(
        self, *, next_event: PrivacyEvent, epsilon_budget: float, delta: float
    ) -> float:
        """Return the ε after ``next_event``, or raise :class:`BudgetExhaustedError`.

        Records nothing: the caller writes its ledger entry durably, then calls
        :meth:`add_event` (write-ahead; see :mod:`ffa_lora.privacy.ledger`).
        """
        budget = check_epsilon(epsilon_budget, name="epsilon_budget")
        after = self.epsilon_after(next_events=[next_event], delta=delta)
        if after > budget:
            spent = self.get_epsilon(delta=delta)
            raise BudgetExhaustedError(
                f"privacy budget exhausted: the next release ({next_event.mechanism}, noise "
                f"multiplier {next_event.noise_multiplier:.4g}) would raise epsilon from "
                f"{spent:.4f} to {after:.4f}, above the budget {budget:.4f} at delta={delta:g}. "
                "Training stops here with the current adapter; to continue, raise the budget "
                "or add more noise per round."
            )
        return after

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable state: the accountant name and the list of events."""
        return {
            "version": _STATE_VERSION,
            "accountant": self.name,
            "events": [e.to_dict() for e in self._events],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the history by the events in ``state`` (from any accountant's state_dict).

        Raises:
            StateError: if the state is not a privacy-accountant state of a known version.
        """
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise StateError(
                "privacy accountant state is missing or has an unknown version; "
                "it must come from PrivacyAccountant.state_dict()"
            )
        raw = state.get("events")
        if not isinstance(raw, list):
            raise StateError("privacy accountant state has no 'events' list")
        try:
            events = [PrivacyEvent.from_dict(d) for d in raw]
        except ConfigError as exc:
            raise StateError(f"privacy accountant state is corrupt: {exc}") from exc
        for e in events:
            self._check_supported(e)
        self._events = events
        self._composer = None
        self._cache.clear()


class PLDPrivacyAccountant(PrivacyAccountant):
    """Privacy-loss-distribution accountant (tight; guards the budget).

    Args:
        value_discretization_interval: PLD grid step (dp-accounting's default 1e-4). The
            library's estimate is pessimistic, so a coarser grid is faster and only
            over-estimates ε.
        exact_gaussian: when the history holds only unsampled Gaussian releases (merged into
            one), report dp-accounting's exact analytic Gaussian ε
            (``get_epsilon_gaussian``) — the value the PLD approximates — instead of building
            a PLD, which is slow at large ε. ``False`` forces the PLD everywhere.
    """

    name = "pld"

    def __init__(
        self, *, value_discretization_interval: float = 1e-4, exact_gaussian: bool = True
    ) -> None:
        super().__init__()
        self.exact_gaussian = bool(exact_gaussian)
        v = value_discretization_interval
        if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 < v <= 0.1):
            raise ConfigError(f"value_discretization_interval must be in (0, 0.1], got {v!r}")
        self.value_discretization_interval = float(v)

    def _lone_gaussian_epsilon_fn(self) -> Any:
        # dp-accounting's exact (analytic, Balle & Wang 2018) ε of a Gaussian mechanism: what
        # the PLD approximates, without the cost of a wide grid at large ε.
        return dp_accounting.get_epsilon_gaussian if self.exact_gaussian else None

    def _fresh_library_accountant(self) -> dp_accounting.PrivacyAccountant:
        return PLDAccountant(
            neighboring_relation=_ADD_REMOVE,
            value_discretization_interval=self.value_discretization_interval,
        )


class RDPPrivacyAccountant(PrivacyAccountant):
    """Rényi-DP accountant (looser; a cross-check of the PLD figures)."""

    name = "rdp"

    def _fresh_library_accountant(self) -> dp_accounting.PrivacyAccountant:
        return RdpAccountant(neighboring_relation=_ADD_REMOVE)


ACCOUNTANTS: dict[str, type[PrivacyAccountant]] = {
    PLDPrivacyAccountant.name: PLDPrivacyAccountant,
    RDPPrivacyAccountant.name: RDPPrivacyAccountant,
}


def register_accountant(cls: type[PrivacyAccountant]) -> type[PrivacyAccountant]:
    """Class decorator adding an accountant to the registry under ``cls.name``."""
    ACCOUNTANTS[cls.name] = cls
    return cls


def make_accountant(name: str = "pld", **kwargs: Any) -> PrivacyAccountant:
    """Build a registered accountant by name (``"pld"`` or ``"rdp"``)."""
    try:
        cls = ACCOUNTANTS[name]
    except KeyError:
        raise ConfigError(
            f"unknown privacy accountant {name!r}; choose one of {', '.join(sorted(ACCOUNTANTS))}"
        ) from None
    return cls(**kwargs)


def epsilon_of(
    events: Iterable[PrivacyEvent], *, delta: float, accountant: str = "pld", **kwargs: Any
) -> float:
    """ε at δ of a list of events under a fresh accountant of the given kind."""
    acc = make_accountant(accountant, **kwargs)
    for e in events:
        acc.add_event(e)
    return acc.get_epsilon(delta=delta)


def cross_check(events: Sequence[PrivacyEvent], *, delta: float) -> dict[str, float | None]:
    """ε at δ by every registered accountant (None where an accountant cannot account)."""
    out: dict[str, float | None] = {}
    for name in ACCOUNTANTS:
        try:
            out[name] = epsilon_of(events, delta=delta, accountant=name)
        except PrivacyError:
            out[name] = None
    return out
