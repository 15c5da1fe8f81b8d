"""The README's field tables and reasons are generated from the API models (docgen), like
the CRDs: this fails when someone changes a model and not the README (`make docs`)."""
from pathlib import Path

import pytest

import kubetune_api as api
from kubetune_api import docgen
from kubetune_api.errors import REASON_DOCS, Reason

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_reference_is_up_to_date():
    text = README.read_text(encoding="utf-8")
    assert docgen.render(text) == text, "README.md is stale: run `make docs`"


def test_every_field_and_reason_is_documented():
    for model in (api.FineTuneJobSpec, api.FineTuneJobStatus, api.EvalJobSpec, api.EvalJobStatus):
        undocumented = [path for path, _, _, description in docgen.rows(model) if not description]
        assert undocumented == [], f"{model.__name__}: fields without a description: {undocumented}"
    assert set(REASON_DOCS) == set(Reason)


def test_table_shows_nested_fields_defaults_and_enums():
    table = docgen.field_table(api.FineTuneJobSpec)
    assert "| `lora.r` | int | `8` |" in table
    assert "| `method` | full \\| lora \\| qlora \\| prompt-tuning \\| prefix-tuning \\| ia3 \\| selective | `lora` |" in table
    assert "| `dataset.tasks[].weight` | float | `1.0` |" in table
    assert "| `output.path` | str | required |" in table


def test_missing_block_is_an_error():
    with pytest.raises(ValueError, match="no <!-- generated:finetunejob-spec -->"):
        docgen.render("no markers here")
