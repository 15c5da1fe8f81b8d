"""Multiple-choice and perplexity scoring agree with log-probabilities computed directly."""
from __future__ import annotations

import math

import pytest
import torch

from kubetune_trainer.evaluation.loglikelihood import score_choices, score_texts
from kubetune_trainer.evaluation.tasks import Item
from kubetune_trainer.evaluation.tasks.multiple_choice import choice_rows
from kubetune_trainer.evaluation.tasks.perplexity import perplexity_scores


def option_loglikelihood(model, tokenizer, prompt: str, option: str) -> float:
    """Sum of log p(option token | everything before), one sequence, no batching."""
    context = tokenizer(prompt)["input_ids"]
    ids = torch.tensor([context + tokenizer(option, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0].float(), -1)
    return sum(logprobs[t - 1, ids[0, t]].item() for t in range(len(context), ids.shape[1]))


def test_multiple_choice_picks_the_most_likely_option(tiny):
    model, tokenizer = tiny
    prompts = ["Which animal is red cat?\nAnswer:", "Which animal is blue owl?\nAnswer:", "Which?"]
    options = [" cat", " dog", " owl and a long tail"]
    expected = [[option_loglikelihood(model, tokenizer, p, o) for o in options] for p in prompts]
    best = [max(range(3), key=row.__getitem__) for row in expected]
    # Make each item's answer the model's own favourite, except the last one.
    items = [Item(i, p, choices=options, answer=best[i] if i < 2 else (best[i] + 1) % 3) for i, p in enumerate(prompts)]
    records = score_choices(model, tokenizer, items, max_length=64, batch_size=4, chat_template=False)
    for record, row in zip(records, expected):
        assert record["loglikelihoods"] == pytest.approx(row, abs=1e-4)
    assert [r["prediction"] for r in records] == best
    per_byte = [max(range(3), key=lambda k: row[k] / len(options[k].encode())) for row in expected]
    assert [r["predictionNorm"] for r in records] == per_byte
    assert choice_rows(records)["accuracy"] == [1.0, 1.0, 0.0]


def test_perplexity_is_exp_of_token_weighted_nll(tiny):
    model, tokenizer = tiny
    texts = ["Which animal is red cat? Answer: cat", "green dog", "Which animal is blue fox and owl?"]
    records = score_texts(model, tokenizer, [Item(i, text=t) for i, t in enumerate(texts)], max_length=64, batch_size=2)
    total_nll = total_tokens = 0.0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            loss = model(ids, labels=ids).loss.item()  # mean NLL over tokens 1..n-1
        total_nll += loss * (ids.shape[1] - 1)
        total_tokens += ids.shape[1] - 1
    scores = perplexity_scores(records)
    assert scores["tokens"] == total_tokens
    assert scores["perplexity"] == pytest.approx(math.exp(total_nll / total_tokens), rel=1e-4)


def test_long_texts_are_scored_in_windows(tiny):
    model, tokenizer = tiny
    text = "Which animal is red cat? " * 6
    n = len(tokenizer(text)["input_ids"])
    record = score_texts(model, tokenizer, [Item(1, text=text)], max_length=8, batch_size=4)[0]
    windows = math.ceil(n / 8) - (n % 8 == 1)  # a last window of one token predicts nothing
    assert record["tokens"] == n - windows
