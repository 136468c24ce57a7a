"""Scrubbing whole records and files (CSV or JSON Lines), written atomically."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ffa_lora.deid.config import DeidFileError
from ffa_lora.deid.engine import Deidentifier

_CSV = {".csv"}
_JSONL = {".jsonl", ".ndjson"}


def scrub_value(value: Any, deidentifier: Deidentifier, counts: Counter[str],
                subject: str | None = None) -> Any:
    """Scrub a string, or every string inside a list/dict; numbers are scrubbed as text
    (a phone number stored as an integer is still a phone number)."""
    if isinstance(value, str):
        text, found = deidentifier.scrub_with_counts(value, subject=subject)
        counts.update(found)
        return text
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        text, found = deidentifier.scrub_with_counts(str(value), subject=subject)
        if found:
            counts.update(found)
            return text
        return value
    if isinstance(value, list):
        return [scrub_value(v, deidentifier, counts, subject) for v in value]
    if isinstance(value, dict):
        return {k: scrub_value(v, deidentifier, counts, subject) for k, v in value.items()}
    return value


def scrub_records(
    records: Iterable[dict[str, Any]],
    *,
    deidentifier: Deidentifier,
    fields: list[str] | None = None,
    subject_field: str | None = None,
    counts: Counter[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield each record with ``fields`` (all values if None) scrubbed.

    ``subject_field`` names a column whose value keys the per-patient date shift.
    ``counts``, if given, is updated with the per-type counts.
    """
    tally = counts if counts is not None else Counter()
    for record in records:
        subject = None
        if subject_field is not None and record.get(subject_field) is not None:
            subject = str(record[subject_field])
        out = dict(record)
        for key in (fields if fields is not None else list(record)):
            if key in out:
                out[key] = scrub_value(out[key], deidentifier, tally, subject)
        yield out


def scrub_file(
    input_path: str | Path,
    output_path: str | Path,
    *,
    deidentifier: Deidentifier,
    fields: list[str] | None = None,
    subject_field: str | None = None,
) -> Counter[str]:
    """Scrub a ``.csv`` or ``.jsonl`` file into ``output_path`` and return per-type counts.

    The output appears atomically (temporary file in the same folder, then rename) and only
    when the whole input was read without error; on any error the output is untouched and a
    ``DeidFileError`` says what was wrong (never with record contents).
    """
    src, dst = Path(input_path), Path(output_path)
    kind = _kind(src)
    if _kind(dst) != kind:
        raise DeidFileError(
            f"output {dst.name} must have the same format as the input ({src.suffix})"
        )
    if not src.is_file():
        raise DeidFileError(f"input file {src} does not exist or is not a file")
    if not dst.parent.is_dir():
        raise DeidFileError(f"output folder {dst.parent} does not exist; create it first")
    counts: Counter[str] = Counter()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        with open(src, encoding="utf-8-sig", newline="") as fin, os.fdopen(
            fd, "w", encoding="utf-8", newline=""
        ) as fout:
            if kind == "csv":
                _scrub_csv(fin, fout, deidentifier, fields, subject_field, counts, src)
            else:
                _scrub_jsonl(fin, fout, deidentifier, fields, subject_field, counts, src)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp_name, dst)
    except UnicodeDecodeError:
        _discard(tmp_name)
        raise DeidFileError(f"{src.name} is not UTF-8 text; convert it to UTF-8") from None
    except BaseException:
        _discard(tmp_name)
        raise
    return counts


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _CSV:
        return "csv"
    if suffix in _JSONL:
        return "jsonl"
    raise DeidFileError(
        f"cannot tell the format of {path.name}: use a .csv or .jsonl (.ndjson) file"
    )


def _discard(tmp_name: str) -> None:
    try:
        os.unlink(tmp_name)
    except FileNotFoundError:
        pass


def _scrub_csv(fin: Any, fout: Any, deid: Deidentifier, fields: list[str] | None,
               subject_field: str | None, counts: Counter[str], src: Path) -> None:
    reader = csv.DictReader(fin)
    try:
        header = reader.fieldnames
    except csv.Error as exc:
        raise DeidFileError(f"{src.name}: malformed CSV header ({exc})") from None
    if not header:
        raise DeidFileError(f"{src.name} is empty or has no header row")
    wanted = fields if fields is not None else list(header)
    missing = [f for f in [*wanted, *([subject_field] if subject_field else [])] if f not in header]
    if missing:
        raise DeidFileError(f"{src.name} has no column(s) {missing}; columns are {list(header)}")
    writer = csv.DictWriter(fout, fieldnames=header)
    writer.writeheader()
    try:
        for row in scrub_records(_checked_rows(reader, src), deidentifier=deid, fields=wanted,
                                 subject_field=subject_field, counts=counts):
            writer.writerow(row)
    except csv.Error as exc:
        raise DeidFileError(f"{src.name}: malformed CSV near line {reader.line_num} ({exc})") \
            from None


def _checked_rows(reader: csv.DictReader, src: Path) -> Iterator[dict[str, Any]]:
    for row in reader:
        if None in row:
            raise DeidFileError(
                f"{src.name}: line {reader.line_num} has more cells than the header"
            )
        yield row


def _scrub_jsonl(fin: Any, fout: Any, deid: Deidentifier, fields: list[str] | None,
                 subject_field: str | None, counts: Counter[str], src: Path) -> None:
    seen: set[str] = set()

    def records() -> Iterator[dict[str, Any]]:
        for lineno, line in enumerate(fin, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DeidFileError(
                    f"{src.name}: line {lineno} is not valid JSON ({exc.msg} at column {exc.colno})"
                ) from None
            if not isinstance(record, dict):
                raise DeidFileError(
                    f"{src.name}: line {lineno} is a JSON {type(record).__name__}, "
                    "expected an object"
                )
            seen.update(record)
            yield record

    for record in scrub_records(records(), deidentifier=deid, fields=fields,
                                subject_field=subject_field, counts=counts):
        fout.write(json.dumps(record, ensure_ascii=False) + "\n")
    if fields is not None and seen:
        missing = [f for f in fields if f not in seen]
        if missing:
            raise DeidFileError(f"{src.name}: no record has the field(s) {missing}")
