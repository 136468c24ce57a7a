"""Identifiers written to slip past ASCII patterns (full-width, zero-width, Unicode dashes,
combining marks) and names in capitals are still de-identified."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ffa_lora.deid import Deidentifier
from ffa_lora.deid.normalize import normalize_text, normalize_value

ZWSP, ZWJ, WJ, SHY, BOM = "\u200b", "\u200d", "\u2060", "\u00ad", "\ufeff"


def fullwidth(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in s)


OBFUSCATED = [
    # (text, entity type, the identifier as the recognizer must see it)
    ("手机" + fullwidth("13812345678"), "PHONE_NUMBER", "13812345678"),
    ("联系电话138" + ZWSP + "1234" + WJ + "5678。", "PHONE_NUMBER", "13812345678"),
    ("phone (415)\u00a0555\u20132671 today", "PHONE_NUMBER", "4155552671"),
    ("tel ＋１ ４１５ ５５５ ２６７１", "PHONE_NUMBER", "14155552671"),
    ("邮箱" + fullwidth("zhang.wei@163.com"), "EMAIL_ADDRESS", "zhang.wei@163.com"),
    ("email jane" + ZWSP + ".roe@exa" + ZWJ + "mple.org ok", "EMAIL_ADDRESS", "jane.roe@example.org"),
    ("SSN 262\u2011" + ZWSP + "16\u20138118.", "US_SSN", "262-16-8118"),
    ("SSN " + fullwidth("262-16-8118"), "US_SSN", "262-16-8118"),
    ("SSN 2\u03016\u03012-16-8118", "US_SSN", "262-16-8118"),
    ("身份证号" + fullwidth("11010519491231002X") + "，", "CN_RESIDENT_ID", "11010519491231002X"),
    ("身份证号110105" + SHY + "19491231002X", "CN_RESIDENT_ID", "11010519491231002X"),
    ("卡号6222" + BOM + "0212" + BOM + "3456" + BOM + "7890128", "BANK_CARD", "6222021234567890128"),
    ("card 4111" + SHY + "1111" + SHY + "1111" + SHY + "1111", "BANK_CARD", "4111111111111111"),
    ("住院号：" + fullwidth("ZY2023001234"), "MEDICAL_RECORD_NUMBER", "ZY2023001234"),
]

CAPS_NAMES = [
    ("Patient: JOHN SMITH, DOB 01/02/1950", "JOHN SMITH"),
    ("SMITH, JOHN   MRN 1234567", "SMITH, JOHN"),
    ("OROZCO,KYLE   560-40-78-5", "OROZCO,KYLE"),
    ("Seen by DR. ROBERT MILLER today", "ROBERT MILLER"),
    ("Attending: YBARRA", "YBARRA"),
    ("FILBERT BRIGHT, M.D.    FB59", "FILBERT BRIGHT"),
    ("Mr. VILLEGAS returns for follow-up.", "VILLEGAS"),
]


def _digits_and_letters(s: str) -> str:
    return re.sub(r"[^0-9A-Za-z@.]", "", normalize_value(s))


@pytest.mark.parametrize(("text", "etype", "value"), OBFUSCATED)
def test_obfuscated_identifier_is_found(pattern_tagger: Deidentifier, text: str, etype: str,
                                        value: str) -> None:
    spans = pattern_tagger.analyze(text)
    found = [s for s in spans if s.entity_type == etype]
    assert found, spans
    # The span, read back from the original text, is the whole identifier.
    assert any(_digits_and_letters(text[s.start : s.end]).upper().endswith(
        re.sub(r"[^0-9A-Za-z@.]", "", value).upper()) for s in found)


@pytest.mark.parametrize(("text", "etype", "value"), OBFUSCATED)
def test_obfuscated_identifier_does_not_leak(pattern_tagger: Deidentifier, text: str,
                                             etype: str, value: str) -> None:
    out = pattern_tagger.scrub(text)
    assert f"<{etype}>" in out
    compact = re.sub(r"[^0-9A-Za-z@]", "", value)
    assert compact not in re.sub(r"[^0-9A-Za-z@]", "", normalize_value(out))
    # Invisible characters inside the identifier went with it.
    assert not any(unicodedata.category(c) == "Cf" for c in out)


def test_text_outside_identifiers_is_kept_as_written(pattern_tagger: Deidentifier) -> None:
    text = "（备注）：全角括号保留，手机" + fullwidth("13812345678") + "。ｏｋ"
    assert pattern_tagger.scrub(text) == "（备注）：全角括号保留，手机<PHONE_NUMBER>。ｏｋ"


def test_full_width_and_ascii_get_the_same_pseudonym(pseudonymizer: Deidentifier) -> None:
    a = pseudonymizer.scrub("手机13812345678")
    b = pseudonymizer.scrub("手机" + fullwidth("138") + ZWSP + fullwidth("12345678"))
    assert a == b and a.startswith("手机<PHONE_NUMBER_")


def test_surrogate_of_full_width_value_is_valid(surrogator: Deidentifier) -> None:
    from ffa_lora.deid.checksums import is_valid_cn_resident_id

    out = surrogator.scrub("身份证号" + fullwidth("11010519491231002X"))
    new = out.removeprefix("身份证号")
    assert new != "11010519491231002X" and is_valid_cn_resident_id(new)


@pytest.mark.parametrize(("text", "name"), CAPS_NAMES)
def test_all_caps_names(pattern_tagger: Deidentifier, text: str, name: str) -> None:
    found = [text[s.start : s.end] for s in pattern_tagger.analyze(text) if s.entity_type == "PERSON"]
    assert name in found, found


NORMALIZE = [
    ("plain ascii", "plain ascii"),
    ("１２３ＡＢＣ＠ｘ．ｃｏｍ", "123ABC@x.com"),
    ("a\u200bb\u200cc\u200dd\u2060e\ufeff", "abcde"),
    ("1\u20102\u20113\u20134\u20145\u22126", "1-2-3-4-5-6"),
    ("5\u0338 6\u0301", "5 6"),
    ("e\u0301", "é"),
    ("，：；！？", "，：；！？"),
    ("（０１０）", "(010)"),
    ("\u3000x\u00a0y", " x y"),
    ("ﬁle", "file"),
]


@pytest.mark.parametrize(("raw", "expected"), NORMALIZE)
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_text(raw).text == expected


def test_offsets_map_back_over_removed_characters() -> None:
    raw = "x１" + ZWSP + "２３y"
    norm = normalize_text(raw)
    assert norm.text == "x123y"
    assert norm.to_original(1, 4) == (1, 5)  # the zero-width space inside is covered
    assert raw[slice(*norm.to_original(4, 5))] == "y"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="12ab@.- \u200b\u00ad\u2013１ａ＠\u0301，（）", max_size=40))
def test_offset_map_is_monotone_and_complete(raw: str) -> None:
    norm = normalize_text(raw)
    pieces = [raw[slice(*norm.to_original(i, i + 1))] for i in range(len(norm.text))]
    # Each normalized character comes from a non-empty original segment, in order, and
    # normalizing the segments again gives back the normalized text.
    assert all(pieces)
    starts = [norm.to_original(i, i + 1)[0] for i in range(len(norm.text))]
    assert starts == sorted(starts)
    assert "".join(normalize_text(raw[a:b]).text for a, b in dict.fromkeys(
        norm.to_original(i, i + 1) for i in range(len(norm.text)))) == norm.text


_MIXED = "0123456789１２３ -‐–+()（）@.ａbc\u200b\u00ad\ufeff\u0301手机电话身份证卡号，。:/MRN Dr"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_MIXED, max_size=80))
def test_any_mixed_text_scrubs_with_spans_in_the_original(surrogator: Deidentifier,
                                                          text: str) -> None:
    from itertools import pairwise

    spans = surrogator.analyze(text)
    assert all(0 <= s.start < s.end <= len(text) for s in spans)
    assert all(a.end <= b.start for a, b in pairwise(spans))
    assert isinstance(surrogator.scrub(text), str)
