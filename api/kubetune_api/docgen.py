"""Generates the README's field reference tables and the list of condition reasons from the
API models' field descriptions and the Reason enum, as crdgen generates the CRDs: one source.

`python -m kubetune_api.docgen README.md` rewrites the blocks between
`<!-- generated:NAME -->` and `<!-- /generated:NAME -->`; a test fails when they are stale.
"""
from __future__ import annotations

import argparse
import enum
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

import kubetune_api as api
from kubetune_api.crdgen import bounds_note
from kubetune_api.errors import REASON_DOCS, Reason


def _unwrap(annotation: Any) -> tuple[Any, str]:
    """(inner type, suffix): Optional[X] -> X; list[X] -> (X, '[]'); dict -> (dict, '')."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0], "[]"
    return annotation, ""


def _type_name(annotation: Any) -> str:
    inner, suffix = _unwrap(annotation)
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        name = " \\| ".join(str(member.value) for member in inner)
    elif isinstance(inner, type) and issubclass(inner, BaseModel):
        name = "object"
    elif typing.get_origin(inner) is dict:
        name = "map"
    else:
        name = getattr(inner, "__name__", str(inner))
    return f"list of {name}" if suffix else name


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.default if field.default is not PydanticUndefined else field.default_factory()
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, BaseModel) or value in ([], {}):
        return ""
    if isinstance(value, bool):
        value = str(value).lower()  # as YAML spells it
    return f"`{value!s}`".replace("|", "\\|") if value != "" else '`""`'


def _bounds(model: type[BaseModel]) -> dict[str, str]:
    """Field alias -> its bounds in words, as the CRD's descriptions say them."""
    notes = {}
    for alias, node in model.model_json_schema(by_alias=True, mode="validation").get("properties", {}).items():
        options = [o for o in node.get("anyOf", []) if o.get("type") != "null"]
        notes[alias] = bounds_note({**node, **options[0]} if len(options) == 1 else node)
    return notes


def rows(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(field path, type, default, description) for every field, nested models flattened."""
    bounds = _bounds(model)
    for name, field in model.model_fields.items():
        path = f"{prefix}{field.alias or name}"
        inner, suffix = _unwrap(field.annotation)
        description = " ".join(filter(None, [field.description, bounds.get(field.alias or name)]))
        description = description.replace("|", "\\|").replace("\n", " ")
        yield path, _type_name(field.annotation), _default(field), description
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            yield from rows(inner, f"{path}{suffix}.")


def field_table(model: type[BaseModel]) -> str:
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{path}` | {kind} | {default} | {description} |" for path, kind, default, description in rows(model)]
    return "\n".join(lines)


def reason_table() -> str:
    lines = ["| reason | meaning |", "|---|---|"]
    lines += [f"| `{reason.value}` | {REASON_DOCS[reason]} |" for reason in Reason]
    return "\n".join(lines)


BLOCKS = {
    "finetunejob-spec": lambda: field_table(api.FineTuneJobSpec),
    "finetunejob-status": lambda: field_table(api.FineTuneJobStatus),
    "evaljob-spec": lambda: field_table(api.EvalJobSpec),
    "evaljob-status": lambda: field_table(api.EvalJobStatus),
    "reasons": reason_table,
}


def render(text: str) -> str:
    """`text` with every generated block rewritten; a missing marker is an error."""
    for name, make in BLOCKS.items():
        pattern = re.compile(rf"(<!-- generated:{name} -->\n).*?(<!-- /generated:{name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"no <!-- generated:{name} --> ... <!-- /generated:{name} --> block")
        text = pattern.sub(lambda m: f"{m.group(1)}{make()}\n{m.group(2)}", text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("readme", type=Path)
    args = parser.parse_args(argv)
    args.readme.write_text(render(args.readme.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
