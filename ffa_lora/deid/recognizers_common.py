"""Recognizers that do not depend on the language of the text: e-mail, payment cards, dates,
IP addresses, IBANs and ``+``-prefixed international phone numbers."""

from __future__ import annotations

import re
from functools import lru_cache

import tldextract
from presidio_analyzer import EntityRecognizer
from presidio_analyzer.predefined_recognizers import IpRecognizer

from ffa_lora.deid import config as C
from ffa_lora.deid.checksums import is_luhn_valid
from ffa_lora.deid.dates import DATE_PATTERNS
from ffa_lora.deid.recognizer_base import RegexRecognizer, RegexSpec, cjk_ready

_L = r"(?<![0-9A-Za-z])"
_R = r"(?![0-9A-Za-z])"
_SEP_RE = re.compile(r"[\s\-.()（）]")


@lru_cache(maxsize=1)
def offline_tld_extractor() -> tldextract.TLDExtract:
    """A ``TLDExtract`` that uses only the public-suffix snapshot inside the wheel.

    ``tldextract.extract`` (what Presidio's e-mail recognizer calls) fetches the public
    suffix list over HTTPS on first use and caches it on disk. Passing no URLs and no cache
    directory keeps it offline without touching environment variables.
    """
    return tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)


#: Top-level domains reserved for examples and tests (RFC 2606, RFC 6761): synthetic and
#: test records use them in place of real addresses, and the address is still a person's.
_RESERVED_TLDS = frozenset({"example", "test", "invalid", "localhost"})


def _valid_email_domain(value: str) -> bool:
    domain = value.rpartition("@")[2]
    if domain.rpartition(".")[2].lower() in _RESERVED_TLDS:
        return True
    return offline_tld_extractor()(domain).fqdn != ""


def email_recognizer() -> RegexRecognizer:
    """E-mail addresses, also when glued to Chinese text (``邮箱zhang@163.com``).

    Replaces Presidio's ``EmailRecognizer``: its ``\\w`` local part swallows the CJK
    characters before the address, and its validator reaches for the network.
    """
    local = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    domain = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
    regex = re.compile(rf"(?<![A-Za-z0-9!#$%&'*+/=?^_`{{|}}~.-]){local}@{domain}(?![A-Za-z0-9-])")
    return RegexRecognizer(
        entity=C.EMAIL_ADDRESS,
        specs=[RegexSpec("email", regex, 0.5)],
        context=["email", "e-mail", "mail", "邮箱", "邮件", "电邮"],
        validator=_valid_email_domain,
        name="EmailRecognizer",
    )


#: Issuer prefixes of card numbers shorter than 16 digits (where a random Luhn-valid number
#: is most likely something else): Visa 13, Amex, Diners, JCB 15, Maestro.
_SHORT_CARD_PREFIX = re.compile(
    r"(?:4\d{12}|3[47]\d{13}|3(?:0[0-5]|[689]\d)\d{11}|(?:2131|1800)\d{11}"
    r"|(?:50|5[6-8]|6\d)\d{10,13}|0604\d{8,11})"
)
_ID_LAYOUT = re.compile(r"[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[0-9Xx]")


def _card_validator(value: str) -> bool | None:
    digits = _SEP_RE.sub("", value)
    if not 12 <= len(digits) <= 19 or not is_luhn_valid(digits):
        return False
    if len(digits) < 16 and not _SHORT_CARD_PREFIX.fullmatch(digits):
        return False
    if len(digits) == 18 and _ID_LAYOUT.fullmatch(digits):
        return None  # shaped like a resident ID (with a wrong check char): card only on cue
    return True


