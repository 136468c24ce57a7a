"""Clinical-note PHI (i2b2 2014 categories): table-driven recognizer cases, the i2b2 reader,
the scorer, the re-surrogated notes and the recall target on the shipped notes."""

from __future__ import annotations

import json

import pytest

from ffa_lora.deid import DeidConfig, Deidentifier, DeidFileError
from ffa_lora.deid.clinical_evalset import resurrogate
from ffa_lora.deid.evaluate import clinical_evaluation, evaluate_notes, score_note
from ffa_lora.deid.i2b2 import ClinicalNote, PhiMention, builtin_notes, parse_i2b2, to_i2b2

POSITIVE = [
    # (text, value that must be covered by a span of any type)
    ("P:   Follow up with Dr. Hobbs in 3 months.", "Hobbs"),
    ("will contact Dr. Thorne's service", "Thorne"),
    ("Xzavian G. Tavares, M.D.\nXGT:holmes\n", "Xzavian G. Tavares"),
    ("Xzavian G. Tavares, M.D.\nXGT:holmes\n", "holmes"),
    ("\nGPP/church/olinger\n", "church"),
    ("\nJS/ab\n", "JS/ab"),
    ("Owen M Gallagher, M.D.", "Owen M Gallagher"),
    ("PCP:  Gilbert Perez\nAttending: YBARRA", "Gilbert Perez"),
    ("NAME:    Villegas, Yosef  \n", "Villegas, Yosef"),
    ("Discussed with Gilbert Perez yesterday.", "Gilbert Perez"),
    ("Dictated by:  FILBERT BRIGHT, M.D.    FB59", "FB59"),
    ("MRN:      8249813", "8249813"),
    ("MR:\t8249813", "8249813"),
    ("Unit No: 123-45-67", "123-45-67"),
    ("OROZCO,KYLE   560-40-78-5   VISIT", "560-40-78-5"),
    ("____________  XW277/90683 \n", "XW277/90683"),
    ("Accession # 88123456 received", "88123456"),
    ("Mike Ivan, MD, EHMS pager 84710", "84710"),
    ("call x4-1234 with questions", "4-1234"),
    ("Fax: 617.555.0198", "617.555.0198"),
    ("Home phone 555-0142 after 5", "555-0142"),
    ("portal https://portal.example.org/u/jroe.", "https://portal.example.org/u/jroe"),
    ("User: jroe12 logged in", "jroe12"),
    ("SILVER RIDGE EMERGENCY DEPT VISIT", "SILVER RIDGE"),
    ("transferred from Lakeview General Hospital today", "Lakeview"),
    ("admitted to Room 412B", "412B"),
    ("a 94-year-old woman", "94"),
    ("age 92, lives alone", "92"),
    ("Record date: 2093-03-14", "2093-03-14"),
    ("seen at PCP on 2/03 with EKG", "2/03"),
    ("s/p CABG x 4 in 3/80.", "3/80"),
    ("I have not seen him since November.", "November"),
    ("admitted 14-Mar-2093 for cath", "14-Mar-2093"),
    ("seen March 14th for follow-up", "March 14th"),
    ("renal catheterization on 8-09-83, who", "8-09-83"),
    ("diagnosed in 2069 with DM", "2069"),
    ("plans to visit over Thanksgiving", "Thanksgiving"),
    ("lives at 12 Oak Street, Boston, MA 02114", "Boston, MA 02114"),
    ("PO Box 1234", "PO Box 1234"),
    ("admitted on the third of July", "third of July"),
    ("seen on the 3rd of July", "3rd of July"),
    ("the provider license number is 1841007193.", "1841007193"),
    ("member ID is HPX-77-40921", "HPX-77-40921"),
    ("plate 8XYZ432, VIN 1HGCM82633A004352", "8XYZ432"),
    ("plate 8XYZ432, VIN 1HGCM82633A004352", "1HGCM82633A004352"),
    ("Progress note: Ana Ostrowski (MRN 5583920) was seen", "Ana Ostrowski"),
    ("Consult requested for patient Reyes-Villalobos today", "Reyes-Villalobos"),
    ("reach her at m.roe@mail.example today", "m.roe@mail.example"),
    ("also charted as Dana Whitfield in the old system", "Dana Whitfield"),
    ("she prefers to be called 'Birdie' on the ward", "Birdie"),
    ("formerly known as Lucas Amsel", "Lucas Amsel"),
    ("trial enrollment code MAPLE-2210 assigned", "MAPLE-2210"),
    ("fingerprint template FP-88Q2 stored", "FP-88Q2"),
    ("photo saved as jdoe_face_01.png.", "jdoe_face_01.png"),
    ("lives in Kern County with her son", "Kern County"),
    ("moved to the city of Bakersfield last year", "Bakersfield"),
    ("the ZIP code on file is 93301.", "93301"),
    ("export row patientMRN7712093 (no addendum)", "7712093"),
]

