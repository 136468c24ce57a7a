"""A labelled evaluation set made with Faker (``zh_CN`` and ``en_US``) and entity-level
precision and recall per type.

Each example is one short record built from a template with identifier slots (names,
resident IDs with valid check characters, phones, cards with valid Luhn digits, e-mails,
record numbers, dates, addresses, SSNs) and distractor slots that look like identifiers but
are not (lab values, amounts, order numbers, an ID number with a wrong check character),
so that precision means something.

A share of the records (``unicode_share``) write their structured identifiers the way an
evasion would: full-width characters, zero-width and other invisible characters inside the
value, Unicode dashes and no-break spaces (variant ``unicode``). English records include
names in capitals (``SMITH, JOHN`` headers, ``Attending: JOHN SMITH``).

Scoring is entity-level. A gold entity counts as recalled when spans *of its type* cover
all of its non-space characters; ``leaked`` counts gold entities with characters covered by
no span at all (the privacy-relevant miss). A predicted span is a true positive when it
overlaps a gold entity of its type.
"""

from __future__ import annotations

import datetime as _dt
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ffa_lora.deid import config as C
from ffa_lora.deid.checksums import gb11643_check_char, luhn_check_digit
from ffa_lora.deid.dates import int_to_cn_numeral


@dataclass(frozen=True)
class Entity:
    """A gold entity: type and character span."""

    entity_type: str
    start: int
    end: int


@dataclass(frozen=True)
class Example:
    """One labelled record."""

    text: str
    entities: tuple[Entity, ...]
    language: str
    variant: str = "plain"


# Slot name → entity type (None: distractor, not an identifier).
_SLOT_TYPES: dict[str, str | None] = {
    "name": C.PERSON, "name2": C.PERSON, "name_caps": C.PERSON, "id": C.CN_RESIDENT_ID, "mobile": C.PHONE_NUMBER,
    "landline": C.PHONE_NUMBER, "phone": C.PHONE_NUMBER, "email": C.EMAIL_ADDRESS,
    "card": C.BANK_CARD, "mrn": C.MEDICAL_RECORD_NUMBER, "date": C.DATE_TIME,
    "date2": C.DATE_TIME, "address": C.ADDRESS, "ssn": C.US_SSN,
    "x_amount": None, "x_lab": None, "x_order": None, "x_badid": None, "x_count": None,
}

ZH_TEMPLATES = (
    "患者{name}，男，{x_count}岁，身份证号{id}，联系电话{mobile}，于{date}因胸痛入院，住院号：{mrn}。",
    "{name}，女，住址：{address}，手机{mobile}，邮箱{email}，门诊号{mrn}。",
    "{date}上午，{name}在门诊复查，血压{x_lab}mmHg，主治医师{name2}建议继续服药。",
    "客户{name}申请信用卡，身份证{id}，银行卡号{card}，预留手机{mobile}，订单号{x_order}。",
    "病案号{mrn}，姓名：{name}，出生日期：{date}，家庭地址{address}，紧急联系人{name2}，电话{landline}。",
    "{name}于{date}办理出院手续，费用合计{x_amount}元，已通过尾号相同的银行卡{card}结算。",
    "联系人{name}，座机{landline}，手机{mobile}，邮箱{email}。",
    "经查，{name}的身份证号为{id}，现居{address}，{date2}曾在我院就诊。",
    "家属{name}来电（{mobile}）询问{name2}的检查结果，已告知{date}复诊。",
    "请{name}于{date}携带就诊卡（就诊卡号{mrn}）到三楼抽血，空腹血糖{x_lab}mmol/L。",
    "转账记录：{date}，{name}向{name2}的账户{card}转入{x_amount}元，备注：药费。",
    "投诉工单：用户{name}反映邮箱{email}收到异常通知，回访电话{landline}，证件号{x_badid}核验未通过。",
    "{name}，身份证{id}，{date}生，籍贯{address}。",
    "值班护士{name}记录：{date}夜间患者体温{x_lab}℃，已通知{name2}医生。",
)

