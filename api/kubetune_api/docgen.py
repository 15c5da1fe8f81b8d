"""Generates the reference pages under docs/reference/ from the API models, as crdgen
generates the CRDs: one source. A page per kind (its spec and status fields, nested fields
flattened, with types, defaults and bounds) and one of condition reasons.

`python -m kubetune_api.docgen --out docs/reference` (`make docs`) writes them; a test fails
when a page is stale. Adding a kind to the reference is one line in KINDS.
"""
from __future__ import annotations

import argparse
import enum
import json
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

import kubetune_api as api
from kubetune_api import runtimes
from kubetune_api.crdgen import bounds_note
from kubetune_api.errors import REASON_DOCS, Reason


def _unwrap(annotation: Any) -> tuple[Any, str]:
    """(inner type, suffix): Optional[X] -> X; list[X] -> (X, '[]'); dict -> (dict, '')."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is list:
        return _bare(typing.get_args(annotation)[0]), "[]"
    return _bare(annotation), ""


def _bare(annotation: Any) -> Any:
    """Annotated[str, constraints] -> str: the constraints are said as bounds."""
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation


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
    if isinstance(value, str) and not value.isprintable():
        value = json.dumps(value)  # "\n\n", not a line break that ends the table row
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


@dataclass(frozen=True)
class Kind:
    """One resource kind of the reference: its model (spec and status read from its fields) and
    the hand-written guide under docs/ that explains it."""

    model: type[BaseModel]
    guide: str

    @property
    def page(self) -> str:
        return f"{self.model.__name__.lower()}.md"

    def part(self, name: str) -> type[BaseModel] | None:
        field = self.model.model_fields.get(name)
        return _unwrap(field.annotation)[0] if field else None


# Every kind the API serves, in the order the docs index lists them.
KINDS = [
    Kind(api.FineTuneJob, guide="finetunejob.md"),
    Kind(api.EvalJob, guide="evaljob.md"),
    Kind(runtimes.ClusterTrainingRuntime, guide="runtimes.md"),
    Kind(runtimes.TrainingRuntime, guide="runtimes.md"),
]

HEADER = "<!-- Generated by `make docs` (python -m kubetune_api.docgen) from kubetune_api. Do not edit. -->\n"


def kind_page(kind: Kind) -> str:
    name = kind.model.__name__
    parts = [f"{HEADER}\n# {name} reference\n",
             f"{' '.join((kind.model.__doc__ or '').split())} `kubectl explain {name.lower()}.spec` "
             f"documents the same fields; [the {name} guide](../{kind.guide}) explains how they work together.\n"]
    for title in ("spec", "status"):
        model = kind.part(title)
        if model is not None:
            parts.append(f"## {title.capitalize()}\n\n{field_table(model)}\n")
    return "\n".join(parts)


def reasons_page() -> str:
    return (f"{HEADER}\n# Condition reasons\n\nThe `reason` of a job's conditions, of `status.lastFailure` "
            "and of the operator's events, with what each means.\n\n"
            f"{reason_table()}\n")


def rendered() -> dict[str, str]:
    """File name -> Markdown text of every generated reference page."""
    pages = {kind.page: kind_page(kind) for kind in KINDS}
    return {**pages, "reasons.md": reasons_page()}


def stale(out: Path) -> list[str]:
    """Names of the pages under `out` that differ from what this generates, are missing, or are
    generated pages no kind makes any more."""
    pages = rendered()
    wrong = [name for name, text in pages.items()
             if not (out / name).is_file() or (out / name).read_text(encoding="utf-8") != text]
    leftover = [path.name for path in sorted(out.glob("*.md"))
                if path.name not in pages and path.read_text(encoding="utf-8").startswith(HEADER)]
    return sorted(wrong + leftover)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/reference"), help="directory of the reference pages")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    pages = rendered()
    for name in stale(args.out):
        path = args.out / name
        if name in pages:
            path.write_text(pages[name], encoding="utf-8")
            print(f"wrote {path}", file=sys.stderr)
        else:  # a generated page whose kind is gone
            path.unlink()
            print(f"removed {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
