"""ROUGE-1/2/L/Lsum as Google's rouge-score computes them, aggregated over a corpus.

Each example is scored against its best reference (highest F1 per ROUGE type, as
rouge-score's score_multi and `evaluate`'s rouge do); the corpus score is the mean over
examples of precision, recall and F1. Lsum needs one sentence per line, so predictions and
references are split into sentences first (nltk punkt when its data is installed, else a
regular expression); ROUGE-1/2/L ignore the newlines.
"""
from __future__ import annotations

import re

import numpy as np
from rouge_score import rouge_scorer, scoring

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
# A sentence ends at . ! or ? followed by whitespace; good enough for summaries and dialogue.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


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


def rouge(predictions: list[str], references: list[list[str]], use_stemmer: bool = True,
          confidence_interval: bool = False, bootstrap_samples: int = 1000, seed: int = 0) -> tuple[dict, str]:
    """(scores, signature). Keys: rouge1 (F1), rouge1Precision, rouge1Recall, ... and with
    confidence_interval also rouge1Low/rouge1High (bootstrap 95% interval of the F1 mean)."""
    split, splitter = sentence_splitter()

    def lines(text: str) -> str:
        return "\n".join(split(text))

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    per_example = [scorer.score_multi([lines(r) for r in refs], lines(pred)) for pred, refs in zip(predictions, references)]
    scores = {}
    for kind in ROUGE_TYPES:
        scores[kind] = float(np.mean([s[kind].fmeasure for s in per_example]))
        scores[f"{kind}Precision"] = float(np.mean([s[kind].precision for s in per_example]))
        scores[f"{kind}Recall"] = float(np.mean([s[kind].recall for s in per_example]))
    if confidence_interval:
        aggregator = scoring.BootstrapAggregator(confidence_interval=0.95, n_samples=bootstrap_samples)
        for s in per_example:
            aggregator.add_scores(s)
        # rouge-score resamples with numpy's global generator; seed it so intervals repeat.
        np.random.seed(seed)
        for kind, interval in aggregator.aggregate().items():
            scores[f"{kind}Low"], scores[f"{kind}High"] = float(interval.low.fmeasure), float(interval.high.fmeasure)
    signature = f"rouge-score|stemmer:{'yes' if use_stemmer else 'no'}|sentences:{splitter}|multiref:best-f1"
    return scores, signature