NEGATIVE = [
    # (text, value that no span may touch)
    ("BP 120/80, HR 59", "120/80"),
    ("pain 5/10 at rest", "5/10"),
    ("strength 5/5 bilaterally", "5/5"),
    ("stopped 2/2 to chest pain", "2/2"),
    ("Vicodin Es 7.5/750 1 TAB PO BID", "7.5/750"),
    ("a 70 yo M with NIDDM", "70"),
    ("58 year-old male", "58"),
    ("The Emergency Department called", "Emergency Department"),
    ("CODE: FULL", "FULL"),
    ("HEENT: Pupils equal", "Pupils"),
    ("Will check FLP.", "Will"),
    ("Metformin 850 MG BID", "850"),
    ("ASSESSMENT AND PLAN:", "PLAN"),
    ("total of 2000 mg daily", "2000"),
    ("serial dilutions were done", "dilutions"),
    ("code 1HGCM82633A004353 fails the check digit", "1HGCM82633A004353"),
    ("on the third attempt", "third"),
    ("a condition known as Takotsubo cardiomyopathy", "Takotsubo"),
    ("study drug held for 2 days", "study"),
    ("ACLS protocol followed", "ACLS"),
    ("chest X-ray image reviewed", "image"),
]


@pytest.fixture(scope="module")
def clinical_tagger() -> Deidentifier:
    return Deidentifier(DeidConfig(operator="tag", languages=("en",)), site_secret=None)


def _covering(deid: Deidentifier, text: str, value: str) -> list[str]:
    start = text.index(value)
    end = start + len(value)
    spans = deid.analyze(text)
    return [s.entity_type for s in spans if s.start <= start and s.end >= end]


@pytest.mark.parametrize(("text", "value"), POSITIVE)
def test_clinical_phi_found(clinical_tagger: Deidentifier, text: str, value: str) -> None:
    assert _covering(clinical_tagger, text, value), clinical_tagger.analyze(text)


@pytest.mark.parametrize(("text", "value"), NEGATIVE)
def test_clinical_non_phi_kept(clinical_tagger: Deidentifier, text: str, value: str) -> None:
    start = text.index(value)
    end = start + len(value)
    touched = [s for s in clinical_tagger.analyze(text) if s.start < end and s.end > start]
    assert not touched, touched


def test_clinical_switch_off_keeps_general_behaviour() -> None:
    off = Deidentifier(DeidConfig(operator="tag", languages=("en",), clinical=False),
                       site_secret=None)
    text = "seen at PCP on 2/03, pager 84710"
    assert off.scrub(text) == text


def test_types_of_clinical_spans(clinical_tagger: Deidentifier) -> None:
    out = clinical_tagger.scrub(
        "MR: 8249813 Acc # 88123456 pager 84710 https://x.org/a a 95-year-old "
        "at Lakeview General Hospital"
    )
    assert out == (
        "MR: <MEDICAL_RECORD_NUMBER> Acc # <ID_NUMBER> pager <PHONE_NUMBER> <URL> "
        "a <AGE>-year-old at <FACILITY>"
    )


# --- the i2b2 reader -------------------------------------------------------------------

