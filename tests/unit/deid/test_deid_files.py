"""File scrubbing (CSV, JSONL), atomic output, bad input, and the ``deid`` command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ffa_lora.deid import Deidentifier, DeidFileError, scrub_file, write_site_secret
from ffa_lora.deid.cli import main as deid_main
from ffa_lora.errors import DataError

ROWS = [
    {"id": "1", "note": "患者张伟，电话13812345678，邮箱zw@163.com", "label": "positive"},
    {"id": "2", "note": "Patient: Jane Roe, SSN 262-16-8118", "label": "negative"},
]
RAW = ["张伟", "13812345678", "zw@163.com", "Jane Roe", "262-16-8118"]


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_csv(tmp_path: Path, pattern_tagger: Deidentifier) -> None:
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    _write_csv(src, ROWS)
    counts = scrub_file(src, dst, deidentifier=pattern_tagger, fields=["note"])
    with open(dst, encoding="utf-8", newline="") as fh:
        out = list(csv.DictReader(fh))
    assert [r["id"] for r in out] == ["1", "2"] and out[0]["label"] == "positive"
    text = dst.read_text(encoding="utf-8")
    assert not any(v in text for v in RAW)
    assert counts == {"PERSON": 2, "PHONE_NUMBER": 1, "EMAIL_ADDRESS": 1, "US_SSN": 1}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_jsonl_all_fields_nested_and_numbers(tmp_path: Path, pattern_tagger: Deidentifier) -> None:
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    records = [{"text": ROWS[0]["note"], "meta": {"phone": 13812345678, "tags": ["zw@163.com"]},
                "score": 0.5, "ok": True}]
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n\n")
    counts = scrub_file(src, dst, deidentifier=pattern_tagger)
    out = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert out[0]["meta"] == {"phone": "<PHONE_NUMBER>", "tags": ["<EMAIL_ADDRESS>"]}
    assert out[0]["score"] == 0.5 and out[0]["ok"] is True
    assert counts["PHONE_NUMBER"] == 2


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"a": "x"}\n{not json}\n', "line 2 is not valid JSON"),
        ("list.jsonl", '["a"]\n', "expected an object"),
        ("empty.csv", "", "empty or has no header"),
        ("wide.csv", "a,b\n1,2,3\n", "more cells than the header"),
        ("data.txt", "x", "use a .csv or .jsonl"),
    ],
)
def test_bad_input(tmp_path: Path, pattern_tagger: Deidentifier, name: str, content: str,
                   message: str) -> None:
    src = tmp_path / name
    src.write_text(content, encoding="utf-8")
    dst = tmp_path / ("out" + src.suffix)
    dst.write_text("previous", encoding="utf-8")
    with pytest.raises(DeidFileError, match=message) as info:
        scrub_file(src, dst, deidentifier=pattern_tagger)
    assert isinstance(info.value, DataError)
    assert dst.read_text(encoding="utf-8") == "previous"  # untouched: atomic
    assert "{not json}" not in str(info.value)  # never echo record contents
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, dst.name])


def test_missing_column_and_file(tmp_path: Path, pattern_tagger: Deidentifier) -> None:
    src = tmp_path / "in.csv"
    _write_csv(src, ROWS)
    with pytest.raises(DeidFileError, match=r"no column\(s\) \['notes'\]"):
        scrub_file(src, tmp_path / "o.csv", deidentifier=pattern_tagger, fields=["notes"])
    with pytest.raises(DeidFileError, match="does not exist"):
        scrub_file(tmp_path / "nope.csv", tmp_path / "o.csv", deidentifier=pattern_tagger)
    with pytest.raises(DeidFileError, match="same format"):
        scrub_file(src, tmp_path / "o.jsonl", deidentifier=pattern_tagger)
    (tmp_path / "latin.csv").write_bytes("note\n\xe9t\xe9\n".encode("latin-1"))
    with pytest.raises(DeidFileError, match="not UTF-8"):
        scrub_file(tmp_path / "latin.csv", tmp_path / "o.csv", deidentifier=pattern_tagger)


def test_cli_reports_counts_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    _write_csv(src, ROWS)
    secret = write_site_secret(tmp_path / "site.secret")
    rc = deid_main([str(src), str(dst), "--fields", "note", "--secret-file", str(secret),
                    "--no-lac", "--json"])
    out = capsys.readouterr()
    assert rc == 0
    report = json.loads(out.out)
    assert report["counts"]["PHONE_NUMBER"] == 1 and report["total"] == 5
    assert not any(v in out.out + out.err for v in RAW)
    assert "<PHONE_NUMBER_" in dst.read_text(encoding="utf-8")
    rc = deid_main([str(src), str(dst), "--no-lac"])
    assert rc == 2 and "needs --secret-file" in capsys.readouterr().err
    rc = deid_main([str(src), str(tmp_path / "x.csv"), "--operator", "tag", "--fields", "zzz"])
    assert rc == 2 and "no column" in capsys.readouterr().err
