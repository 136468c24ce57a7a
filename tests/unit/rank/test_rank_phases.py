"""Warm-up / alternating-freeze policy: which factors train in each round."""

from __future__ import annotations

import pytest

from ffa_lora.errors import ConfigError
from ffa_lora.rank.phases import (
    is_exact_under_additive_encryption,
    phase_for_round,
    trains_a,
    trains_b,
)


@pytest.mark.parametrize(
    ("strategy", "warmup", "every", "expected"),
    [
        ("ffa", 0, 1, "BBBBBBBB"),
        ("ffa", 2, 1, "XXBBBBBB"),
        ("fedavg", 0, 1, "XXXXXXXX"),
        ("fedavg", 3, 2, "XXXXXXXX"),
        ("alternating", 0, 1, "BABABABA"),
        ("alternating", 1, 2, "XBBAABBA"),
        ("alternating", 2, 3, "XXBBBAAA"),
    ],
)
def test_schedule_table(strategy: str, warmup: int, every: int, expected: str) -> None:
    got = "".join(
        {"both": "X", "B": "B", "A": "A"}[phase_for_round(strategy, r, warmup, every)]  # type: ignore[arg-type]
        for r in range(len(expected))
    )
    assert got == expected


def test_phase_properties() -> None:
    assert trains_a("both") and trains_b("both") and not is_exact_under_additive_encryption("both")
    assert trains_b("B") and not trains_a("B") and is_exact_under_additive_encryption("B")
    assert trains_a("A") and not trains_b("A") and is_exact_under_additive_encryption("A")


def test_keyword_call_matches_positional() -> None:
    assert phase_for_round("alternating", round=5, warmup_rounds=1, alternate_every=2) == "B"


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("lora", 0, 0, 1), "unknown training strategy"),
        (("ffa", -1, 0, 1), "round must be"),
        (("ffa", 0, -2, 1), "warmup_rounds must be"),
        (("alternating", 0, 0, 0), "alternate_every must be"),
    ],
)
def test_invalid(args: tuple, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        phase_for_round(*args)