EN_TEMPLATES = (
    "Patient: {name}, DOB {date}, SSN {ssn}, phone {phone}, MRN: {mrn}.",
    "{name} was admitted on {date} with chest pain; contact at {email} or {phone}.",
    "Billing: card {card} charged ${x_amount} on {date} for order {x_order}.",
    "Dr. {name} saw the patient at {address} on {date}; follow-up in {x_count} days.",
    "Discussed results with {name} by phone ({phone}); glucose {x_lab} mg/dL.",
    "Name: {name}\nAddress: {address}\nEmail: {email}",
    "Medical Record Number {mrn} belongs to {name}, seen {date}.",
    "Referred by {name}, MD. Patient ID: {mrn}. Call {phone} to reschedule.",
    "The claim for {name} (SSN {ssn}) was filed on {date}.",
    "{name} and {name2} attended the {date} visit; BP {x_lab}.",
    "Please email {email} before {date}; account holder {name}, card {card}.",
    "{name_caps}   MRN: {mrn}   DOB: {date}\nSSN {ssn}",
    "Attending: {name_caps}. Seen {date}; reach the patient at {phone}.",
    "Dictated by: {name_caps}, M.D.\nPatient ID: {mrn}",
)

#: Slots whose values get the ``unicode`` treatment (structured identifiers).
_OBFUSCATED_SLOTS = frozenset({"id", "mobile", "landline", "phone", "email", "card", "mrn", "ssn"})
_INVISIBLE = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad")
_DASHES = ("\u2010", "\u2011", "\u2013", "\u2212", "\uff0d")
_SPACES = ("\u00a0", "\u2009", "\u3000")


def _fullwidth(value: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in value)


def obfuscate(value: str, rng: random.Random) -> str:
    """``value`` written to defeat ASCII patterns: full-width, invisible characters inside,
    Unicode dashes and spaces (one or more of these, chosen by ``rng``)."""
    style = rng.randrange(4)
    out = value
    if style in (1, 3):
        out = "".join(rng.choice(_DASHES) if c == "-" else rng.choice(_SPACES) if c == " " else c
                      for c in out)
    if style in (0, 3):
        out = _fullwidth(out)
    if style in (2, 3) or out == value:
        chars = list(out)
        for _ in range(rng.randrange(1, 4)):
            chars.insert(rng.randrange(1, len(chars)), rng.choice(_INVISIBLE))
        out = "".join(chars)
    return out


@dataclass
class _Faker:
    zh: object
    en: object
    rng: random.Random

    @classmethod
    def seeded(cls, seed: int) -> _Faker:
        from faker import Faker

        zh, en = Faker("zh_CN"), Faker("en_US")
        zh.seed_instance(seed)
        en.seed_instance(seed + 1)
        return cls(zh, en, random.Random(seed))


def _date(rng: random.Random) -> _dt.date:
    return _dt.date(1940, 1, 1) + _dt.timedelta(days=rng.randrange(0, 365 * 85))


def _zh_date(f: _Faker) -> str:
    d = _date(f.rng)
    style = f.rng.randrange(8)
    if style == 0:
        return f"{d.year}年{d.month}月{d.day}日"
    if style == 1:
        return f"{d.year}年{d.month:02d}月{d.day:02d}日"
    if style == 2:
        return d.isoformat()
    if style == 3:
        return f"{d.year}/{d.month}/{d.day}"
    if style == 4:
        return f"{d.year}.{d.month:02d}.{d.day:02d}"
    if style == 5:
        zero = f.rng.choice("〇零")
        year = "".join((zero + "一二三四五六七八九")[int(c)] for c in str(d.year))
        return f"{year}年{int_to_cn_numeral(d.month)}月{int_to_cn_numeral(d.day)}日"
    if style == 6:
        return f"{d.month}月{d.day}日"
    return f"{d.year}年{d.month}月{d.day}号"