_DOC = (
    "<?xml version='1.0' encoding='utf8'?>\n<deIdi2b2>\n<TEXT><![CDATA[Seen by Dr. Roe & "
    "team on 3/14.]]></TEXT>\n<TAGS>\n"
    '<NAME id="P0" start="12" end="15" text="Roe" TYPE="DOCTOR" comment="" />\n'
    '<DATE id="P1" start="26" end="30" text="3/14" TYPE="DATE" comment="" />\n'
    "</TAGS>\n</deIdi2b2>\n"
)


def test_parse_i2b2_and_round_trip() -> None:
    note = parse_i2b2(_DOC, name="x.xml")
    assert note.text == "Seen by Dr. Roe & team on 3/14."
    assert [(m.category, m.subtype, note.text[m.start : m.end]) for m in note.phi] == [
        ("NAME", "DOCTOR", "Roe"), ("DATE", "DATE", "3/14")]
    assert parse_i2b2(to_i2b2(note), name="x.xml") == note


@pytest.mark.parametrize(("doc", "message"), [
    (_DOC.replace('start="12" end="15"', 'start="11" end="14"'), "do not hold"),
    (_DOC.replace('end="30"', 'end="99"'), "outside"),
    (_DOC.replace('start="12"', 'start="x"'), "integer start/end"),
    ("<!DOCTYPE x [<!ENTITY a 'b'>]>" + _DOC.split("\n", 1)[1], "DOCTYPE"),
    ("<deIdi2b2><TEXT>x</TEXT>", "well-formed"),
    ("<other><TEXT>x</TEXT></other>", "deIdi2b2"),
])
def test_bad_i2b2_documents_are_refused(doc: str, message: str) -> None:
    with pytest.raises(DeidFileError, match=message):
        parse_i2b2(doc, name="bad.xml")


def test_builtin_notes_are_the_five_philter_notes() -> None:
    notes = builtin_notes()
    assert [n.name for n in notes] == ["110-01.xml", "110-02.xml", "110-03.xml", "110-04.xml",
                                       "111-01.xml"]
    assert sum(len(n.phi) for n in notes) == 46
    assert {m.category for n in notes for m in n.phi} == {"DATE", "NAME", "ID", "CONTACT",
                                                          "LOCATION"}


# --- the scorer ------------------------------------------------------------------------

def test_scorer_entity_and_token_level() -> None:
    text = "Dr. Ann Lee saw him, 95 yo, 70 yo wife, MRN 1234567."
    note = ClinicalNote("n", text, (
        PhiMention("NAME", "DOCTOR", 4, 11), PhiMention("AGE", "AGE", 21, 23),
        PhiMention("AGE", "AGE", 28, 30), PhiMention("ID", "MEDICALRECORD", 44, 51),
    ))
    from ffa_lora.deid.evaluate import ClinicalReport

    report = ClinicalReport()
    # "Ann" covered, "Lee" not: not recalled, not leaked; the 95 found; MRN missed;
    # one false positive on "him".
    score_note(note, [(4, 7), (21, 23), (16, 19)], report)
    doc = report.per_category["NAME:DOCTOR"]
    assert (doc.support, doc.recalled, doc.leaked, doc.tokens, doc.tokens_recalled) == (1, 0, 0, 2, 1)
    assert report.per_category["AGE:AGE"].recalled == 1
    assert report.per_category["ID:MEDICALRECORD"].leaked == 1
    assert report.not_scored == 1  # the age of 70
    assert report.total.support == 3 and report.total.recall == pytest.approx(1 / 3)
    assert report.precision == pytest.approx(2 / 3)
    assert report.token_precision == pytest.approx(2 / 3)


