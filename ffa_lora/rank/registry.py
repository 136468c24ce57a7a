"""The registry of rank schedulers: name -> class, and :func:`make_scheduler`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ffa_lora.errors import ConfigError
from ffa_lora.rank.base import RankScheduler, ValuesAtRank
from ffa_lora.rank.dynamic import DynamicRankScheduler
from ffa_lora.rank.fixed import FixedRankScheduler

__all__ = ["available_schedulers", "make_scheduler", "register_scheduler"]

_REGISTRY: dict[str, type[RankScheduler]] = {
    cls.name: cls for cls in (FixedRankScheduler, DynamicRankScheduler)
}


def register_scheduler(name: str) -> Callable[[type[RankScheduler]], type[RankScheduler]]:
    """Class decorator adding a scheduler to the registry under ``name``."""

    def add(cls: type[RankScheduler]) -> type[RankScheduler]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return add


def available_schedulers() -> tuple[str, ...]:
    """Names accepted by :func:`make_scheduler`."""
    return tuple(sorted(_REGISTRY))


def make_scheduler(
    name: str, *, values_at_rank: ValuesAtRank | None = None, **options: Any
) -> RankScheduler:
    """Build a registered scheduler: ``make_scheduler("dynamic", values_at_rank=f, r_max=16)``.

    ``options`` are the scheduler's settings (``rank`` for ``"fixed"``; the fields of
    :class:`ffa_lora.rank.dynamic.DynamicRankConfig` for ``"dynamic"``).
    """
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown rank scheduler {name!r}; choose one of {available_schedulers()}"
        )
    try:
        return _REGISTRY[name].from_options(values_at_rank=values_at_rank, **options)
    except TypeError as exc:
        raise ConfigError(f"rank scheduler {name!r}: unknown or missing option ({exc})") from exc