def _en_date(f: _Faker) -> str:
    d = _date(f.rng)
    style = f.rng.randrange(6)
    if style == 0:
        return f"{d.month:02d}/{d.day:02d}/{d.year}"
    if style == 1:
        return d.strftime("%B ") + f"{d.day}, {d.year}"
    if style == 2:
        return f"{d.day} " + d.strftime("%B %Y")
    if style == 3:
        return d.isoformat()
    if style == 4:
        return d.strftime("%b. ") + f"{d.day}, {d.year}"
    return f"{d.month}/{d.day}/{d.year}"


def _mobile(f: _Faker) -> str:
    n = f.zh.phone_number()  # type: ignore[attr-defined]
    style = f.rng.randrange(5)
    if style == 1:
        return f"{n[:3]} {n[3:7]} {n[7:]}"
    if style == 2:
        return f"{n[:3]}-{n[3:7]}-{n[7:]}"
    if style == 3:
        return f"+86 {n}"
    return n


_AREA3 = ("010", "020", "021", "022", "023", "024", "025", "027", "028", "029")
_AREA4 = ("0755", "0571", "0512", "0531", "0532", "0371", "0311", "0851", "0871", "0991")


def _landline(f: _Faker) -> str:
    rng = f.rng
    area = rng.choice(_AREA3 + _AREA4)
    length = 8 if len(area) == 3 else rng.choice((7, 8))
    local = str(rng.randrange(2, 9)) + "".join(str(rng.randrange(10)) for _ in range(length - 1))
    style = rng.randrange(5)
    if style == 1:
        return f"({area}){local}"
    if style == 2:
        return f"{area} {local[:4]} {local[4:]}"
    if style == 3:
        return f"+86-{area[1:]}-{local}"
    return f"{area}-{local}"


def _card(f: _Faker) -> str:
    rng = f.rng
    if rng.random() < 0.4:
        length = rng.choice((16, 19))
        body = "62" + "".join(str(rng.randrange(10)) for _ in range(length - 3))
        number = body + luhn_check_digit(body)
    else:
        number = f.en.credit_card_number()  # type: ignore[attr-defined]
    if len(number) in (16, 19) and rng.random() < 0.3:
        return " ".join(number[i : i + 4] for i in range(0, len(number), 4))
    return number


def _mrn(f: _Faker) -> str:
    rng = f.rng
    prefix = rng.choice(("", "", "ZY", "MZ", "BA", "H", "A"))
    return prefix + "".join(str(rng.randrange(10)) for _ in range(rng.randrange(6, 11)))


def _zh_address(f: _Faker) -> str:
    zh, rng = f.zh, f.rng
    parts = []
    if rng.random() < 0.6:
        parts.append(zh.province())  # type: ignore[attr-defined]
    parts.append(zh.city())  # type: ignore[attr-defined]
    district = zh.district()  # type: ignore[attr-defined]
    parts.append(district if district.endswith(("区", "县")) else district + "区")
    parts.append(zh.street_name())  # type: ignore[attr-defined]
    parts.append(f"{rng.randrange(1, 999)}号")
    if rng.random() < 0.5:
        parts.append(f"{rng.randrange(1, 30)}栋{rng.randrange(1, 6)}单元{rng.randrange(101, 2999)}室")
    return "".join(parts)


def _en_address(f: _Faker) -> str:
    en = f.en
    return (
        f"{en.street_address()}, {en.city()}, "  # type: ignore[attr-defined]
        f"{en.state_abbr()} {en.zipcode()}"  # type: ignore[attr-defined]
    )


def _bad_id(f: _Faker) -> str:
    good = f.zh.ssn()  # type: ignore[attr-defined]
    wrong = [c for c in "0123456789X" if c != gb11643_check_char(good[:17])]
    return good[:17] + f.rng.choice(wrong)


