"""The light dataset checks the operator runs before launching a pod."""
from __future__ import annotations

import subprocess
import sys

import pytest

from kubetune_api.training import DatasetSpec
from kubetune_api.errors import DataError
from kubetune_trainer.data.rows import ExampleMaker, Row, check_dataset, read_rows, split_sizes
from kubetune_trainer.data.templates import template_variables
from tinymodels import TEMPLATE, make_rows, write_jsonl


def spec(path, **overrides) -> DatasetSpec:
    return DatasetSpec(path=str(path), prompt_template=overrides.pop("template", TEMPLATE), completion_field="answer", **overrides)


def test_check_dataset_accepts_good_data_and_counts_rows(dataset_file):
    assert check_dataset(spec(dataset_file)) == 48


def test_blank_lines_are_skipped_but_line_numbers_kept(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"color": "red", "animal": "cat", "answer": " cat"}\n\n{"color": "red"}\n')
    rows = read_rows(path)
    assert [r.line for r in rows] == [1, 3]
    with pytest.raises(DataError, match=r"d\.jsonl line 3: field 'animal'"):
        check_dataset(spec(path, validation_ratio=0, test_ratio=0))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: dataset file not found"):
        check_dataset(spec(tmp_path / "nope.jsonl"))


def test_bad_json_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", make_rows(5))
    path.write_text(path.read_text() + '{"color": "red",\n')
    with pytest.raises(DataError, match=r"d\.jsonl line 6: invalid JSON"):
        check_dataset(spec(path))


def test_non_object_row_names_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"color": "red", "animal": "cat", "answer": " cat"}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"d\.jsonl line 2: expected a JSON object, got list"):
        read_rows(path)


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n\n")
    with pytest.raises(DataError, match="no rows"):
        check_dataset(spec(path))
    with pytest.raises(DataError, match="no rows"):
        read_rows(path)


def test_template_variable_missing_from_a_row(tmp_path):
    rows = make_rows(10)
    del rows[6]["color"]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError, match=r"d\.jsonl line 7: field 'color' used by dataset.promptTemplate is missing"):
        check_dataset(spec(path))


def test_completion_field_missing_or_not_text(tmp_path):
    rows = make_rows(10)
    del rows[2]["answer"]
    with pytest.raises(DataError, match=r"d\.jsonl line 3: completion field 'answer' is missing"):
        check_dataset(spec(write_jsonl(tmp_path / "d.jsonl", rows)))
    rows[2]["answer"] = 7
    with pytest.raises(DataError, match=r"line 3: completion field 'answer' must be a string, got int"):
        check_dataset(spec(write_jsonl(tmp_path / "d.jsonl", rows)))


def test_template_syntax_error(dataset_file):
    with pytest.raises(DataError, match="dataset.promptTemplate: syntax error"):
        check_dataset(spec(dataset_file, template="Hello {{ color "))


def test_nested_undefined_attribute_names_the_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"meta": {"a": "x"}, "answer": "y"}] * 3 + [{"meta": {}, "answer": "y"}])
    with pytest.raises(DataError, match=r"d\.jsonl line 4: dataset.promptTemplate: .*'a'"):
        check_dataset(spec(path, template="{{ meta.a }}", validation_ratio=0, test_ratio=0))


def test_too_few_rows_for_the_splits(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", make_rows(2))
    with pytest.raises(DataError, match=r"d\.jsonl: 2 rows are too few .* need at least 3"):
        check_dataset(spec(path))
    assert check_dataset(spec(path, validation_ratio=0.5, test_ratio=0)) == 2


def test_only_the_first_rows_are_parsed_but_all_are_counted(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", make_rows(10))
    path.write_text(path.read_text() + "not json\n")
    assert check_dataset(spec(path), max_rows_to_check=10) == 11
    with pytest.raises(DataError, match="line 11"):
        check_dataset(spec(path), max_rows_to_check=11)


def test_split_sizes_give_each_nonzero_split_a_row():
    assert split_sizes(100, spec("x", validation_ratio=0.1, test_ratio=0.2)) == (70, 10, 20)
    assert split_sizes(5, spec("x", validation_ratio=0.01, test_ratio=0.01)) == (3, 1, 1)
    assert split_sizes(5, spec("x", validation_ratio=0, test_ratio=0)) == (5, 0, 0)


def test_template_variables_and_rendering():
    assert template_variables("{{ a }} {% for x in items %}{{ x }}{{ b.c }}{% endfor %}") == {"a", "items", "b"}
    example = ExampleMaker(spec("x"))(Row(1, {"color": "red", "animal": "cat", "answer": " cat"}))
    assert (example.prompt, example.completion) == ("Which animal is red cat?\nAnswer:", " cat")


def test_light_modules_import_neither_torch_nor_transformers():
    code = (
        "import sys, kubetune_trainer.data.rows, kubetune_trainer.data.templates, kubetune_api.reports;"
        "heavy = {'torch', 'transformers', 'peft', 'accelerate'} & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
