"""Your own data for ``ffa-lora demo --data DIR``: one CSV file per site plus a test file.

The folder::

    DIR/test.csv        the held-out test set the coordinator scores every global adapter on
    DIR/<site>.csv      one file per site: every other ``*.csv`` in DIR; the file's name (without
                        ``.csv``) is the site's name
    DIR/sites/<site>.csv  the same, when the sites are kept in a ``sites/`` subfolder (then DIR
                        holds no CSV besides ``test.csv``)

Every file has a header row; the delimiter (``,``, ``;`` or tab) is read from it. The files are
UTF-8 (a byte-order mark is fine); ``--encoding`` reads others.

Columns (each flag overrides its rule):

* text (``--text-column``): a column named ``text``, ``sentence``, ``review``, ``content``,
  ``body``, ``message``, ``comment``, ``note``, ``tweet`` or ``document`` (first in that order,
  case and spaces ignored); otherwise the only column of free text, i.e. not numbers, at least
  half of its values distinct and at least half of them with a space in them.
* label (``--label-column``): a column named ``label``, ``labels``, ``class``, ``category``,
  ``target``, ``sentiment`` or ``y``; otherwise the only other column with between 2 and
  :data:`MAX_LABEL_VALUES` distinct values, each used twice on average (an id column is not).

A column the rules cannot settle (none fits, or several do) is an error that lists the
candidates. The label set is the union of the values in every file, sorted (numerically when
every value is a whole number); ``--labels a,b,c`` fixes the set and its order instead, and then
every value must be one of those names (or an index into them).

Checks, each an error that says what to fix: at least :data:`MIN_SITES` site files and a
``test.csv``; every file readable in the encoding, with the chosen columns and no empty text or
label; at least :data:`MIN_SITE_ROWS` rows and two classes per site, :data:`MIN_TEST_ROWS` test
rows; no test label that no site has. Errors name the file, the line and the column, and show
label values only (never a text).
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ffa_lora.data.builtin import BUILTIN_NAMES, DemoData
from ffa_lora.data.dataset import Dataset, normalize_text, stratified_split
from ffa_lora.errors import DataError

__all__ = [
    "LABEL_COLUMN_NAMES",
    "MAX_LABEL_VALUES",
    "MIN_SITES",
    "MIN_SITE_ROWS",
    "MIN_TEST_ROWS",
    "TEXT_COLUMN_NAMES",
    "Columns",
    "OwnData",
    "OwnDataFiles",
    "Table",
    "detect_columns",
    "find_files",
    "is_data_folder",
    "load_own_data",
    "read_table",
]

TEXT_COLUMN_NAMES: tuple[str, ...] = (
    "text",
    "sentence",
    "review",
    "content",
    "body",
    "message",
    "comment",
    "note",
    "tweet",
    "document",
)
LABEL_COLUMN_NAMES: tuple[str, ...] = (
    "label",
    "labels",
    "class",
    "category",
    "target",
    "sentiment",
    "y",
)
#: a label column has at most this many distinct values (more: pass --label-column)
MAX_LABEL_VALUES = 50
MIN_SITES = 2
MIN_SITE_ROWS = 10
MIN_TEST_ROWS = 10
TEST_FILE = "test.csv"
SITES_FOLDER = "sites"
# A site becomes the client "site-<name>": the name must fit a certificate id (64 characters).
_SITE_RE = re.compile(r"[A-Za-z0-9._-]{1,59}")
_DELIMITERS = (",", ";", "\t")
_SHOWN_VALUE_CHARS = 40
_SHOWN_VALUES = 10


@dataclass(frozen=True)
class OwnDataFiles:
    """The files of a data folder: ``sites`` maps each site's name to its CSV."""

    sites: dict[str, Path]
    test: Path


@dataclass(frozen=True)
class Table:
    """One CSV file as read: its columns, and its rows with their line numbers."""

    path: Path
    columns: tuple[str, ...]
    rows: list[tuple[int, dict[str, str]]]


