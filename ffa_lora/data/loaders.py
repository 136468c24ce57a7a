"""Loaders for user data: CSV/TSV or JSON-lines files with a text column and a label column.

Errors name the file, the column and the row, never the content of a row (it may hold
personal data).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from ffa_lora.data.dataset import Dataset
from ffa_lora.errors import DataError

TableFormat = Literal["csv", "tsv", "jsonl"]

MAX_CLASSES = 4096
"""Most classes a data file may have; integer labels are class indices below it (a label value
such as 10000000000 would otherwise make a name for every index up to it)."""

_SUFFIX_FORMATS: dict[str, TableFormat] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


def _detect_format(path: Path) -> TableFormat:
    fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
            "use .csv, .tsv or .jsonl, or pass fmt='csv'|'tsv'|'jsonl'"
        )
    return fmt


def _iter_rows(path: Path, fmt: TableFormat, encoding: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (1-based line number, row dict)."""
    if fmt == "jsonl":
        with path.open(encoding=encoding) as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"{path}: line {lineno} is not valid JSON ({exc.msg}); "
                        "a .jsonl file needs one JSON object per line"
                    ) from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}: line {lineno} is a JSON {type(row).__name__}, not an object")
                yield lineno, row
        return
    delimiter = "\t" if fmt == "tsv" else ","
    with path.open(encoding=encoding, newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        if reader.fieldnames is None:
            raise DataError(f"{path}: the file is empty (no header row)")
        for row in reader:
            if None in row:
                raise DataError(
                    f"{path}: line {reader.line_num} has more fields than the header "
                    f"({len(reader.fieldnames)} columns); check quoting and the delimiter"
                )
            yield reader.line_num, row


def _is_int_like(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.strip().lstrip("-").isdigit()


def load_table(
    path: str | Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    group_column: str | None = None,
    label_names: Sequence[str] | None = None,
    fmt: TableFormat | None = None,
    encoding: str = "utf-8",
) -> Dataset:
    """Read a labelled text file into a :class:`Dataset`.

    Args:
        path: a ``.csv``, ``.tsv`` or ``.jsonl`` file (or any name with ``fmt`` given).
        text_column: column / JSON key holding the text.
        label_column: column / key holding the label: a class name, or a class index.
        group_column: optional column naming each example's natural site.
        label_names: the classes in index order. When given, labels may be names from this
            list or integer indices into it; anything else is an error. When omitted, integer
            labels become classes ``"0".."max"`` and string labels are sorted.
        fmt: force the format instead of inferring it from the suffix.
        encoding: text encoding of the file.

    Raises:
        DataError: missing/unreadable file, missing column, empty text or label, unknown label.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: data file not found; check the path in the configuration")
    fmt = fmt or _detect_format(p)
    if fmt not in ("csv", "tsv", "jsonl"):
        raise DataError(f"fmt must be 'csv', 'tsv' or 'jsonl', got {fmt!r}")

    texts: list[str] = []
    raw_labels: list[Any] = []
    groups: list[str] = []
    try:
        for lineno, row in _iter_rows(p, fmt, encoding):
            for col in (text_column, label_column) + ((group_column,) if group_column else ()):
                if col not in row:
                    cols = ", ".join(sorted(map(str, row.keys())))
                    raise DataError(
                        f"{p}: line {lineno} has no column {col!r} (columns: {cols}); "
                        "set the text/label column names in the configuration"
                    )
            text = row[text_column]
            label = row[label_column]
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{p}: line {lineno}: column {text_column!r} is empty or not text")
            if label is None or (isinstance(label, str) and not label.strip()):
                raise DataError(f"{p}: line {lineno}: column {label_column!r} is empty")
            texts.append(text)
            raw_labels.append(label.strip() if isinstance(label, str) else label)
            if group_column:
                groups.append(str(row[group_column]))
    except UnicodeDecodeError:
        raise DataError(
            f"{p}: not valid {encoding} text; pass the file's encoding (e.g. encoding='latin-1')"
        ) from None
    except csv.Error as exc:
        raise DataError(f"{p}: malformed {fmt.upper()} ({exc})") from None
    except OSError as exc:
        raise DataError(f"{p}: cannot read the file ({exc.strerror})") from None
    if not texts:
        raise DataError(f"{p}: no rows; a data file needs at least one labelled example")

    names, labels = _map_labels(p, label_column, raw_labels, label_names)
    return Dataset(texts=texts, labels=labels, label_names=names, groups=groups or None)


def _map_labels(
    path: Path, column: str, raw: list[Any], label_names: Sequence[str] | None
) -> tuple[tuple[str, ...], list[int]]:
    if label_names is not None:
        names = tuple(str(n) for n in label_names)
        if len(set(names)) != len(names):
            raise DataError("label_names contains duplicates")
        index = {n: i for i, n in enumerate(names)}
        labels: list[int] = []
        for i, value in enumerate(raw):
            key = str(value)
            if key in index:
                labels.append(index[key])
            elif _is_int_like(value) and 0 <= int(value) < len(names):
                labels.append(int(value))
            else:
                raise DataError(
                    f"{path}: example {i + 1}: the value in column {column!r} is not one of the "
                    f"{len(names)} configured label names nor an index into them"
                )
        return names, labels
    if all(_is_int_like(v) for v in raw):
        ints = [int(v) for v in raw]
        if min(ints) < 0:
            raise DataError(f"{path}: column {column!r} has negative class indices")
        if max(ints) >= MAX_CLASSES:
            raise DataError(
                f"{path}: column {column!r} has class index {max(ints)}; integer labels are class indices "
                f"0..{MAX_CLASSES - 1}: renumber them, or give the class names (label_names / data.labels)"
            )
        return tuple(str(i) for i in range(max(ints) + 1)), ints
    names = tuple(sorted({str(v) for v in raw}))
    index = {n: i for i, n in enumerate(names)}
    return names, [index[str(v)] for v in raw]
