"""User data files: CSV/TSV/JSONL, label mapping, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ffa_lora.data import load_table
from ffa_lora.errors import DataError


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def test_csv_with_named_labels(tmp_path: Path) -> None:
    p = write(tmp_path / "d.csv", 'review,sentiment,site\n"great, thanks",pos,a\nawful,neg,b\nok,pos,a\n')
    ds = load_table(p, text_column="review", label_column="sentiment", group_column="site")
    assert ds.texts == ["great, thanks", "awful", "ok"]
    assert ds.label_names == ("neg", "pos") and ds.labels == [1, 0, 1]
    assert ds.groups == ["a", "b", "a"]


def test_configured_label_names_and_indices(tmp_path: Path) -> None:
    p = write(tmp_path / "d.tsv", "text\tlabel\nx\tpositive\ny\t0\nz\tneutral\n")
    ds = load_table(p, label_names=["negative", "neutral", "positive"])
    assert ds.labels == [2, 0, 1] and ds.num_labels == 3


def test_jsonl_integer_labels(tmp_path: Path) -> None:
    rows = [{"text": "a", "label": 2}, {"text": "b", "label": 0}]
    p = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    ds = load_table(p)
    assert ds.label_names == ("0", "1", "2") and ds.labels == [2, 0]


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "fragment"),
    [
        ("d.csv", "text,label\nx,1\n", {"label_column": "y"}, "no column 'y'"),
        ("d.csv", "text,label\n,1\n", {}, "empty"),
        ("d.csv", "text,label\nx,\n", {}, "empty"),
        ("d.csv", "text,label\nx,1,extra\n", {}, "more fields"),
        ("d.csv", "", {}, "empty"),
        ("d.csv", "text,label\n", {}, "no rows"),
        ("d.csv", "text,label\nx,maybe\n", {"label_names": ["no", "yes"]}, "not one of"),
        ("d.jsonl", '{"text": "x", "label": 1}\n{broken\n', {}, "line 2 is not valid JSON"),
        ("d.jsonl", "[1, 2]\n", {}, "not an object"),
        ("d.parquet", "x", {}, "suffix"),
        # a huge class index (say 10000000000) must not make a label name per index up to it;
        # 10^6 is refused the same way (and is what the old code could still afford to build)
        ("d.csv", "text,label\nx,1000000\ny,0\n", {}, "class index 1000000"),
    ],
)
def test_bad_files_raise_data_error_naming_file(
    tmp_path: Path, name: str, content: str, kwargs: dict, fragment: str
) -> None:
    p = write(tmp_path / name, content)
    with pytest.raises(DataError, match=fragment) as err:
        load_table(p, **kwargs)
    assert name in str(err.value)


def test_missing_file_and_encoding(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_table(tmp_path / "nope.csv")
    p = tmp_path / "latin.csv"
    p.write_bytes("text,label\ncaf\xe9,1\n".encode("latin-1"))
    with pytest.raises(DataError, match="encoding"):
        load_table(p)
    assert load_table(p, encoding="latin-1").texts == ["café"]


def test_error_does_not_echo_row_content(tmp_path: Path) -> None:
    secret = "Jane Doe 555-0100"
    p = write(tmp_path / "d.csv", f"text,label\n{secret},maybe\n")
    with pytest.raises(DataError) as err:
        load_table(p, label_names=["no", "yes"])
    assert "Jane" not in str(err.value) and "maybe" not in str(err.value)