@dataclass(frozen=True)
class Columns:
    """The text and label columns, and how each was chosen (for the run's log)."""

    text: str
    label: str
    text_reason: str
    label_reason: str


@dataclass(frozen=True)
class OwnData:
    """A data folder loaded for the demo: the data as the built-ins give it, the columns used
    and notes worth showing the user (nothing in them quotes a text)."""

    data: DemoData
    columns: Columns
    files: OwnDataFiles
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        """``data.summary()`` plus the folder and the columns (no text)."""
        return {
            **self.data.summary(),
            "folder": str(self.files.test.parent),
            "text_column": self.columns.text,
            "label_column": self.columns.label,
        }


# ---------------------------------------------------------------------------------------------
# the folder


def is_data_folder(value: str) -> bool:
    """Whether ``--data VALUE`` names a folder rather than a built-in data set."""
    return value not in BUILTIN_NAMES and Path(value).is_dir()


def find_files(folder: Path) -> OwnDataFiles:
    """The test file and one file per site in ``folder`` (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"{folder} is not a folder; --data takes a built-in name "
            f"({', '.join(BUILTIN_NAMES)}) or a folder of CSV files"
        )
    top = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
    test = next((p for p in top if p.name.lower() == TEST_FILE), None)
    others = [p for p in top if p is not test]
    sites_dir = folder / SITES_FOLDER
    if sites_dir.is_dir():
        if others:
            raise DataError(
                f"{folder} has both a {SITES_FOLDER}/ folder and site files beside "
                f"{TEST_FILE} ({', '.join(p.name for p in others)}); keep the sites "
                f"in one place: move those files into {SITES_FOLDER}/ or remove it"
            )
        site_files = sorted(
            p for p in sites_dir.iterdir() if p.is_file() and p.suffix.lower() == ".csv"
        )
        where = sites_dir
    else:
        site_files, where = others, folder
    if test is None:
        raise DataError(
            f"{folder} has no {TEST_FILE}: put the held-out test records (same columns "
            f"as the site files) in {folder / TEST_FILE}"
        )
    if len(site_files) < MIN_SITES:
        other = sorted(
            {p.suffix for p in where.iterdir() if p.is_file() and p.suffix.lower() != ".csv"}
        )
        hint = f" (found files ending {', '.join(other)}: save them as CSV)" if other else ""
        raise DataError(
            f"{where} has {len(site_files)} site file(s){hint}; a federation needs at least "
            f"{MIN_SITES}: one <site>.csv per site beside {TEST_FILE}"
        )
    sites: dict[str, Path] = {}
    for p in site_files:
        name = p.stem
        if not _SITE_RE.fullmatch(name) or name in (".", ".."):
            raise DataError(
                f"{p}: the file name {name!r} names the site and must be 1-59 characters "
                "of A-Z a-z 0-9 . _ -; rename the file (e.g. bank-a.csv)"
            )
        if name.lower() in {s.lower() for s in sites}:
            raise DataError(f"{p}: two site files differ only in case ({name}); rename one")
        sites[name] = p
    return OwnDataFiles(sites=sites, test=test)


# ---------------------------------------------------------------------------------------------
# reading


def _delimiter(header: str) -> str:
    return max(_DELIMITERS, key=lambda d: (header.count(d), d == ","))


def read_table(path: Path, *, encoding: str = "utf-8") -> Table:
    """Read one CSV file (header row, delimiter from the header) into a :class:`Table`."""
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        with path.open(encoding=enc, newline="") as fh:
            header = fh.readline()
            if not header.strip():
                raise DataError(
                    f"{path}: the file is empty or its first line is blank; the first "
                    "line must name the columns (e.g. text,label)"
                )
            fh.seek(0)
            reader = csv.DictReader(fh, delimiter=_delimiter(header))
            columns = tuple(c.strip() for c in (reader.fieldnames or ()))
            _check_header(path, columns)
            reader.fieldnames = list(columns)
            rows = []
            for row in reader:
                if None in row:
                    raise DataError(
                        f"{path}: line {reader.line_num} has more fields than the header "
                        f"({len(columns)} columns); quote texts that contain the delimiter"
                    )
                rows.append((reader.line_num, {k: (v or "").strip() for k, v in row.items()}))
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not valid {encoding} text (byte {exc.start}); save the file as "
            "UTF-8, or pass its encoding with --encoding (e.g. --encoding latin-1)"
        ) from None
    except LookupError:
        raise DataError(
            f"--encoding {encoding!r} is not an encoding Python knows; use e.g. "
            "utf-8, latin-1 or cp1252"
        ) from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc}); check the quoting") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror})") from None
    return Table(path=path, columns=columns, rows=rows)


def _check_header(path: Path, columns: tuple[str, ...]) -> None:
    if any(not c for c in columns):
        raise DataError(f"{path}: the header has an empty column name; name every column")
    repeated = sorted(c for c, n in Counter(columns).items() if n > 1)
    if repeated:
        raise DataError(
            f"{path}: the header names {', '.join(map(repr, repeated))} more than once; "
            "give every column its own name"
        )


# ---------------------------------------------------------------------------------------------
# columns


def _norm(name: str) -> str:
    return re.sub(r"[\s_-]+", "", name.lower())


def _by_name(
    columns: Sequence[str], names: Sequence[str], exclude: str | None = None
) -> str | None:
    normalized = {_norm(c): c for c in columns if c != exclude}
    return next((normalized[n] for n in names if n in normalized), None)


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _column_values(tables: Sequence[Table], column: str) -> list[str]:
    return [row[column] for t in tables for _, row in t.rows if row.get(column)]


def _looks_like_text(values: list[str]) -> bool:
    if not values or all(_is_number(v) for v in values):
        return False
    distinct = len(set(values)) / len(values)
    spaced = sum(1 for v in values if " " in v) / len(values)
    return distinct >= 0.5 and spaced >= 0.5


def _looks_like_label(values: list[str]) -> bool:
    distinct = len(set(values))
    return 2 <= distinct <= MAX_LABEL_VALUES and 2 * distinct <= len(values)


def detect_columns(
    tables: Sequence[Table], *, text_column: str | None = None, label_column: str | None = None
) -> Columns:
    """Choose the text and label columns (see the module docstring); every file must have them."""
    common = [c for c in tables[0].columns if all(c in t.columns for t in tables)]
    for flag, given in (("--text-column", text_column), ("--label-column", label_column)):
        if given is not None:
            _require_column(tables, given, flag)
    if text_column is not None:
        text, text_reason = text_column, "given by --text-column"
    else:
        text, text_reason = _detect_text(tables, common, exclude=label_column)
    if label_column is not None:
        label, label_reason = label_column, "given by --label-column"
    else:
        label, label_reason = _detect_label(tables, common, exclude=text)
    if text == label:
        raise DataError(
            f"the text and the label column are both {text!r}; pass --text-column and "
            "--label-column with two different columns"
        )
    return Columns(text=text, label=label, text_reason=text_reason, label_reason=label_reason)


def _require_column(tables: Sequence[Table], column: str, flag: str) -> None:
    for t in tables:
        if column not in t.columns:
            raise DataError(
                f"{t.path}: no column {column!r} ({flag}); its columns are {', '.join(t.columns)}"
            )


def _detect_text(
    tables: Sequence[Table], common: list[str], *, exclude: str | None
) -> tuple[str, str]:
    named = _by_name(common, TEXT_COLUMN_NAMES, exclude)
    if named is not None:
        return named, f"named {named!r}"
    candidates = [c for c in common if c != exclude and _looks_like_text(_column_values(tables, c))]
    if len(candidates) == 1:
        return candidates[0], "the only column of free text"
    found = (
        f"the columns {', '.join(candidates)} all look like"
        if candidates
        else "no column looks like"
    )
    raise DataError(
        f"cannot tell which column holds the text: {found} free text (columns in every "
        f"file: {', '.join(common) or 'none'}); pass --text-column NAME"
    )


def _detect_label(tables: Sequence[Table], common: list[str], *, exclude: str) -> tuple[str, str]:
    named = _by_name(common, LABEL_COLUMN_NAMES, exclude)
    if named is not None:
        return named, f"named {named!r}"
    candidates = [
        c for c in common if c != exclude and _looks_like_label(_column_values(tables, c))
    ]
    if len(candidates) == 1:
        return candidates[0], "the only other column with a few repeated values"
    found = f"the columns {', '.join(candidates)} all have" if candidates else "no other column has"
    raise DataError(
        f"cannot tell which column holds the label: {found} 2 to {MAX_LABEL_VALUES} "
        f"repeated values (columns in every file: {', '.join(common)}); "
        "pass --label-column NAME"
    )


# ---------------------------------------------------------------------------------------------
# labels


def _shown(values: Sequence[str]) -> str:
    """Distinct label values for an error message. Only a few short ones are quoted: many or
    long values are more likely texts in the wrong column, and texts are never shown."""
    if len(values) > _SHOWN_VALUES:
        return (
            f"{len(values)} distinct values, not shown (too many for labels: "
            "check the label column)"
        )
    short = [repr(v) for v in values if len(v) <= _SHOWN_VALUE_CHARS]
    rest = len(values) - len(short)
    return ", ".join(short + ([f"{rest} long values, not shown"] if rest else []))


def _is_int(value: str) -> bool:
    return value.lstrip("-").isdigit()


def label_names(
    tables: Sequence[Table], column: str, given: Sequence[str] | None
) -> tuple[str, ...]:
    """The classes in index order: ``given``, or the sorted union of the files' values."""
    if given is not None:
        names = tuple(n.strip() for n in given)
        if len(names) < 2 or any(not n for n in names) or len(set(names)) != len(names):
            raise DataError(
                "--labels needs at least two distinct, non-empty names, comma-separated "
                "(e.g. --labels negative,neutral,positive)"
            )
        return names
    values = {row[column] for t in tables for _, row in t.rows if row[column]}
    if all(_is_int(v) for v in values):
        return tuple(sorted(values, key=int))
    return tuple(sorted(values))