def bank_card_recognizer() -> RegexRecognizer:
    """Payment cards of 12–19 digits (UnionPay 62… up to 19), contiguous or grouped, Luhn-checked."""
    specs = [
        RegexSpec("card contiguous", re.compile(rf"{_L}(?:[1-6]\d{{11,18}}|0604\d{{8,15}}){_R}"), 0.3),
        RegexSpec(
            "card 4-4-4-4(-3)",
            re.compile(rf"{_L}[1-6]\d{{3}}(?:([\s-])\d{{4}}(?:\1\d{{4}}){{2}}(?:\1?\d{{1,3}})?)(?![0-9])"),
            0.3,
        ),
        RegexSpec("card 4-6-5", re.compile(rf"{_L}3\d{{3}}([\s-])\d{{6}}\1\d{{4,5}}(?![0-9])"), 0.3),
        RegexSpec("card 6-13", re.compile(rf"{_L}6\d{{5}}[\s-]\d{{13}}(?![0-9])"), 0.3),
    ]
    return RegexRecognizer(
        entity=C.BANK_CARD,
        specs=specs,
        context=["卡号", "银行卡", "信用卡", "借记卡", "储蓄卡", "账号", "帐号", "card", "visa",
                 "mastercard", "amex", "account"],
        validator=_card_validator,
        name="BankCardRecognizer",
    )


def date_recognizer(languages: tuple[str, ...]) -> RegexRecognizer:
    """Dates in the layouts of ``ffa_lora.deid.dates`` for the selected languages."""
    specs = [
        RegexSpec(p.name, p.regex, p.score)
        for p in DATE_PATTERNS
        if ("zh" in languages and p.name.startswith("zh_"))
        or ("en" in languages and not p.name.startswith("zh_"))
    ]
    return RegexRecognizer(
        entity=C.DATE_TIME,
        specs=specs,
        context=["日期", "出生", "生日", "入院", "出院", "就诊", "手术", "date", "dob", "born",
                 "admitted", "discharged", "visit"],
        name="DateRecognizer",
    )


def _iban_valid(value: str) -> bool:
    compact = _SEP_RE.sub("", value).upper()
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(ch, 36)) for ch in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


def iban_recognizer() -> RegexRecognizer:
    """IBANs (ISO 13616 mod-97 check). Presidio's own logs the value when a check fails."""
    regex = re.compile(rf"{_L}[A-Z]{{2}}\d{{2}}(?:[ -]?[A-Z0-9]{{4}}){{2,7}}(?:[ -]?[A-Z0-9]{{1,3}})?{_R}")
    return RegexRecognizer(
        entity=C.IBAN_CODE,
        specs=[RegexSpec("iban", regex, 0.3)],
        context=["iban", "bank", "transfer", "账户"],
        validator=_iban_valid,
        name="IbanRecognizer",
    )


def _possible_phone(value: str) -> bool | None:
    import phonenumbers

    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return False
    return None if phonenumbers.is_valid_number(parsed) else False


def intl_phone_recognizer() -> RegexRecognizer:
    """``+CC …`` numbers of any country, validated against libphonenumber's metadata."""
    regex = re.compile(r"(?<![0-9A-Za-z+])\+[1-9]\d{0,2}(?:[\s.-]?\(?\d{1,5}\)?){2,5}(?![0-9])")
    return RegexRecognizer(
        entity=C.PHONE_NUMBER,
        specs=[RegexSpec("international", regex, 0.5)],
        context=["phone", "tel", "mobile", "cell", "fax", "电话", "手机"],
        validator=_possible_phone,
        name="IntlPhoneRecognizer",
    )


def common_recognizers(config: C.DeidConfig) -> list[EntityRecognizer]:
    """The language-neutral recognizers for ``config``."""
    recognizers: list[EntityRecognizer] = [
        email_recognizer(),
        bank_card_recognizer(),
        date_recognizer(config.languages),
        iban_recognizer(),
        intl_phone_recognizer(),
        cjk_ready(IpRecognizer, supported_entity=C.IP_ADDRESS),
    ]
    if config.phone_regions:
        from presidio_analyzer.predefined_recognizers import PhoneRecognizer

        from ffa_lora.deid.recognizer_base import ANALYSIS_LANGUAGE

        recognizers.append(
            PhoneRecognizer(
                supported_language=ANALYSIS_LANGUAGE,
                supported_regions=config.phone_regions,
                supported_entity=C.PHONE_NUMBER,
            )
        )
    return recognizers