def _zh_slots(f: _Faker) -> dict[str, Callable[[], str]]:
    rng = f.rng
    return {
        "name": f.zh.name, "name2": f.zh.name,  # type: ignore[attr-defined]
        "id": f.zh.ssn, "mobile": lambda: _mobile(f),  # type: ignore[attr-defined]
        "landline": lambda: _landline(f), "phone": lambda: _mobile(f),
        "email": f.zh.email, "card": lambda: _card(f), "mrn": lambda: _mrn(f),  # type: ignore[attr-defined]
        "date": lambda: _zh_date(f), "date2": lambda: _zh_date(f),
        "address": lambda: _zh_address(f), "ssn": f.en.ssn,  # type: ignore[attr-defined]
        "x_amount": lambda: f"{rng.randrange(10, 99999)}.{rng.randrange(100):02d}",
        "x_lab": lambda: rng.choice((f"{rng.randrange(90, 180)}/{rng.randrange(50, 110)}",
                                     f"{rng.uniform(35.5, 40.5):.1f}", f"{rng.uniform(3, 12):.1f}")),
        "x_order": lambda: "".join(str(rng.randrange(10)) for _ in range(rng.choice((10, 14, 20)))),
        "x_badid": lambda: _bad_id(f), "x_count": lambda: str(rng.randrange(1, 95)),
    }


def _en_slots(f: _Faker) -> dict[str, Callable[[], str]]:
    slots = _zh_slots(f)
    en = f.en
    slots.update({
        "name": lambda: f"{en.first_name()} {en.last_name()}",  # type: ignore[attr-defined]
        "name2": lambda: f"{en.first_name()} {en.last_name()}",  # type: ignore[attr-defined]
        "name_caps": lambda: _caps_name(f),
        "phone": en.phone_number, "email": en.email,  # type: ignore[attr-defined]
        "date": lambda: _en_date(f), "date2": lambda: _en_date(f),
        "address": lambda: _en_address(f),
    })
    return slots


def _caps_name(f: _Faker) -> str:
    first, last = f.en.first_name().upper(), f.en.last_name().upper()  # type: ignore[attr-defined]
    return f"{last}, {first}" if f.rng.random() < 0.5 else f"{first} {last}"


_SLOT_RE = re.compile(r"\{(\w+)\}")


def _fill(
    template: str, slots: dict[str, Callable[[], str]], language: str,
    rng: random.Random | None = None,
) -> Example:
    out: list[str] = []
    entities: list[Entity] = []
    pos = 0
    length = 0
    for m in _SLOT_RE.finditer(template):
        literal = template[pos : m.start()]
        out.append(literal)
        length += len(literal)
        value = slots[m.group(1)]()
        if rng is not None and m.group(1) in _OBFUSCATED_SLOTS:
            value = obfuscate(value, rng)
        etype = _SLOT_TYPES[m.group(1)]
        if etype is not None:
            entities.append(Entity(etype, length, length + len(value)))
        out.append(value)
        length += len(value)
        pos = m.end()
    out.append(template[pos:])
    variant = "unicode" if rng is not None else "plain"
    return Example("".join(out), tuple(entities), language, variant)


def generate_examples(
    n: int, *, seed: int = 0, languages: Sequence[str] = ("zh", "en"), zh_share: float = 0.6,
    unicode_share: float = 0.15,
) -> list[Example]:
    """``n`` labelled records (``zh_share`` of them Chinese when both languages are asked,
    ``unicode_share`` of them with obfuscated identifiers)."""
    f = _Faker.seeded(seed)
    zh_slots, en_slots = _zh_slots(f), _en_slots(f)
    examples = []
    for _ in range(n):
        use_zh = "zh" in languages and ("en" not in languages or f.rng.random() < zh_share)
        rng = f.rng if f.rng.random() < unicode_share else None
        if use_zh:
            examples.append(_fill(f.rng.choice(ZH_TEMPLATES), zh_slots, "zh", rng))
        else:
            examples.append(_fill(f.rng.choice(EN_TEMPLATES), en_slots, "en", rng))
    return examples


