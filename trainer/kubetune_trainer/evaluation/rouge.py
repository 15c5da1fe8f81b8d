"""ROUGE-1/2/L/Lsum as Google's rouge-score computes them, aggregated over a corpus.

Each example is scored against its best reference (highest F1 per ROUGE type, as
rouge-score's score_multi and `evaluate`'s rouge do); the corpus score is the mean over
examples of precision, recall and F1. Lsum needs one sentence per line, so predictions and
references are split into sentences first (nltk punkt when its data is installed, else a
regular expression); ROUGE-1/2/L ignore the newlines.

The scores are rouge-score's to the last bit: rouge-score-rs (Rust) computes them when it is
installed (about 60x faster, bench/rouge_speed.py), rouge-score itself otherwise;
tests/eval/test_rouge_differential.py compares the two. RougeSpec.tokenize picks the
tokenizer: rouge-score's own (default) or one of TOKENIZERS, which both take as a custom one.
"""
from __future__ import annotations

import re
import unicodedata

import numpy as np
from rouge_score import rouge_scorer, scoring

from kubetune_api.evaluation import RougeSpec, RougeTokenizer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
# A sentence ends at . ! or ? followed by whitespace; good enough for summaries and dialogue.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Chinese and Japanese characters: kana, CJK ideographs (extension A, the main block,
# compatibility ideographs, extensions B and on).
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
# One CJK character, or a run of other letters and digits (any script; '_' separates).
_CHAR_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")


class CharTokenizer:
    """tokenize: char. Lowercased after NFKC (full-width forms become ASCII); each Chinese or
    Japanese character is a token, each run of other letters and digits is one; the rest
    (whitespace, punctuation, symbols) separates tokens."""

    def tokenize(self, text: str) -> list[str]:
        return _CHAR_TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


class WhitespaceTokenizer:
    """tokenize: whitespace. Lowercased, split at whitespace, punctuation kept: for text that was
    segmented into words beforehand (e.g. Chinese by a word segmenter)."""

    def tokenize(self, text: str) -> list[str]:
        return text.lower().split()


TOKENIZERS = {RougeTokenizer.char: CharTokenizer, RougeTokenizer.whitespace: WhitespaceTokenizer}


def _punkt():
    """nltk's punkt sentence splitter if its data is installed (never downloaded), else None."""
    try:
        import nltk

        nltk.sent_tokenize("Probe. Sentence.")
        return nltk.sent_tokenize
    except (ImportError, LookupError):
        return None


def sentence_splitter():
    """(split function, its name for the results' signature)."""
    punkt = _punkt()
    if punkt is not None:
        return punkt, "nltk-punkt"
    return (lambda text: [s for s in _SENTENCE_END.split(text.strip()) if s]), "regex"


def fast_scorer_class():
    """rouge-score-rs's RougeScorer (same arguments and bit-identical scores as rouge-score's,
    custom tokenizers included), or None when it is not installed."""
    try:
        from rouge_score_rs import RougeScorer
    except ImportError:
        return None
    return RougeScorer


def score_examples(predictions: list[str], references: list[list[str]], spec: RougeSpec,
                   scorer_class=None) -> tuple[list[dict], str]:
    """(per example, each ROUGE type's best-reference Score; the sentence splitter's name).
    scorer_class: rouge-score's RougeScorer or a drop-in; unset, the fastest installed."""
    split, splitter = sentence_splitter()

    def lines(text: str) -> str:
        return "\n".join(split(text))

    scorer_class = scorer_class or fast_scorer_class() or rouge_scorer.RougeScorer
    tokenizer = TOKENIZERS[spec.tokenize]() if spec.tokenize in TOKENIZERS else None
    scorer = scorer_class(list(ROUGE_TYPES), use_stemmer=spec.use_stemmer, tokenizer=tokenizer)
    per_example = [scorer.score_multi([lines(r) for r in refs], lines(pred)) for pred, refs in zip(predictions, references)]
    return per_example, splitter


def signature(spec: RougeSpec, splitter: str) -> str:
    """What decides the numbers, sacreBLEU-style; the stemmer applies to the default tokenizer only."""
    stemmer = spec.use_stemmer and spec.tokenize == RougeTokenizer.default
    return (f"rouge-score|tok:{spec.tokenize.value}|stemmer:{'yes' if stemmer else 'no'}|sentences:{splitter}"
            "|multiref:best-f1")


def rouge(predictions: list[str], references: list[list[str]], spec: RougeSpec | None = None,
          seed: int = 0) -> tuple[dict, str]:
    """(scores, signature). Keys: rouge1 (F1), rouge1Precision, rouge1Recall, ... and with
    spec.confidence_interval also rouge1Low/rouge1High (bootstrap 95% interval of the F1 mean)."""
    scores, signature_, _ = rouge_with_rows(predictions, references, spec, seed)
    return scores, signature_


def rouge_with_rows(predictions: list[str], references: list[list[str]], spec: RougeSpec | None = None,
                    seed: int = 0) -> tuple[dict, str, dict[str, list[float]]]:
    """rouge()'s (scores, signature), and each ROUGE type's F1 per row."""
    spec = spec or RougeSpec()
    per_example, splitter = score_examples(predictions, references, spec)
    rows = {kind: [float(s[kind].fmeasure) for s in per_example] for kind in ROUGE_TYPES}
    scores = {}
    for kind in ROUGE_TYPES:
        scores[kind] = float(np.mean(rows[kind]))
        scores[f"{kind}Precision"] = float(np.mean([s[kind].precision for s in per_example]))
        scores[f"{kind}Recall"] = float(np.mean([s[kind].recall for s in per_example]))
    if spec.confidence_interval:
        aggregator = scoring.BootstrapAggregator(confidence_interval=0.95, n_samples=spec.bootstrap_samples)
        for s in per_example:
            aggregator.add_scores(s)
        # rouge-score resamples with numpy's global generator; seed it so intervals repeat.
        np.random.seed(seed)
        for kind, interval in aggregator.aggregate().items():
            scores[f"{kind}Low"], scores[f"{kind}High"] = float(interval.low.fmeasure), float(interval.high.fmeasure)
    return scores, signature(spec, splitter), rows