def test_resurrogated_notes_keep_shapes_and_valid_annotations() -> None:
    notes = builtin_notes()
    fresh = resurrogate(notes, copies=2, seed=3)
    assert len(fresh) == 10 and fresh == resurrogate(notes, copies=2, seed=3)
    for new, old in zip(fresh[:5], notes, strict=True):
        assert len(new.phi) == len(old.phi)
        assert parse_i2b2(to_i2b2(new), name=new.name) == new  # offsets hold
        for m_new, m_old in zip(new.phi, old.phi, strict=True):
            a, b = new.text[m_new.start : m_new.end], old.text[m_old.start : m_old.end]
            assert m_new.category == m_old.category
            if m_old.category in ("ID", "CONTACT"):
                assert a != b and [c.isdigit() for c in a] == [c.isdigit() for c in b]
            if m_old.category == "NAME" and b.isupper():
                assert a.isupper()


def test_recall_target_on_the_i2b2_notes(pattern_tagger: Deidentifier) -> None:
    result = clinical_evaluation(pattern_tagger.analyze, copies=3, seed=1)
    real, fresh = result["i2b2_notes"], result["i2b2_resurrogated"]
    assert real["recall"] >= 0.95 and fresh["recall"] >= 0.95, (real, fresh)  # type: ignore[index]
    assert real["precision"] >= 0.9  # type: ignore[index]


def test_general_config_misses_what_clinical_finds() -> None:
    off = Deidentifier(DeidConfig(operator="tag", use_lac=False, name_fallback="none",
                                  clinical=False), site_secret=None)
    report = evaluate_notes(off.analyze, builtin_notes())
    assert report.total.recall < 0.8  # the recognizers above are what closes the gap


def test_bench_reports_clinical_scores(capsys: pytest.CaptureFixture[str]) -> None:
    from ffa_lora_tools.bench.deid import main

    assert main(["--n", "30", "--modes", "pattern", "--clinical-copies", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    clinical = out["modes"]["pattern"]["clinical"]
    assert clinical["i2b2_notes"]["notes"] == 5 and clinical["i2b2_resurrogated"]["notes"] == 5
    assert "clinical_phi_recall" in out["meets_targets"]
    assert "Villegas" not in json.dumps(out)


# --- Philter, the comparison engine ---------------------------------------------------

def test_philter_stand_in_tagger() -> None:
    from ffa_lora.deid.philter_engine import _stand_in_pos_tag

    assert _stand_in_pos_tag(["Smith", " ", "84710", "pain"]) == [
        ("Smith", "NNP"), (" ", "SP"), ("84710", "CD"), ("pain", "NN")]


def test_philter_needs_nltk_or_says_how_to_get_it() -> None:
    from ffa_lora.deid.philter_engine import PhilterAnalyzer, philter_available

    if philter_available():
        pytest.skip("nltk is installed: the comparison itself is tested below")
    from ffa_lora.errors import DeidError

    with pytest.raises(DeidError, match="pip install"):
        PhilterAnalyzer()


def test_philter_comparison_on_the_notes() -> None:
    from ffa_lora.deid.philter_engine import PhilterAnalyzer, philter_available, union

    if not philter_available():
        pytest.skip("nltk not installed (optional: pip install nltk)")
    philter = PhilterAnalyzer()
    pattern = Deidentifier(DeidConfig(operator="tag", use_lac=False, name_fallback="none"),
                           site_secret=None)
    notes = builtin_notes()
    alone = evaluate_notes(philter.analyze, notes)
    both = evaluate_notes(union(pattern.analyze, philter.analyze), notes)
    assert alone.total.recall >= 0.9 and alone.token_precision < 0.9
    assert both.total.recall >= max(alone.total.recall,
                                    evaluate_notes(pattern.analyze, notes).total.recall)


def test_safe_harbor_notes_from_deidgate() -> None:
    from ffa_lora.deid.clinical_evalset import safe_harbor_notes

    notes = safe_harbor_notes()
    if notes is None:
        pytest.skip("deidgate not installed (requirements/data.txt)")
    assert len(notes) == 15 and sum(len(n.phi) for n in notes) == 38
    ages = [n.text[m.start : m.end] for n in notes for m in n.phi if m.category == "AGE"]
    assert ages == ["94"]
    for note in notes:
        assert parse_i2b2(to_i2b2(note), name=note.name) == note
