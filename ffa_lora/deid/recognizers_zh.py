"""Pattern recognizers for Chinese records: resident ID numbers (GB 11643 check character),
mobile and landline numbers, medical record numbers after their cue words, addresses, and
person names after cue words (the model-based name finders are in ``ner.py``)."""

from __future__ import annotations

import re

from presidio_analyzer import EntityRecognizer

from ffa_lora.deid import config as C
from ffa_lora.deid.checksums import birth_date_of, is_valid_cn_resident_id
from ffa_lora.deid.recognizer_base import RegexRecognizer, RegexSpec

_L = r"(?<![0-9A-Za-z])"
_R = r"(?![0-9A-Za-z])"
_CJK = r"\u4e00-\u9fff"
_BIRTH = r"(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"

#: The most common Chinese surnames (about 90% of the population) and compound surnames.
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏"
    "吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱"
    "严覃武戴莫孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚"
    "符舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时穆农"
    "司卓古吉缪简车项连芦麦褚娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师和仇栾隋商刁"
    "沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝"
)
COMPOUND_SURNAMES = (
    "欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文",
    "司徒", "夏侯", "令狐", "端木", "南宫", "西门", "独孤", "百里", "呼延",
)
_SURNAME = "(?:" + "|".join(COMPOUND_SURNAMES) + f"|[{SURNAMES}])"

_PHONE_CONTEXT = ["电话", "手机", "联系", "座机", "固话", "号码", "致电", "tel", "phone", "mobile"]


def _resident_id_validator(value: str) -> bool | None:
    if len(value) == 18:
        return is_valid_cn_resident_id(value)
    # First-generation 15-digit numbers carry no check digit: keep the pattern's weak score
    # (raised by cue words such as 身份证) if the embedded date is real.
    return None if birth_date_of(value[:6] + "19" + value[6:] + "0") is not None else False


def resident_id_recognizer() -> RegexRecognizer:
    """18-digit resident IDs with a valid GB 11643 check character; 15-digit ones on cue."""
    specs = [
        RegexSpec("id18", re.compile(rf"{_L}[1-9]\d{{5}}(?:18|19|20)\d{{2}}{_BIRTH}\d{{3}}[0-9Xx]{_R}"), 0.5),
        RegexSpec("id15", re.compile(rf"{_L}[1-9]\d{{7}}{_BIRTH}\d{{3}}(?![0-9A-Za-z])"), 0.3),
    ]
    return RegexRecognizer(
        entity=C.CN_RESIDENT_ID,
        specs=specs,
        context=["身份证", "证件", "身份号", "公民身份", "id"],
        validator=_resident_id_validator,
        name="CnResidentIdRecognizer",
    )


def cn_phone_recognizer() -> RegexRecognizer:
    """Mainland mobile numbers (1[3-9]x xxxx xxxx, optional +86) and landlines (0AA(A)-local)."""
    cc = r"(?:(?:\+|00)86[\s-]?)"
    local = r"(?:[2-9]\d{3}[\s-]?\d{3,4}|[2-9]\d{2}[\s-]?\d{4})"
    specs = [
        RegexSpec("cn mobile", re.compile(rf"{_L}{cc}?1[3-9]\d(?:[\s-]?\d{{4}}){{2}}(?![0-9])"), 0.6),
        RegexSpec(
            "cn landline",
            re.compile(
                rf"{_L}(?:\(0\d{{2,3}}\)|（0\d{{2,3}}）|0\d{{2,3}}[\s-]|{cc}\(?[1-9]\d{{1,2}}\)?[\s-]?)"
                rf"\s?{local}(?:(?:-|转)\d{{1,5}})?(?![0-9])"
            ),
            0.5,
        ),
        RegexSpec(  # 02187654321: as likely an order number as a phone, so only on cue
            "cn landline contiguous", re.compile(rf"{_L}0\d{{2,3}}[2-9]\d{{6,7}}(?![0-9])"), 0.3
        ),
    ]
    return RegexRecognizer(
        entity=C.PHONE_NUMBER, specs=specs, context=_PHONE_CONTEXT, name="CnPhoneRecognizer"
    )


_MRN_CUES_ZH = (
    "住院号码|住院号|住院病案号|病案号|病案编号|病历号|病历编号|门诊号码|门诊号|急诊号|就诊号|就诊卡号"
    "|诊疗卡号|登记号|患者编号|病人编号|患者ID|病人ID|患者id|病人id|检查号|影像号|标本号|条码号"
)


def medical_record_recognizer_zh() -> RegexRecognizer:
    """Record numbers after 住院号/病案号/门诊号 … (only the number is replaced)."""
    regex = re.compile(
        rf"(?:{_MRN_CUES_ZH})\s*(?:[:：#]|为|是)?\s*(?P<v>[A-Za-z]{{0,4}}-?\d{{4,14}}[A-Za-z]?){_R}"
    )
    return RegexRecognizer(
        entity=C.MEDICAL_RECORD_NUMBER,
        specs=[RegexSpec("mrn zh", regex, 0.9, group="v")],
        name="CnMedicalRecordRecognizer",
    )


