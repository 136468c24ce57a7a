"""``ffa-lora deid INPUT OUTPUT``: scrub a CSV or JSON Lines file and print how many entities
of each type were replaced (counts only, never values)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from ffa_lora.deid.config import ALL_ENTITIES, OPERATORS, DeidConfig
from ffa_lora.deid.engine import Deidentifier
from ffa_lora.deid.files import scrub_file
from ffa_lora.deid.keys import load_site_secret
from ffa_lora.errors import FFALoraError

_NEW_SECRET_HINT = (
    'create one with: python -c "from ffa_lora.deid import write_site_secret; '
    "write_site_secret('site.secret')\" and keep it at the site"
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (the CLI wires it as the ``deid`` subcommand)."""
    p = argparse.ArgumentParser(
        prog="ffa-lora deid",
        description="Scrub identifiers from a .csv or .jsonl file and report counts per type.",
    )
    p.add_argument("input", help="input .csv or .jsonl file")
    p.add_argument("output", help="output file of the same format (written atomically)")
    p.add_argument("--fields", help="comma-separated columns/keys to scrub (default: all)")
    p.add_argument("--operator", choices=OPERATORS, default="pseudonym",
                   help="tag, keyed pseudonym (default) or format-preserving surrogate")
    p.add_argument("--secret-file", help="site secret (hex or raw bytes, >= 256 bits); "
                   "required for pseudonym and surrogate")
    p.add_argument("--subject-field", help="column whose value keys the per-patient date shift")
    p.add_argument("--entities", help=f"comma-separated types (default: all of {', '.join(ALL_ENTITIES)})")
    p.add_argument("--languages", default="en,zh", help="recognizer sets, default en,zh")
    p.add_argument("--no-lac", action="store_true",
                   help="pattern-only Chinese names (faster, lower recall)")
    p.add_argument("--en-ner-model", help="installed spaCy pipeline package for English names")
    p.add_argument("--json", action="store_true", help="print the count report as JSON")
    return p


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    """Run the command; 0 on success, 2 on a usage or input error (message on stderr)."""
    args = build_parser().parse_args(argv)
    try:
        secret = None
        if args.secret_file:
            secret = load_site_secret(args.secret_file)
        elif args.operator != "tag":
            print(f"error: --operator {args.operator} needs --secret-file; {_NEW_SECRET_HINT}",
                  file=sys.stderr)
            return 2
        config = DeidConfig(
            operator=args.operator,
            entities=_split(args.entities),
            languages=tuple(_split(args.languages) or ()),
            use_lac=not args.no_lac,
            name_fallback="none" if args.no_lac else "jieba",
            en_ner_model=args.en_ner_model,
        )
        deidentifier = Deidentifier(config, site_secret=secret)
        counts = scrub_file(args.input, args.output, deidentifier=deidentifier,
                            fields=_split(args.fields), subject_field=args.subject_field)
    except FFALoraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _report(counts, as_json=args.json)
    return 0


def _report(counts: Counter[str], *, as_json: bool) -> None:
    total = sum(counts.values())
    if as_json:
        print(json.dumps({"counts": dict(sorted(counts.items())), "total": total}))
        return
    print("entity type              replaced")
    for etype, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"{etype:<24} {n:>8}")
    print(f"{'total':<24} {total:>8}")


if __name__ == "__main__":
    raise SystemExit(main())
