"""Walking a generated CRD's OpenAPI schema, for the tests that check every field of it."""
from __future__ import annotations

from typing import Iterator


def walk(schema: dict, path: str = "") -> Iterator[tuple[str, dict]]:
    """(path, node) for the node and every property and list item below it."""
    yield path, schema
    for name, prop in (schema.get("properties") or {}).items():
        yield from walk(prop, f"{path}.{name}")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")