def _to_dataset(table: Table, columns: Columns, names: tuple[str, ...]) -> Dataset:
    index = {n: i for i, n in enumerate(names)}
    texts, labels, unknown = [], [], []
    for line, row in table.rows:
        text, label = row[columns.text], row[columns.label]
        for col, value in ((columns.text, text), (columns.label, label)):
            if not value:
                raise DataError(
                    f"{table.path}: line {line}: column {col!r} is empty; fill it or remove the row"
                )
        if label in index:
            labels.append(index[label])
        elif _is_int(label) and 0 <= int(label) < len(names):
            labels.append(int(label))
        else:
            unknown.append(label)
        texts.append(text)
    if unknown:
        raise DataError(
            f"{table.path}: {len(unknown)} rows have a label that is not one of "
            f"--labels {','.join(names)}: {_shown(sorted(set(unknown)))}; add them to "
            "--labels or fix the rows"
        )
    return Dataset(texts=texts, labels=labels, label_names=names)


# ---------------------------------------------------------------------------------------------
# checks and loading


def _check_sites(parts: dict[str, Dataset], files: OwnDataFiles) -> None:
    for site, data in parts.items():
        if len(data) < MIN_SITE_ROWS:
            raise DataError(
                f"{files.sites[site]}: {len(data)} rows; a site needs at least "
                f"{MIN_SITE_ROWS} to train on (merge small sites or add records)"
            )
        classes = [n for n, k in data.label_counts().items() if k]
        if len(classes) < 2:
            raise DataError(
                f"{files.sites[site]}: every row has the label {_shown(classes)}; a site "
                "needs examples of at least two classes to learn to tell them apart"
            )