_PROVINCES = (
    "北京|天津|上海|重庆|河北|山西|辽宁|吉林|黑龙江|江苏|浙江|安徽|福建|江西|山东|河南|湖北|湖南|广东"
    "|海南|四川|贵州|云南|陕西|甘肃|青海|台湾|内蒙古|广西|西藏|宁夏|新疆|香港|澳门"
)
_PROV = rf"(?:{_PROVINCES})(?:壮族自治区|回族自治区|维吾尔自治区|自治区|特别行政区|省|市)?"
_ADMIN_END = r"(?:自治州|地区|新区|市|县|区|旗|州|盟|镇|乡)"
_STREET_END = r"(?:大道|大街|街道|胡同|号院|路|街|道|巷|弄|里|村|组|号|室|栋|幢|院)"
_UNIT = r"(?:[0-9A-Za-z一二三四五六七八九十百零〇-]{1,6}(?:号院|号楼|号|弄|栋|幢|座|楼|单元|层|室))"
_RUN = rf"[{_CJK}0-9A-Za-z-]"
#: One administrative part and one street part at least, then house/unit numbers.
_ADDR_BODY = rf"{_RUN}{{0,20}}?{_ADMIN_END}{_RUN}{{0,20}}{_STREET_END}{_UNIT}{{0,5}}"


def address_recognizer_zh() -> RegexRecognizer:
    """Addresses from a province name, after a cue word (住址, 家住 …), or from a short city
    name followed by a district; each needs an administrative and a street part."""
    specs = [
        RegexSpec("from province", re.compile(rf"{_PROV}{_ADDR_BODY}"), 0.6),
        RegexSpec(
            "after cue",
            re.compile(
                rf"(?:住址|地址|家住|现住|现居|住在|居住于|居住在|户籍地|户籍|籍贯|通讯地址|联系地址"
                rf"|寄往|送至)\s*[:：]?\s*(?P<v>{_ADDR_BODY})"
            ),
            0.55,
            group="v",
        ),
        RegexSpec(
            "from city",
            re.compile(
                rf"(?:(?<![{_CJK}])|(?<=[在于住至往自到从址]))"
                rf"[{_CJK}]{{1,4}}?(?:市|县|州|盟)[{_CJK}]{{1,6}}?(?:区|县|旗){_RUN}{{0,20}}"
                rf"{_STREET_END}{_UNIT}{{0,5}}"
            ),
            0.45,
        ),
    ]
    return _MinLengthRegexRecognizer(
        entity=C.ADDRESS, specs=specs, context=["地址", "住址", "住"], name="CnAddressRecognizer"
    )


class _MinLengthRegexRecognizer(RegexRecognizer):
    """Drops candidates shorter than 4 characters (a bare 北京市 is not an address)."""

    def analyze(self, text, entities, nlp_artifacts=None):  # type: ignore[no-untyped-def]
        return [r for r in super().analyze(text, entities, nlp_artifacts) if r.end - r.start >= 5]


_NAME_CUES = (
    "患者|病人|病患|姓名|医生|医师|护士|家属|联系人|监护人|户主|客户|持卡人|户名|签字|签名|经办人"
    "|申请人|被保险人|投保人|受益人|主治医师|主治医生|主任医师|责任护士|检查者|报告人|审核人"
)
_NAME_STOP = (
    r"(?=[^" + _CJK + r"]|$|男|女|先生|女士|小姐|医生|医师|大夫|护士|主任|教授|老师|因|于|在|的|是|和|与|及|"
    r"今|昨|于|入|出|来|到|就|经|诉|主|等|，|。)"
)


def name_cue_recognizer_zh() -> RegexRecognizer:
    """Chinese names after cue words (患者张伟) or before titles (王医生). Low confidence:
    a complement to the LAC/jieba model, and the only name finder in pattern-only mode."""
    specs = [
        RegexSpec(
            "after cue",
            re.compile(rf"(?:{_NAME_CUES})\s*[:：]?\s*(?P<v>{_SURNAME}[{_CJK}]{{1,2}}?){_NAME_STOP}"),
            0.5,
            group="v",
        ),
        RegexSpec(
            "before title",
            re.compile(
                rf"(?:(?<![{_CJK}])|(?<=[请找问向给和与及是被叫]))(?P<v>{_SURNAME}[{_CJK}]{{0,2}}?)"
                r"(?:先生|女士|小姐|医生|医师|大夫|护士|主任|教授|老师)"
            ),
            0.45,
            group="v",
        ),
    ]
    return RegexRecognizer(entity=C.PERSON, specs=specs, name="CnNameCueRecognizer")


def zh_recognizers(config: C.DeidConfig) -> list[EntityRecognizer]:
    """The Chinese pattern recognizers for ``config`` (model-based names are in ``ner``)."""
    del config
    return [
        resident_id_recognizer(),
        cn_phone_recognizer(),
        medical_record_recognizer_zh(),
        address_recognizer_zh(),
        name_cue_recognizer_zh(),
    ]
