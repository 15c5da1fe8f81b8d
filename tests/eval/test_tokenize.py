"""The tokenize settings: Chinese text scores with BLEU's zh and ROUGE's char (both 0 with the
defaults, which split nothing in it), the tokenizer is in each signature, and the defaults give
exactly the numbers of sacreBLEU 13a and rouge-score as before."""
from __future__ import annotations

import importlib.util

import pytest
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from kubetune_api.errors import MetricError
from kubetune_api.evaluation import EvalConfig, RougeSpec
from kubetune_trainer.checks import check_evaluation
from kubetune_trainer.evaluation.rouge import ROUGE_TYPES, CharTokenizer, WhitespaceTokenizer, rouge
from kubetune_trainer.evaluation.textmetrics import bleu

CHINESE = (["我们明天去北京开会。", "他喜欢喝绿茶"],
           [["我们明天要去北京开会。", "明天我们在北京开会"], ["他很喜欢喝茶。"]])
ENGLISH = (["The cats were sitting on the mat.\nThey slept.", "A quick brown fox jumped."],
           [["The cat sat on the mat. It was sleeping.", "Cats sit."], ["The quick brown fox jumps over it."]])


def test_char_tokenizer_splits_chinese_characters_and_keeps_other_words():
    assert CharTokenizer().tokenize("我爱北京 Tiananmen, ２０２４年! naïve_café") == [
        "我", "爱", "北", "京", "tiananmen", "2024", "年", "naïve", "café"]
    assert WhitespaceTokenizer().tokenize("我们 明天 去 北京 。 OK") == ["我们", "明天", "去", "北京", "。", "ok"]


def test_chinese_scores_only_with_a_chinese_tokenizer():
    assert bleu(*CHINESE)[0] == 0.0 and rouge(*CHINESE)[0]["rouge1"] == 0.0
    score, signature = bleu(*CHINESE, tokenize="zh")
    assert score > 20 and "|tok:zh|" in signature
    scores, signature = rouge(*CHINESE, RougeSpec(tokenize="char"))
    assert scores["rouge1"] > 0.5 and scores["rougeL"] > 0.5
    assert signature.startswith("rouge-score|tok:char|stemmer:no|")  # the stemmer is rouge-score tokenizer's
    assert bleu(*CHINESE, tokenize="char")[0] > 0 and bleu(*CHINESE, tokenize="intl")[1].count("tok:intl") == 1


def test_defaults_are_sacrebleu_13a_and_rouge_score():
    predictions, references = ENGLISH
    score, signature = bleu(predictions, references)
    assert score == BLEU(tokenize="13a").corpus_score(predictions, [["The cat sat on the mat. It was sleeping.",
                                                                      "The quick brown fox jumps over it."],
                                                                     ["Cats sit.", None]]).score
    assert "|tok:13a|" in signature
    scores, signature = rouge(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    # Sentences one per line, as rouge() splits them for Lsum.
    expected = [scorer.score_multi(["The cat sat on the mat.\nIt was sleeping.", "Cats sit."], predictions[0]),
                scorer.score_multi(["The quick brown fox jumps over it."], predictions[1])]
    for kind in ROUGE_TYPES:
        assert scores[kind] == (expected[0][kind].fmeasure + expected[1][kind].fmeasure) / 2
    assert signature.startswith("rouge-score|tok:default|stemmer:yes|sentences:")


@pytest.mark.skipif(importlib.util.find_spec("MeCab") is not None, reason="MeCab is installed")
def test_ja_mecab_without_mecab_is_refused_clearly(tmp_path):
    with pytest.raises(MetricError, match=r"bleu.tokenize ja-mecab: .*sacrebleu\[ja\]"):
        bleu(["猫"], [["猫"]], tokenize="ja-mecab")
    config = EvalConfig.model_validate({
        "models": [{"name": "m", "path": str(tmp_path / "no-model")}], "bleu": {"tokenize": "ja-mecab"},
        "dataset": {"path": "rows.jsonl", "promptTemplate": "{{ q }}", "referenceFields": ["a"]},
        "output": {"path": str(tmp_path / "out")}})
    with pytest.raises(MetricError, match="ja-mecab"):  # in the check phase, before any model or row
        check_evaluation(config)