def _check_test(test: Dataset, parts: dict[str, Dataset], files: OwnDataFiles) -> list[str]:
    if len(test) < MIN_TEST_ROWS:
        raise DataError(
            f"{files.test}: {len(test)} rows; the test set needs at least {MIN_TEST_ROWS}"
        )
    trained = {y for d in parts.values() for y in d.labels}
    unseen = sorted(test.label_names[y] for y in set(test.labels) - trained)
    if unseen:
        raise DataError(
            f"{files.test} has labels that no site file has: {_shown(unseen)}; add "
            "training examples of them to a site file or drop those test rows"
        )
    notes = []
    untested = [
        n for i, n in enumerate(test.label_names) if i in trained and i not in set(test.labels)
    ]
    if untested:
        notes.append(f"the test set has no example of {_shown(untested)}")
    absent = [n for i, n in enumerate(test.label_names) if i not in trained]
    if absent:
        notes.append(f"no site has an example of {_shown(absent)} (from --labels)")
    seen = {normalize_text(t) for d in parts.values() for t in d.texts}
    leaked = sum(1 for t in test.texts if normalize_text(t) in seen)
    if leaked:
        notes.append(
            f"{leaked} test texts also appear in a site file: the test score overstates "
            "accuracy on new records"
        )
    return notes


