"""Log-likelihood scoring with a model: multiple-choice options (lm-eval style) and texts for
perplexity. The tasks (evaluation.tasks) turn the records into scores."""
from __future__ import annotations

import torch

from kubetune_trainer.data.chat import chat_prompt
from kubetune_trainer.model.placement import input_device
from kubetune_trainer.evaluation.tasks.base import Item


@torch.inference_mode()
def continuation_logprobs(model, sequences: list[list[int]], starts: list[int], pad_id: int,
                          batch_size: int) -> list[tuple[float, int]]:
    """For each token sequence, (sum of log p(token | tokens before it), token count) over its
    tokens from index `start` (>= 1) on. Batches are right-padded; padding is never scored."""
    results = []
    for first in range(0, len(sequences), batch_size):
        batch, batch_starts = sequences[first : first + batch_size], starts[first : first + batch_size]
        width, device = max(map(len, batch)), input_device(model)  # a sharded model's first GPU
        ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in batch], device=device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in batch], device=device)
        logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        # Position t's logits predict token t + 1 (the ids go to the logits: a sharded model's last GPU).
        token_logprobs = logprobs[:, :-1].gather(-1, ids.to(logprobs.device)[:, 1:, None]).squeeze(-1)
        for row, (sequence, start) in enumerate(zip(batch, batch_starts)):
            results.append((token_logprobs[row, start - 1 : len(sequence) - 1].sum().item(), len(sequence) - start))
    return results


def score_choices(model, tokenizer, items: list[Item], max_length: int, batch_size: int,
                  chat_template: bool) -> list[dict]:
    """One record per item with each option's summed log-likelihood after the prompt (lm-eval's
    acc) and the pick by log-likelihood per UTF-8 byte of the option (lm-eval's acc_norm). Each
    option is tokenized on its own and appended to the prompt's tokens, as training joins prompt
    and completion; an over-long pair loses the prompt's start."""
    sequences, starts, truncated = [], [], []
    for item in items:
        prompt = chat_prompt(tokenizer, item.prompt) if chat_template else item.prompt
        context = tokenizer(prompt, add_special_tokens=not chat_template)["input_ids"]
        options = [tokenizer(choice, add_special_tokens=False)["input_ids"] for choice in item.choices]
        truncated.append(any(len(context) + len(option) > max_length for option in options))
        for option in options:
            sequence = (context + option)[-max_length:]
            sequences.append(sequence)
            starts.append(max(1, len(sequence) - len(option)))
    scored = iter(continuation_logprobs(model, sequences, starts, tokenizer.pad_token_id, batch_size))
    records = []
    for item, cut in zip(items, truncated):
        loglikelihoods = [next(scored)[0] for _ in item.choices]
        per_byte = [ll / max(1, len(c.encode("utf-8"))) for ll, c in zip(loglikelihoods, item.choices)]
        indices = range(len(item.choices))
        records.append({"line": item.line, "prompt": item.prompt, "choices": item.choices, "answer": item.answer,
                        "prediction": max(indices, key=loglikelihoods.__getitem__),
                        "predictionNorm": max(indices, key=per_byte.__getitem__), "loglikelihoods": loglikelihoods,
                        "truncated": cut})
    return records


def score_texts(model, tokenizer, items: list[Item], max_length: int, batch_size: int) -> list[dict]:
    """One record per item with its negative log-likelihood and predicted-token count. Texts
    longer than max_length are scored in consecutive windows; a window's first token is context."""
    windows, owners = [], []
    for index, item in enumerate(items):
        ids = tokenizer(item.text, add_special_tokens=True)["input_ids"]
        for start in range(0, len(ids), max_length):
            if len(ids[start : start + max_length]) > 1:
                windows.append(ids[start : start + max_length])
                owners.append(index)
    nll, tokens = [0.0] * len(items), [0] * len(items)
    for owner, (logprob, count) in zip(owners, continuation_logprobs(model, windows, [1] * len(windows),
                                                                     tokenizer.pad_token_id, batch_size)):
        nll[owner] -= logprob
        tokens[owner] += count
    return [{"line": item.line, "text": item.text, "nll": n, "tokens": t} for item, n, t in zip(items, nll, tokens)]
