"""GB 11643 and Luhn: known vectors and properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ffa_lora.deid.checksums import (
    gb11643_check_char,
    is_luhn_valid,
    is_valid_cn_resident_id,
    luhn_check_digit,
)

digits = st.text(alphabet="0123456789", min_size=1, max_size=25)


def test_gb11643_standard_example() -> None:
    # The worked example of GB 11643-1999.
    assert gb11643_check_char("11010519491231002") == "X"
    assert is_valid_cn_resident_id("11010519491231002X")
    assert is_valid_cn_resident_id("11010519491231002x")
    assert not is_valid_cn_resident_id("110105194912310021")


def test_resident_id_needs_a_real_birth_date() -> None:
    body = "11010519490231002"  # 31 February
    assert not is_valid_cn_resident_id(body + gb11643_check_char(body))


@given(st.text(alphabet="0123456789", min_size=17, max_size=17), st.integers(0, 16),
       st.integers(1, 9))
def test_gb11643_detects_any_single_digit_change(body: str, pos: int, delta: int) -> None:
    changed = body[:pos] + str((int(body[pos]) + delta) % 10) + body[pos + 1 :]
    assert gb11643_check_char(body) != gb11643_check_char(changed)


def test_luhn_known_numbers() -> None:
    assert is_luhn_valid("4111111111111111")
    assert is_luhn_valid("6222021234567890128")  # 19-digit UnionPay-style
    assert not is_luhn_valid("4111111111111112")
    assert not is_luhn_valid("")
    assert not is_luhn_valid("4111-1111")


@given(digits)
def test_luhn_check_digit_makes_valid(payload: str) -> None:
    assert is_luhn_valid(payload + luhn_check_digit(payload))


@given(digits, st.integers(0, 24), st.integers(1, 9))
def test_luhn_detects_single_digit_errors(payload: str, pos: int, delta: int) -> None:
    number = payload + luhn_check_digit(payload)
    pos %= len(number)
    changed = number[:pos] + str((int(number[pos]) + delta) % 10) + number[pos + 1 :]
    assert not is_luhn_valid(changed)
