"""Prompt templates: Jinja with strict undefined variables. Light: no torch/transformers."""
from __future__ import annotations

from collections.abc import Mapping

import jinja2
from jinja2 import meta

from kubetune_trainer.errors import DataError

# Autoescape off: prompts are plain text, not HTML. Keep a trailing newline the author wrote.
_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


def compile_template(source: str, field: str = "dataset.promptTemplate") -> jinja2.Template:
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise DataError(f"{field}: syntax error on template line {e.lineno}: {e.message}") from e


def template_variables(source: str, field: str = "dataset.promptTemplate") -> set[str]:
    """The top-level names a template reads; each must be a column of the data."""
    try:
        return meta.find_undeclared_variables(_ENV.parse(source))
    except jinja2.TemplateSyntaxError as e:
        raise DataError(f"{field}: syntax error on template line {e.lineno}: {e.message}") from e


def render_prompt(template: jinja2.Template, row: Mapping, where: str, field: str = "dataset.promptTemplate") -> str:
    """Renders one row; `where` (e.g. 'data.jsonl line 3') prefixes any error."""
    try:
        return template.render(row)
    except jinja2.UndefinedError as e:
        raise DataError(f"{where}: {field}: {e.message}") from e
    except Exception as e:  # a filter or expression failing on this row's values
        raise DataError(f"{where}: {field} failed: {type(e).__name__}: {e}") from e
