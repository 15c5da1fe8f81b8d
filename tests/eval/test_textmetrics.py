"""ROUGE, BLEU, exact match and token F1 against their authors' published values.

Sources of the expected values:
- rouge-score (google-research/rouge, rouge/rouge_scorer_test.py): testRouge1, testRouge2,
  testRougeLConsecutive, testRougeLNonConsecutive and testRougeLsum (Lin 2004's example).
- sacreBLEU's README ("Using SacreBLEU from Python"): BLEU = 48.53 with two reference streams.
- SQuAD v1.1's evaluate-v1.1.py: normalize_answer and f1_score, computed by hand below.
Cases marked "by hand" are small enough to check on paper.
"""
from __future__ import annotations

import pytest
from sacrebleu.metrics import BLEU

from kubetune_api.evaluation import ExactMatchSpec, RougeSpec
from kubetune_trainer.evaluation.rouge import rouge
from kubetune_trainer.evaluation.textmetrics import bleu, exact_match_rows, normalize, token_f1_rows


def one(prediction: str, reference: str, **options) -> dict:
    return rouge([prediction], [[reference]], RougeSpec(**options))[0]


@pytest.mark.parametrize("prediction, kind, precision, recall, f1", [
    ("testing", "rouge1", 1, 1 / 3, 1 / 2),  # testRouge1
    ("testing one", "rouge2", 1, 1 / 2, 2 / 3),  # testRouge2
    ("testing one", "rougeL", 1, 2 / 3, 4 / 5),  # testRougeLConsecutive
    ("testing two", "rougeL", 1, 2 / 3, 4 / 5),  # testRougeLNonConsecutive
])
def test_rouge_matches_rouge_score_test_vectors(prediction, kind, precision, recall, f1):
    scores = one(prediction, "testing one two", use_stemmer=False)
    assert scores[f"{kind}Precision"] == pytest.approx(precision)
    assert scores[f"{kind}Recall"] == pytest.approx(recall)
    assert scores[kind] == pytest.approx(f1)


def test_rouge_lsum_is_lin_2004_union_lcs_over_sentences():
    # testRougeLsum: reference w1..w5, candidate sentences "w1 w2 w6 w7 w8" and "w1 w3 w8 w9 w5".
    scores = one("w1 w2 w6 w7 w8.\nw1 w3 w8 w9 w5.", "w1 w2 w3 w4 w5")
    assert (scores["rougeLsumRecall"], scores["rougeLsumPrecision"]) == (pytest.approx(0.8), pytest.approx(0.4))
    assert scores["rougeLsum"] == pytest.approx(0.5333, abs=1e-4)


def test_rouge_lsum_splits_generated_text_into_sentences():
    # By hand: "b c. a b." is two sentences. Summary-level union LCS with "a b c" covers a, b, c:
    # recall 3/3, precision 3/4. Plain ROUGE-L sees one sequence: LCS 2, so recall 2/3, precision 2/4.
    scores = one("b c. a b.", "a b c")
    assert (scores["rougeLsumRecall"], scores["rougeLsumPrecision"], scores["rougeLsum"]) == pytest.approx((1, 3 / 4, 6 / 7))
    assert (scores["rougeLRecall"], scores["rougeLPrecision"], scores["rougeL"]) == pytest.approx((2 / 3, 1 / 2, 4 / 7))


def test_rouge_clips_repeated_ngrams():
    # By hand: "the the the" against "the cat": one "the" matches (clipped), precision 1/3, recall 1/2.
    scores = one("the the the", "the cat")
    assert (scores["rouge1Precision"], scores["rouge1Recall"]) == pytest.approx((1 / 3, 1 / 2))


def test_rouge_stemmer_matches_inflections():
    assert one("tested", "testing", use_stemmer=True)["rouge1"] == 1  # Porter: both stem to "test"
    assert one("tested", "testing", use_stemmer=False)["rouge1"] == 0


def test_rouge_takes_the_best_reference_and_averages_examples():
    # By hand: against "testing" F1 = 1/2; against "testing one two three" P 1, R 3/4, F1 6/7 (best).
    scores, signature = rouge(["testing one two", "nothing"], [["testing", "testing one two three"], ["else"]])
    assert scores["rouge1"] == pytest.approx((6 / 7 + 0) / 2)
    assert "multiref:best-f1" in signature and "stemmer:yes" in signature


def test_rouge_bootstrap_interval_brackets_the_mean_and_repeats():
    predictions, references = ["a b c", "a b", "x y", "a"], [["a b c"], ["a b c"], ["a b c"], ["a b c"]]
    spec = RougeSpec(confidence_interval=True, bootstrap_samples=200)
    first, _ = rouge(predictions, references, spec, seed=3)
    again, _ = rouge(predictions, references, spec, seed=3)
    assert first["rouge1Low"] <= first["rouge1"] <= first["rouge1High"] and first["rouge1Low"] < first["rouge1High"]
    assert first == again


def test_bleu_matches_sacrebleu_readme():
    references = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
                  ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]]
    hypotheses = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    # bleu() takes references per example; the README gives them per stream.
    score, signature = bleu(hypotheses, [list(refs) for refs in zip(*references)])
    assert score == pytest.approx(48.53, abs=0.005)
    assert signature.startswith("nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:")


def test_bleu_pads_examples_with_fewer_references():
    hypotheses = ["the cat sat on the mat today", "a quick brown fox jumps over it"]
    ragged = [["the cat sat on a mat today"], ["a quick brown fox jumped over it", "the quick brown fox jumps over it"]]
    # Repeating an example's only reference changes neither clipped counts nor the closest length.
    repeated = [ragged[0] * 2, ragged[1]]
    score, signature = bleu(hypotheses, ragged)
    assert score == pytest.approx(BLEU().corpus_score(hypotheses, [list(s) for s in zip(*repeated)]).score)
    assert signature.startswith("nrefs:var|")
    assert bleu(["five words are here now"], [["five words are here now"]])[0] == pytest.approx(100.0)


def test_normalization_follows_squad():
    squad = ExactMatchSpec(ignore_case=True, ignore_punctuation=True, ignore_articles=True)
    assert normalize("The  Eiffel Tower!", squad) == "eiffel tower"  # evaluate-v1.1.py normalize_answer
    assert normalize("The  Eiffel Tower!", ExactMatchSpec(ignore_case=False, ignore_punctuation=False)) == "The Eiffel Tower!"


def test_exact_match_and_token_f1():
    squad = ExactMatchSpec(ignore_articles=True)
    assert exact_match_rows(["The Cat.", "dog"], [["cat", "a kitten"], ["fox"]], squad) == [1.0, 0.0]
    assert exact_match_rows(["The Cat."], [["cat"]], ExactMatchSpec()) == [0.0]  # articles kept by default
    # By hand: "cat sat on mat" vs "cat on mat": 3 common tokens, P 3/4, R 1, F1 6/7; best of two references.
    assert token_f1_rows(["the cat sat on the mat"], [["a cat on a mat", "dog"]], squad) == [pytest.approx(6 / 7)]
    assert token_f1_rows([""], [[""]], squad) == [1.0]  # SQuAD: both empty agree
