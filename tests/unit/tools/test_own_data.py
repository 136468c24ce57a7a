"""``ffa-lora demo --data DIR``: finding the files, detecting columns and labels, and one clear
error for each problem of a data folder."""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from ffa_lora.errors import DataError
from ffa_lora_tools.demo import DemoSettings, parse_args
from ffa_lora_tools.own_data import MIN_SITE_ROWS, find_files, load_own_data

POSITIVE = ["great service today", "the staff was very good", "love the new card", "thanks a lot"]
NEGATIVE = ["awful delay again", "hate the fee", "bad service and late", "my bag was lost"]
NEUTRAL = ["the flight is at noon", "a seat by the window", "card arrived", "ok time"]
CLASSES = {"good": POSITIVE, "bad": NEGATIVE, "meh": NEUTRAL}


def rows(
    n: int, seed: int, classes: tuple[str, ...] = ("good", "bad", "meh")
) -> list[dict[str, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = classes[i % len(classes)]
        words = rng.choice(CLASSES.get(label, NEUTRAL))
        text = f"{words} {rng.choice(['', 'indeed', 'really'])} #{seed}-{i}".strip()
        out.append(
            {
                "ticket": f"T{seed}{i:04d}",
                "feedback_txt": text,
                "verdict": label,
                "score": f"{rng.random():.4f}",
            }
        )
    return out


def write(
    path: Path, records: list[dict[str, str]], *, delimiter: str = ",", encoding: str = "utf-8"
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding=encoding) as fh:
        w = csv.DictWriter(fh, fieldnames=list(records[0]), delimiter=delimiter)
        w.writeheader()
        w.writerows(records)
    return path


def folder(tmp_path: Path, sites: int = 3, n: int = 30) -> Path:
    for i in range(sites):
        write(tmp_path / f"clinic-{i}.csv", rows(n, seed=i))
    write(tmp_path / "test.csv", rows(n, seed=99))
    return tmp_path


def test_columns_and_labels_are_detected_from_the_content(tmp_path: Path) -> None:
    write(tmp_path / "clinic-0.csv", rows(30, seed=0), delimiter=";")  # a semicolon export too
    write(tmp_path / "clinic-1.csv", rows(30, seed=1))
    write(tmp_path / "test.csv", rows(12, seed=9))
    own = load_own_data(tmp_path)
    assert (own.columns.text, own.columns.label) == ("feedback_txt", "verdict")
    assert own.columns.text_reason == "the only column of free text"
    assert own.data.label_names == ("bad", "good", "meh")  # sorted union of the files
    assert {s: len(d) for s, d in own.data.train_parts.items()} == {"clinic-0": 30, "clinic-1": 30}
    assert len(own.data.test) == 12 and own.data.test.label_counts() == {
        "bad": 4,
        "good": 4,
        "meh": 4,
    }
    first = own.data.train_parts["clinic-0"]
    assert first.texts[0] == rows(30, seed=0)[0]["feedback_txt"]
    assert first.label_names[first.labels[0]] == "good"
    assert own.summary()["text_column"] == "feedback_txt" and own.notes == []


def test_named_columns_win_and_flags_win_over_names(tmp_path: Path) -> None:
    for name in ("a", "b", "test"):
        write(
            tmp_path / f"{name}.csv",
            [
                {"Text": r["feedback_txt"], "Label": r["verdict"], "other": r["feedback_txt"]}
                for r in rows(20, seed=len(name))
            ],
        )
    own = load_own_data(tmp_path)
    assert (own.columns.text, own.columns.text_reason) == ("Text", "named 'Text'")
    own = load_own_data(tmp_path, text_column="other", labels=["meh", "good", "bad"])
    assert own.columns.text == "other" and own.data.label_names == ("meh", "good", "bad")


def test_sites_subfolder_and_integer_labels_in_numeric_order(tmp_path: Path) -> None:
    to_int = {"good": "10", "bad": "2", "meh": "9"}
    for i in range(2):
        write(
            tmp_path / "sites" / f"s{i}.csv",
            [{"text": r["feedback_txt"], "label": to_int[r["verdict"]]} for r in rows(15, seed=i)],
        )
    write(
        tmp_path / "test.csv",
        [{"text": r["feedback_txt"], "label": to_int[r["verdict"]]} for r in rows(15, seed=7)],
    )
    own = load_own_data(tmp_path)
    assert set(own.data.train_parts) == {"s0", "s1"}
    assert own.data.label_names == ("2", "9", "10")


def test_caps_keep_the_checks_on_the_full_files(tmp_path: Path) -> None:
    own = load_own_data(folder(tmp_path), max_train_per_site=12, max_test=15, seed=3)
    assert all(len(d) == 12 for d in own.data.train_parts.values())
    assert len(own.data.test) == 15


def test_notes_on_leaked_test_texts(tmp_path: Path) -> None:
    folder(tmp_path)
    write(tmp_path / "test.csv", rows(30, seed=0))  # the same records as clinic-0
    own = load_own_data(tmp_path)
    assert any("30 test texts also appear" in n for n in own.notes)


def _drop(name: str) -> Callable[[Path], None]:
    return lambda d: (d / name).unlink()


def _rewrite(name: str, records: list[dict[str, str]], **kw: str) -> Callable[[Path], None]:
    return lambda d: write(d / name, records, **kw) and None


def _raw(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda d: (d / name).write_bytes(data) and None


BAD_FOLDERS: list[tuple[str, Callable[[Path], None], dict[str, object], str]] = [
    ("no test file", _drop("test.csv"), {}, "has no test.csv"),
    (
        "one site",
        lambda d: [_drop(f"clinic-{i}.csv")(d) for i in (1, 2)] and None,
        {},
        "at least 2",
    ),
    (
        "site with one class",
        _rewrite("clinic-1.csv", rows(30, seed=1, classes=("good",))),
        {},
        "every row has the label 'good'",
    ),
    (
        "too few rows",
        _rewrite("clinic-2.csv", rows(MIN_SITE_ROWS - 1, seed=2)),
        {},
        f"{MIN_SITE_ROWS - 1} rows; a site needs at least {MIN_SITE_ROWS}",
    ),
    (
        "test label unseen",
        _rewrite("test.csv", rows(30, seed=9, classes=("good", "new"))),
        {},
        "labels that no site file has: 'new'",
    ),
    (
        "unknown column flag",
        lambda d: None,
        {"text_column": "body"},
        "no column 'body' (--text-column)",
    ),
    (
        "label not in --labels",
        lambda d: None,
        {"labels": ["good", "bad"]},
        "not one of --labels good,bad: 'meh'",
    ),
    (
        "latin-1 file",
        _raw("clinic-0.csv", "text,label\nna\xefve caf\xe9 visit,good\n".encode("latin-1")),
        {},
        "not valid utf-8 text",
    ),
    (
        "empty text",
        _rewrite(
            "clinic-0.csv",
            [
                *rows(20, seed=0),
                {"ticket": "x", "feedback_txt": "", "verdict": "good", "score": "1"},
            ],
        ),
        {},
        "line 22: column 'feedback_txt' is empty",
    ),
    (
        "bad site name",
        lambda d: (d / "clinic-0.csv").rename(d / "clinic 0.csv"),
        {},
        "rename the file",
    ),
    (
        "two label candidates",
        lambda d: (
            [
                write(
                    p,
                    [
                        {**r, "channel": "email" if i % 2 else "phone"}
                        for i, r in enumerate(rows(30, seed=k))
                    ],
                )
                for k, p in enumerate(d.glob("*.csv"))
            ]
            and None
        ),
        {},
        "the columns verdict, channel all have",
    ),
    ("header only", _raw("clinic-1.csv", b"feedback_txt,verdict\n"), {}, "a header but no rows"),
    (
        "ragged row",
        _raw("clinic-1.csv", b"text,label\nok then,good,extra\n"),
        {},
        "more fields than the header",
    ),
    ("empty file", _raw("test.csv", b""), {}, "first line must name the columns"),
]


@pytest.mark.parametrize(
    ("case", "damage", "kwargs", "message"), BAD_FOLDERS, ids=[c[0] for c in BAD_FOLDERS]
)
def test_every_problem_is_a_clear_error(
    tmp_path: Path,
    case: str,
    damage: Callable[[Path], None],
    kwargs: dict[str, object],
    message: str,
) -> None:
    damage(folder(tmp_path))
    with pytest.raises(DataError) as err:
        load_own_data(tmp_path, **kwargs)  # type: ignore[arg-type]
    assert message in str(err.value)


def test_latin1_reads_with_the_encoding_flag(tmp_path: Path) -> None:
    for name, seed in (("a", 1), ("b", 2), ("test", 3)):
        write(
            tmp_path / f"{name}.csv",
            [{**r, "feedback_txt": r["feedback_txt"] + " caf\xe9"} for r in rows(12, seed=seed)],
            encoding="latin-1",
        )
    own = load_own_data(tmp_path, encoding="latin-1")
    assert own.data.train_parts["a"].texts[0].endswith("caf\xe9")


def test_errors_never_quote_a_text(tmp_path: Path) -> None:
    folder(tmp_path)
    with pytest.raises(DataError) as err:
        load_own_data(
            tmp_path, label_column="feedback_txt", text_column="ticket", labels=["x", "y"]
        )
    assert "great service" not in str(err.value) and "not shown" in str(err.value)


def test_sites_beside_a_sites_folder_are_ambiguous(tmp_path: Path) -> None:
    folder(tmp_path)
    write(tmp_path / "sites" / "x.csv", rows(20, seed=4))
    with pytest.raises(DataError, match="both a sites/ folder and site files"):
        find_files(tmp_path)


def test_demo_arguments_for_a_folder(tmp_path: Path) -> None:
    data = folder(tmp_path / "My Clinics")
    s = parse_args(
        ["--data", str(data), "--labels", "good,bad,meh", "--text-column", "feedback_txt"]
    )
    assert s.data == str(data.resolve()) and s.name == "my-clinics-demo"
    assert s.labels == ("good", "bad", "meh") and s.text_column == "feedback_txt"
    assert parse_args([]).name == DemoSettings.name


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "nowhere"], "neither a built-in data set"),
        (["--data", "bank", "--labels", "a,b"], "apply to --data DIR"),
        (["--data", "DIR", "--partition", "iid"], "drop --partition and --sites"),
    ],
)
def test_demo_argument_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    argv = [str(folder(tmp_path)) if a == "DIR" else a for a in argv]
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err
