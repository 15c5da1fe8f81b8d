"""`kubetune-eval score`: outputs made elsewhere scored as an EvalJob scores them; errors name
file and line and exit 3 (bad data) or 2 (bad settings)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetune_api.evaluation import ExactMatchSpec, RougeSpec
from kubetune_trainer.evaluation import cli
from kubetune_trainer.evaluation.rouge import rouge
from kubetune_trainer.evaluation.textmetrics import bleu, exact_match_rows

PREDICTIONS = ["the cat sat on the mat", "a quick brown fox", "hello world"]
REFERENCES = [{"a": "the cat sat on a mat", "b": "a cat was on the mat"},
              {"a": "the quick brown fox jumps", "b": ["a fast brown fox", "quick fox"]},
              {"a": "Hello, world!", "b": "hi"}]


def write(tmp_path: Path, predictions: list[str], references: list[dict]) -> tuple[str, str]:
    (tmp_path / "pred.txt").write_text("".join(p + "\n" for p in predictions), encoding="utf-8")
    (tmp_path / "refs.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in references),
                                         encoding="utf-8")
    return str(tmp_path / "pred.txt"), str(tmp_path / "refs.jsonl")


@pytest.fixture
def score(capsys, caplog):
    """Runs `kubetune-eval score` with these flags: (exit code, the printed JSON, the logged errors)."""
    def run(predictions: str, references: str, *flags: str) -> tuple[int, dict | None, str]:
        caplog.clear()
        code = cli.main(["score", "--predictions", predictions, "--references", references, *flags])
        return code, json.loads(capsys.readouterr().out) if code == 0 else None, caplog.text
    return run


def test_scores_with_the_evaljob_defaults(tmp_path, score):
    code, result, _ = score(*write(tmp_path, PREDICTIONS, REFERENCES), "--reference-fields", "a,b")
    references = [["the cat sat on a mat", "a cat was on the mat"],
                  ["the quick brown fox jumps", "a fast brown fox", "quick fox"], ["Hello, world!", "hi"]]
    expected, rouge_signature = rouge(PREDICTIONS, references, RougeSpec())
    expected["bleu"], bleu_signature = bleu(PREDICTIONS, references)
    matches = exact_match_rows(PREDICTIONS, references, ExactMatchSpec())
    expected["exactMatch"] = sum(matches) / len(matches)
    assert code == 0 and result == {"examples": 3, "scores": expected,
                                    "signatures": {"rouge": rouge_signature, "bleu": bleu_signature}}
    assert expected["exactMatch"] == pytest.approx(1 / 3)  # "hello world" = "Hello, world!" normalized


def test_metrics_and_tokenizers_are_chosen_by_flags(tmp_path, score):
    files = write(tmp_path, ["我们明天去北京开会"], [{"zh": "我们明天要去北京开会"}])
    code, result, _ = score(*files, "--reference-fields", "zh", "--metrics", "bleu,rouge,token_f1",
                            "--bleu-tokenize", "zh", "--rouge-tokenize", "char")
    assert code == 0 and set(result["scores"]) >= {"bleu", "rouge1", "tokenF1"} and "exactMatch" not in result["scores"]
    assert result["scores"]["bleu"] > 0 and result["scores"]["rouge1"] > 0.8
    assert "|tok:zh|" in result["signatures"]["bleu"] and "|tok:char|" in result["signatures"]["rouge"]


@pytest.mark.parametrize("predictions, references, fields, message", [
    (PREDICTIONS[:2], REFERENCES, "a", "pred.txt line 3: no prediction there (pred.txt has 2 lines, refs.jsonl has 3 rows"),
    (PREDICTIONS, REFERENCES[:2], "a", "refs.jsonl line 3: no reference row there"),
    (PREDICTIONS, [REFERENCES[0], {"b": "x"}, REFERENCES[2]], "a", "refs.jsonl line 2: reference field"),
])
def test_bad_data_exits_3_naming_file_and_line(tmp_path, score, predictions, references, fields, message):
    code, _, err = score(*write(tmp_path, predictions, references), "--reference-fields", fields)
    assert code == 3 and message in err.replace(str(tmp_path) + "/", ""), err


def test_missing_files_exit_3(tmp_path, score):
    predictions, references = write(tmp_path, PREDICTIONS, REFERENCES)
    code, _, err = score(str(tmp_path / "none.txt"), references, "--reference-fields", "a")
    assert code == 3 and "none.txt: cannot read the predictions file" in err
    code, _, err = score(predictions, str(tmp_path / "none.jsonl"), "--reference-fields", "a")
    assert code == 3 and "none.jsonl: dataset file not found" in err


def test_bad_settings_exit_2(tmp_path, score):
    files = write(tmp_path, PREDICTIONS, REFERENCES)
    code, _, err = score(*files, "--reference-fields", ",")
    assert code == 2 and "dataset.referenceFields is required" in err
    with pytest.raises(SystemExit) as exit_:
        score(*files, "--reference-fields", "a", "--bleu-tokenize", "klingon")
    assert exit_.value.code == 2
