"""LoRASpec validation and the phase schedule."""

from __future__ import annotations

import pytest

from ffa_lora.errors import ConfigError
from ffa_lora.lora import LoRASpec
from ffa_lora.lora.spec import head_only_round


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("num_labels", 1, "num_labels"),
        ("r_max", 0, "r_max"),
        ("alpha", 0.0, "alpha"),
        ("dropout", 1.0, "dropout"),
        ("max_length", 2, "max_length"),
        ("strategy", "flexlora", "strategy"),
        ("warmup_rounds", -1, "warmup_rounds"),
        ("alternate_every", 0, "alternate_every"),
        ("seed", -3, "seed"),
        ("target_modules", (), "target_modules"),
        ("model", "", "model"),
    ],
)
def test_invalid_values_name_the_field(field: str, value: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        LoRASpec(**{field: value})  # type: ignore[arg-type]


def test_defaults_and_scaling() -> None:
    spec = LoRASpec(target_modules=["query", "value"])  # type: ignore[arg-type]
    assert spec.target_modules == ("query", "value")
    assert spec.r_max == 8 and spec.alpha == 16 and spec.max_length == 64
    assert spec.scaling == 2.0
    assert hash(spec)  # frozen and hashable (lists normalised to tuples)


@pytest.mark.parametrize(
    ("strategy", "warmup", "every", "expected"),
    [
        ("ffa", 0, 1, "BBBBBBBB"),
        ("ffa", 2, 1, "XXBBBBBB"),
        ("fedavg", 0, 1, "XXXXXXXX"),
        ("fedavg", 3, 2, "XXXXXXXX"),
        ("alternating", 0, 1, "BABABABA"),
        ("alternating", 1, 1, "XBABABAB"),
        ("alternating", 1, 2, "XBBAABBA"),
        ("alternating", 2, 3, "XXBBBAAA"),
    ],
)
def test_phase_schedule(strategy: str, warmup: int, every: int, expected: str) -> None:
    spec = LoRASpec(strategy=strategy, warmup_rounds=warmup, alternate_every=every)  # type: ignore[arg-type]
    got = "".join({"AB": "X", "B": "B", "A": "A"}[spec.phase(r)] for r in range(len(expected)))
    assert got == expected
    with pytest.raises(ConfigError):
        spec.phase(-1)


def test_rank_check() -> None:
    spec = LoRASpec(r_max=4)
    assert spec.check_rank(1) == 1 and spec.check_rank(4) == 4
    for bad in (0, 5):
        with pytest.raises(ConfigError, match="rank"):
            spec.check_rank(bad)


def test_local_paths_are_offline(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert LoRASpec(model=str(tmp_path)).use_local_files_only() is True
    assert LoRASpec(model="bert-base-uncased").use_local_files_only() is False
    assert LoRASpec(model="bert-base-uncased", local_files_only=True).use_local_files_only()


@pytest.mark.parametrize(("rounds", "head_only", "final", "schedule"), [
    (6, 4, 0, "hhhhaa"),  # linear probing, then fine-tuning
    (6, 4, 1, "hhhaah"),  # ... then the head refitted to the fine-tuned features
    (6, 4, 4, "aahhhh"),
    (3, 0, 0, "aaa"),     # every round trains the adapter
    (2, 2, 1, "hh"),
])
def test_head_only_rounds_come_first_and_final_ones_last(rounds: int, head_only: int, final: int,
                                                         schedule: str) -> None:
    got = "".join("h" if head_only_round(i, rounds=rounds, head_only_rounds=head_only, final_head_rounds=final)
                  else "a" for i in range(rounds))
    assert got == schedule


def test_head_only_round_refuses_counts_that_do_not_fit() -> None:
    with pytest.raises(ConfigError, match="final_head_rounds <= head_only_rounds"):
        head_only_round(0, rounds=6, head_only_rounds=2, final_head_rounds=3)