def load_own_data(
    folder: Path,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    labels: Sequence[str] | None = None,
    encoding: str = "utf-8",
    seed: int = 0,
    max_train_per_site: int | None = None,
    max_test: int | None = None,
) -> OwnData:
    """Read, check and convert a data folder (see the module docstring).

    ``max_train_per_site`` keeps that many (seeded random) rows per site, ``max_test`` that
    many test rows (label-stratified), for quick runs; the checks apply to the full files.

    Raises:
        DataError: with what to fix, for every problem listed in the module docstring.
    """
    files = find_files(Path(folder))
    site_tables = {s: read_table(p, encoding=encoding) for s, p in files.sites.items()}
    test_table = read_table(files.test, encoding=encoding)
    tables = [*site_tables.values(), test_table]
    for t in tables:
        if not t.rows:
            raise DataError(
                f"{t.path}: a header but no rows; add labelled records or remove the file"
            )
    columns = detect_columns(tables, text_column=text_column, label_column=label_column)
    names = label_names(tables, columns.label, labels)
    parts = {s: _to_dataset(t, columns, names) for s, t in site_tables.items()}
    test = _to_dataset(test_table, columns, names)
    _check_sites(parts, files)
    notes = _check_test(test, parts, files)
    parts, test = _cap(
        parts, test, seed=seed, max_train_per_site=max_train_per_site, max_test=max_test
    )
    data = DemoData(
        name=f"folder:{Path(folder).name}",
        train_parts=parts,
        test=test,
        label_names=names,
        train=Dataset.concat(list(parts.values())),
    )
    return OwnData(data=data, columns=columns, files=files, notes=notes)


def _cap(
    parts: dict[str, Dataset],
    test: Dataset,
    *,
    seed: int,
    max_train_per_site: int | None,
    max_test: int | None,
) -> tuple[dict[str, Dataset], Dataset]:
    if max_train_per_site is not None:
        rng = np.random.default_rng(seed)
        parts = {
            s: d
            if len(d) <= max_train_per_site
            else d.subset(np.sort(rng.permutation(len(d))[:max_train_per_site]))
            for s, d in parts.items()
        }
    if max_test is not None and len(test) > max_test:
        _, test = stratified_split(test, test_fraction=max_test / len(test), seed=seed)
    return parts, test
