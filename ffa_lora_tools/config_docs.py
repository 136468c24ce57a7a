"""``ffa-lora config-docs``: the configuration reference, ``docs/config.md``, generated from the
pydantic models in :mod:`services.common.config`.

Every section of a service's YAML file becomes one table (field, type, default, constraints,
description), grouped by what reads it: the fields every service has, then one group per role
block (``coordinator:``, ``edge:``, ``client:``, and any role added to ``ServiceConfig`` later).
``--check`` exits 1 when the file differs from what the models give (the drift test runs the
same comparison); :func:`undocumented` lists fields without a description.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from services.common.config import ServiceConfig

__all__ = ["DEFAULT_OUT", "main", "render", "sections", "undocumented"]

DEFAULT_OUT = Path("docs/config.md")
_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}

HEADER = """\
# Configuration reference

<!-- Generated from services/common/config.py by `ffa-lora config-docs` (`make config-docs`).
     Do not edit: tests/unit/tools/test_config_docs.py fails when this file is out of date. -->

Each service reads one YAML file, `ffa-lora serve ROLE --config FILE`. The file names its
`service`, its mutual-TLS files, optionally its metrics endpoint and log level, and the block
of its role. Unknown keys are errors, and every error names the field and says how to fix it.
The coordinator's `federation:` block decides the federation (model, training, rounds, secure
sum, privacy, rank); clients receive what they need with each round. `ffa-lora init` writes
these files for a whole federation; `ffa-lora demo` writes them for a local run.

A section's fields are written under its path, e.g. `coordinator.federation.rounds.min_clients`
is

```yaml
coordinator:
  federation:
    rounds:
      min_clients: 3
```

Relative paths are relative to the directory the service is started in.
"""


def _section_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (directly or as ``Model | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        models = [
            a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        return models[0] if len(models) == 1 else None
    return None


def sections(model: type[BaseModel], path: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    """``(path, model)`` for ``model`` and every section below it, depth first."""
    yield path, model
    for name, field in model.model_fields.items():
        sub = _section_of(field.annotation)
        if sub is not None:
            yield from sections(sub, f"{path}.{name}" if path else name)


def _type(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        described = [m.description for m in args[1:] if isinstance(m, FieldInfo) and m.description]
        return described[0] if described else _type(args[0])
    if origin is Literal:
        return " | ".join(f"`{json.dumps(a)}`" for a in args)
    if origin in (Union, types.UnionType):
        kept = [_type(a) for a in args if a is not type(None)]
        return " or ".join(kept) + (" or `null`" if type(None) in args else "")
    if origin is list:
        return f"list of {_type(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if tp is Any:
        return "any"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "section"
    return _SCALARS.get(tp, getattr(tp, "__name__", str(tp)))


def _value(value: Any) -> str:
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, Path):
        value = str(value)
    return f"`{json.dumps(value)}`"


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        return _value(field.default_factory())  # type: ignore[call-arg]
    return "" if field.default is PydanticUndefined else _value(field.default)


_BOUNDS: tuple[tuple[type, str, str], ...] = (
    (at.Ge, "ge", "≥"),
    (at.Gt, "gt", ">"),
    (at.Le, "le", "≤"),
    (at.Lt, "lt", "<"),
)


def _constraints(field: FieldInfo) -> str:
    out: list[str] = []
    for m in field.metadata:
        for kind, attr, sign in _BOUNDS:
            if isinstance(m, kind):
                out.append(f"{sign} {getattr(m, attr)}")
        if isinstance(m, at.MinLen):
            out.append(f"at least {m.min_length} item{'s' if m.min_length != 1 else ''}")
        if isinstance(m, at.MaxLen):
            out.append(f"at most {m.max_length} items")
        pattern = getattr(m, "pattern", None)
        if isinstance(pattern, str):
            out.append(f"matches `{pattern}`")
    return ", ".join(out)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _doc(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())


def _checks(model: type[BaseModel]) -> list[str]:
    """The docstrings of the model's cross-field validators."""
    validators = model.__pydantic_decorators__.model_validators.values()
    docs = [getattr(v.func, "__doc__", None) for v in validators]
    return [" ".join(d.split()) for d in docs if d]


def _table(path: str, model: type[BaseModel]) -> list[str]:
    title = f"`{path}`" if path else "Top level"
    lines = [f"### {title}", ""]
    if _doc(model):
        lines += [_doc(model), ""]
    for check in _checks(model):
        lines += [f"Checked: {check}", ""]
    lines += [
        "| field | type | default | constraints | description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, field in model.model_fields.items():
        sub = _section_of(field.annotation)
        kind = (
            f"section [`{path + '.' if path else ''}{name}`](#{_anchor(path, name)})"
            if sub
            else _type(field.annotation)
        )
        if sub is not None and type(None) in get_args(field.annotation):
            kind += " or `null`"
        about = field.description or (_doc(sub) if sub is not None else "")
        lines.append(
            f"| `{name}` | {_cell(kind)} | {_cell(_default(field))} | "
            f"{_cell(_constraints(field))} | {_cell(about)} |"
        )
    return lines + [""]


def _anchor(path: str, name: str) -> str:
    full = f"{path}.{name}" if path else name
    return full.replace(".", "").lower()


def _groups(root: type[BaseModel]) -> list[tuple[str, list[tuple[str, type[BaseModel]]]]]:
    """Sections grouped: the fields every service has, then each role block."""
    roles = list(get_args(root.model_fields["service"].annotation))
    common: list[tuple[str, type[BaseModel]]] = []
    by_role: dict[str, list[tuple[str, type[BaseModel]]]] = {r: [] for r in roles}
    for path, model in sections(root):
        head = path.split(".", 1)[0]
        by_role.get(head, common).append((path, model))
    return [("Every service", common)] + [
        (f"{r.replace('_', ' ').capitalize()} (`service: {r}`)", by_role[r]) for r in roles
    ]


def render(root: type[BaseModel] = ServiceConfig) -> str:
    """The whole reference as Markdown."""
    lines = [HEADER]
    for title, group in _groups(root):
        lines += [f"## {title}", ""]
        for path, model in group:
            lines += _table(path, model)
    return "\n".join(lines).rstrip() + "\n"


def undocumented(root: type[BaseModel] = ServiceConfig) -> list[str]:
    """Paths of the fields without a description, and of sections without a docstring."""
    missing = []
    for path, model in sections(root):
        if not _doc(model):
            missing.append(f"{path or '(top level)'} (section docstring)")
        missing += [
            f"{path + '.' if path else ''}{n}"
            for n, f in model.model_fields.items()
            if not f.description and _section_of(f.annotation) is None
        ]
    return missing


def main(argv: list[str] | None = None) -> int:
    """Write the reference, or with ``--check`` report whether the file is current."""
    p = argparse.ArgumentParser(
        prog="ffa-lora config-docs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"the file (default {DEFAULT_OUT})"
    )
    p.add_argument(
        "--check", action="store_true", help="exit 1 when the file is out of date; write nothing"
    )
    a = p.parse_args(argv)
    text = render()
    if a.check:
        current = a.out.read_text(encoding="utf-8") if a.out.exists() else ""
        if current != text:
            print(
                f"{a.out} is out of date with services/common/config.py; "
                "run `ffa-lora config-docs`",
                file=sys.stderr,
            )
            return 1
        print(f"{a.out} is current")
        return 0
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text, encoding="utf-8")
    print(f"wrote {a.out}")
    return 0
