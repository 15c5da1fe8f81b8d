"""Exact match and token F1 (SQuAD-style normalization, options from exactMatch) and BLEU.

With several references an example scores its best match (as SQuAD's evaluation script
does); BLEU scores all references jointly, as sacreBLEU does with several reference streams.
"""
from __future__ import annotations

import re
import string
from collections import Counter

from sacrebleu.metrics import BLEU

from kubetune_api.errors import MetricError
from kubetune_api.evaluation import ExactMatchSpec

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize(text: str, spec: ExactMatchSpec) -> str:
    """SQuAD's normalize_answer with each step optional; whitespace is always collapsed."""
    if spec.ignore_case:
        text = text.lower()
    if spec.ignore_punctuation:
        text = text.translate(_PUNCTUATION)
    if spec.ignore_articles:
        text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _f1(prediction: list[str], reference: list[str]) -> float:
    common = sum((Counter(prediction) & Counter(reference)).values())
    if not prediction or not reference:
        return float(prediction == reference)  # SQuAD: two empty answers agree
    if common == 0:
        return 0.0
    precision, recall = common / len(prediction), common / len(reference)
    return 2 * precision * recall / (precision + recall)


def exact_match_rows(predictions: list[str], references: list[list[str]], spec: ExactMatchSpec) -> list[float]:
    """Per row, 1.0 when the prediction matches any reference after normalization."""
    return [float(max(normalize(p, spec) == normalize(r, spec) for r in refs)) for p, refs in zip(predictions, references)]


def token_f1_rows(predictions: list[str], references: list[list[str]], spec: ExactMatchSpec) -> list[float]:
    """Per row, the best token F1 against its references."""
    return [max(_f1(normalize(p, spec).split(), normalize(r, spec).split()) for r in refs)
            for p, refs in zip(predictions, references)]



def bleu_metric(tokenize: str = "13a") -> BLEU:
    """sacreBLEU's BLEU with this tokenizer (BleuSpec.tokenize); MetricError when the
    tokenizer's libraries (ja-mecab: MeCab and its IPA dictionary) are not installed."""
    try:
        return BLEU(tokenize=tokenize)
    except (ImportError, RuntimeError, AssertionError) as e:  # sacreBLEU's ways of saying so
        why = " ".join(str(e).split())
        raise MetricError(f"bleu.tokenize {tokenize}: sacreBLEU cannot load this tokenizer here ({why}); "
                          "ja-mecab needs MeCab with its IPA dictionary (pip install 'sacrebleu[ja]') in the evaluator "
                          "image, or choose another tokenizer") from e


def bleu(predictions: list[str], references: list[list[str]], tokenize: str = "13a") -> tuple[float, str]:
    """(corpus BLEU 0-100, sacreBLEU signature, which names the tokenizer). Examples with fewer
    references than the most are padded with None, which sacreBLEU skips."""
    width = max(len(refs) for refs in references)
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(width)]
    metric = bleu_metric(tokenize)
    score = metric.corpus_score(predictions, streams)
    return float(score.score), str(metric.get_signature())
