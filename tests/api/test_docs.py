"""The reference pages under docs/reference/ are generated from the API models (docgen), like
the CRDs: this fails when someone changes a model and not the docs (`make docs`)."""
from pathlib import Path

import kubetune_api as api
from kubetune_api import docgen
from kubetune_api.errors import REASON_DOCS, Reason

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference"


def test_reference_pages_are_up_to_date():
    assert docgen.stale(REFERENCE) == [], "docs/reference/ is stale: run `make docs`"


def test_every_kind_has_a_page_with_its_spec_and_status():
    assert [kind.model for kind in docgen.KINDS][:2] == [api.FineTuneJob, api.EvalJob]
    pages = docgen.rendered()
    for kind in docgen.KINDS:
        page = pages[kind.page]
        assert f"# {kind.model.__name__} reference" in page and f"](../{kind.guide})" in page
        assert "## Spec" in page and ("## Status" in page) == (kind.part("status") is not None)
    assert "| `InvalidSpec` |" in pages["reasons.md"]


def test_every_field_and_reason_is_documented():
    models = [kind.part(name) for kind in docgen.KINDS for name in ("spec", "status") if kind.part(name)]
    assert {api.FineTuneJobSpec, api.FineTuneJobStatus, api.EvalJobSpec, api.EvalJobStatus} <= set(models)
    for model in models:
        undocumented = [path for path, _, _, description in docgen.rows(model) if not description]
        assert undocumented == [], f"{model.__name__}: fields without a description: {undocumented}"
    assert set(REASON_DOCS) == set(Reason)


def test_table_shows_nested_fields_defaults_and_enums():
    table = docgen.field_table(api.FineTuneJobSpec)
    assert "| `lora.r` | int | `8` |" in table
    assert "| `method` | full \\| lora \\| qlora \\| prompt-tuning \\| prefix-tuning \\| ia3 \\| selective | `lora` |" in table
    assert "| `dataset.tasks[].weight` | float | `1.0` |" in table
    assert "| `output.path` | str | required |" in table


def test_a_row_is_one_line_and_constrained_types_read_as_their_type():
    table = docgen.field_table(api.EvalJobSpec)
    assert '| `dataset.fewShot.separator` | str | `"\\n\\n"` |' in table  # not a line break mid-row
    assert "| `metrics` | list of str |" in table
    assert "Annotated" not in table
    assert all(line.startswith("|") and line.endswith("|") for line in table.splitlines())


def test_stale_missing_and_leftover_pages_are_named(tmp_path):
    assert docgen.main(["--out", str(tmp_path)]) == 0
    assert docgen.stale(tmp_path) == []
    (tmp_path / "evaljob.md").write_text("edited by hand\n", encoding="utf-8")
    (tmp_path / "reasons.md").unlink()
    (tmp_path / "oldkind.md").write_text(docgen.HEADER + "a kind that is gone\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("not generated: left alone\n", encoding="utf-8")
    assert docgen.stale(tmp_path) == ["evaljob.md", "oldkind.md", "reasons.md"]
    assert docgen.main(["--out", str(tmp_path)]) == 0
    assert docgen.stale(tmp_path) == [] and not (tmp_path / "oldkind.md").exists()
    assert (tmp_path / "notes.md").exists()
