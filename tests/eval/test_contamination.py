"""Contamination: evaluation rows that overlap the training files, flagged or refused before any model loads."""
from __future__ import annotations

import csv
import json

import pytest

from kubetune_api.errors import DataError
from kubetune_api.evaluation import EvalConfig
from kubetune_trainer.evaluation import cli
from kubetune_trainer.evaluation.contamination import check_contamination
from kubetune_trainer.reporting.status_reporter import StatusReporter
from report_lines import ReportLines
from tinymodels import write_jsonl

LONG = "the quarterly budget review moved to thursday because the finance team needed two more days"
EVAL_ROWS = [
    {"dialogue": f"#Person1#: Did you hear? {LONG}.", "summary": "The review moved."},       # shares 13+ words
    {"dialogue": "Where is the nearest train station, please?", "summary": "Directions."},  # a training row, copied
    {"dialogue": "#Person1#: I would like to book a table for two tonight.", "summary": "A booking."},
    {"dialogue": "#Person1#: The weather is lovely today.", "summary": "Small talk."},
]
TRAINING_ROWS = [
    {"text": f"Memo: {LONG}, as announced on Monday.", "label": "memo"},
    {"question": "Where is the nearest  train STATION please", "answer": "directions"},
    {"text": "An unrelated row about gardening tools and seeds in spring."},
]


def _config(tmp_path, training, **contamination) -> EvalConfig:
    data = write_jsonl(tmp_path / "eval.jsonl", EVAL_ROWS)
    return EvalConfig.model_validate({
        "models": [{"name": "base", "path": "unused"}],
        "dataset": {"path": str(data), "promptTemplate": "{{ dialogue }}", "referenceFields": ["summary"]},
        "contamination": {"trainingFiles": [{"path": str(p)} for p in training], **contamination},
        "output": {"path": str(tmp_path / "out")}})


def test_shared_ngrams_and_identical_fields_are_counted_with_their_lines(tmp_path):
    training = write_jsonl(tmp_path / "train.jsonl", TRAINING_ROWS)
    report = check_contamination(_config(tmp_path, [training]))
    data = tmp_path / "eval.jsonl"
    assert (report.rows, report.overlapping, report.identical) == (4, 2, 1)
    assert report.lines == [f"{data} line 1", f"{data} line 2"]
    assert (report.training_files, report.training_rows, report.ngram, report.action) == (1, 3, 13, "flag")


def test_the_ngram_length_decides_what_counts_as_shared(tmp_path):
    twelve = " ".join(LONG.split()[:12])
    training = write_jsonl(tmp_path / "train.jsonl", [{"text": f"Elsewhere: {twelve} and more."}])
    assert check_contamination(_config(tmp_path, [training])).overlapping == 0
    assert check_contamination(_config(tmp_path, [training], ngram=12)).lines == [f"{tmp_path / 'eval.jsonl'} line 1"]


def test_chat_messages_and_csv_training_files_are_read(tmp_path):
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "hi"},
                                                               {"role": "assistant", "content": LONG}]}])
    table = tmp_path / "train.csv"
    with table.open("w", newline="") as f:
        csv.writer(f).writerows([["q", "a"], ["where is the nearest train station please", "Directions!"]])
    report = check_contamination(_config(tmp_path, [chat, table]))
    assert (report.overlapping, report.identical, report.training_files, report.training_rows) == (2, 1, 2, 2)


def test_prompt_text_the_evaluation_rows_share_is_not_overlap(tmp_path):
    # Instruction data: every row repeats a long instruction that the training rows use too.
    instruction = "Summarize the following message in one short sentence that keeps the names and the dates"
    rows = [{"instruction": instruction, "input": f"Note {i}: meet Ana on day {i}.", "output": f"Ana, day {i}."} for i in range(3)]
    data = write_jsonl(tmp_path / "eval.jsonl", rows)
    training = write_jsonl(tmp_path / "train.jsonl", [{"instruction": instruction, "input": "Note: call Bo.", "output": "Bo."},
                                                      {**rows[2]}])
    config = EvalConfig.model_validate({
        "models": [{"name": "base", "path": "unused"}],
        "dataset": {"path": str(data), "promptTemplate": "{{ instruction }} {{ input }}", "referenceFields": ["output"]},
        "contamination": {"trainingFiles": [{"path": str(training)}]}, "output": {"path": str(tmp_path / "out")}})
    report = check_contamination(config)
    assert (report.overlapping, report.identical, report.lines) == (1, 1, [f"{data} line 3"])  # the row copied whole


def test_refuse_fails_naming_the_rows_and_off_reads_nothing(tmp_path):
    training = write_jsonl(tmp_path / "train.jsonl", TRAINING_ROWS)
    with pytest.raises(DataError, match=r"2 of 4 evaluation rows overlap the training data \(1 identical to a training row.*eval.jsonl line 1"):
        check_contamination(_config(tmp_path, [training], action="refuse"))
    assert check_contamination(_config(tmp_path, [tmp_path / "missing.jsonl"], action="off")) is None
    assert check_contamination(_config(tmp_path, [])) is None


def test_a_missing_training_file_is_reported_when_flagging_and_fails_a_refusal(tmp_path):
    training = write_jsonl(tmp_path / "train.jsonl", TRAINING_ROWS)
    report = check_contamination(_config(tmp_path, [tmp_path / "missing.jsonl", training]))
    assert report.unread_files == [str(tmp_path / "missing.jsonl")] and (report.training_files, report.overlapping) == (1, 2)
    with pytest.raises(DataError, match="contamination.trainingFiles: .*missing.jsonl"):
        check_contamination(_config(tmp_path, [tmp_path / "missing.jsonl"], action="refuse"))


def _cli_config(tmp_path, model_dir, action):
    config = {"models": [{"name": "base", "path": str(model_dir)}],
              "dataset": {"path": str(write_jsonl(tmp_path / "eval.jsonl", EVAL_ROWS)), "promptTemplate": "{{ dialogue }}",
                          "referenceFields": ["summary"]},
              "metrics": ["exact_match"], "generation": {"maxNewTokens": 2},
              "contamination": {"action": action, "trainingFiles": [{"path": str(write_jsonl(tmp_path / "train.jsonl", TRAINING_ROWS))}]},
              "output": {"path": str(tmp_path / "out")}}
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(config))
    return path


def test_a_flagged_evaluation_reports_its_overlap_in_scores_and_status(tiny_model_dir, tmp_path, monkeypatch):
    log = ReportLines()
    monkeypatch.setattr(StatusReporter, "from_env", classmethod(lambda cls: cls(None, log, min_interval=0)))
    assert cli.main(["--config", str(_cli_config(tmp_path, tiny_model_dir, "flag"))]) == 0
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert (scores["contamination"]["overlapping"], scores["contamination"]["rows"]) == (2, 4)
    assert scores["models"][0]["examples"] == 4  # flagged, and evaluated
    assert log.reports()[-1]["contamination"] == scores["contamination"]


def test_refused_contamination_fails_before_any_model_loads(tiny_model_dir, tmp_path, caplog):
    assert cli.main(["--config", str(_cli_config(tmp_path, tiny_model_dir, "refuse"))]) == 3
    assert "2 of 4 evaluation rows overlap the training data" in caplog.text
    assert not (tmp_path / "out").exists()  # no predictions, no scores