@dataclass
class TypeScore:
    """Counts and rates for one entity type."""

    support: int = 0
    recalled: int = 0
    leaked: int = 0
    predicted: int = 0
    correct_predictions: int = 0

    @property
    def recall(self) -> float:
        """Recalled gold entities / gold entities (1.0 when there are none)."""
        return self.recalled / self.support if self.support else 1.0

    @property
    def precision(self) -> float:
        """Predictions overlapping a gold entity of their type / predictions."""
        return self.correct_predictions / self.predicted if self.predicted else 1.0

    def as_dict(self) -> dict[str, float | int]:
        """JSON-friendly summary."""
        return {
            "support": self.support, "recall": round(self.recall, 4),
            "precision": round(self.precision, 4), "predicted": self.predicted,
            "leaked": self.leaked,
        }


@dataclass
class EvalReport:
    """Per-type scores, optionally split by language."""

    per_type: dict[str, TypeScore] = field(default_factory=dict)
    per_language: dict[str, dict[str, TypeScore]] = field(default_factory=dict)
    per_variant: dict[str, dict[str, TypeScore]] = field(default_factory=dict)

    def score(
        self, entity_type: str, language: str | None = None, *, variant: str | None = None
    ) -> TypeScore:
        """Scores of one type (in one language or one variant, or overall)."""
        if variant is not None:
            return self.per_variant.get(variant, {}).get(entity_type, TypeScore())
        table = self.per_type if language is None else self.per_language.get(language, {})
        return table.get(entity_type, TypeScore())

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly summary."""
        return {
            "per_type": {t: s.as_dict() for t, s in sorted(self.per_type.items())},
            "per_language": {
                lang: {t: s.as_dict() for t, s in sorted(table.items())}
                for lang, table in sorted(self.per_language.items())
            },
            "per_variant": {
                v: {t: s.as_dict() for t, s in sorted(table.items())}
                for v, table in sorted(self.per_variant.items())
            },
        }


def _covered(start: int, end: int, spans: Iterable[tuple[int, int]], text: str) -> bool:
    need = {i for i in range(start, end) if not text[i].isspace()}
    for s, e in spans:
        need.difference_update(range(s, e))
        if not need:
            return True
    return not need


def score_example(
    example: Example, predicted: Sequence[tuple[str, int, int]], report: EvalReport
) -> None:
    """Add one example's gold entities and predicted (type, start, end) spans to ``report``."""
    lang_table = report.per_language.setdefault(example.language, {})
    variant_table = report.per_variant.setdefault(example.variant, {})
    all_spans = [(s, e) for _, s, e in predicted]
    for gold in example.entities:
        same = [(s, e) for t, s, e in predicted if t == gold.entity_type]
        ok = _covered(gold.start, gold.end, same, example.text)
        touched = any(s < gold.end and e > gold.start for s, e in all_spans)
        for table in (report.per_type, lang_table, variant_table):
            sc = table.setdefault(gold.entity_type, TypeScore())
            sc.support += 1
            sc.recalled += ok
            sc.leaked += not touched
    for etype, s, e in predicted:
        hit = any(g.entity_type == etype and s < g.end and e > g.start for g in example.entities)
        for table in (report.per_type, lang_table, variant_table):
            sc = table.setdefault(etype, TypeScore())
            sc.predicted += 1
            sc.correct_predictions += hit


def evaluate(analyze: Callable[[str], Iterable[object]], examples: Iterable[Example]) -> EvalReport:
    """Score ``analyze`` (e.g. ``Deidentifier.analyze``) on ``examples``."""
    report = EvalReport()
    for ex in examples:
        spans = [(s.entity_type, s.start, s.end) for s in analyze(ex.text)]  # type: ignore[attr-defined]
        score_example(ex, spans, report)
    return report


def summary_counts(examples: Iterable[Example]) -> Counter[str]:
    """Gold entities per type."""
    return Counter(e.entity_type for ex in examples for e in ex.entities)
