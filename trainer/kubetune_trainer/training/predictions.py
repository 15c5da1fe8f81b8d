"""Greedy predictions of the trained model on a few test rows, for a first look at its output."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from kubetune_trainer.data.tokenization import IGNORE_INDEX, Tokenized

MAX_NEW_TOKENS = 48


@torch.no_grad()
def write_predictions(model, tokenizer, items: list[Tokenized], path: Path, max_new_tokens: int = MAX_NEW_TOKENS) -> int:
    """Writes {prompt, reference, prediction} per row to `path` (JSONL); returns the row count."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    lines = []
    for item in items:
        if item.prompt_length is not None:  # a conversation: every turn before its last assistant turn
            prompt, reference = item.input_ids[:item.prompt_length], [
                t for t in item.labels[item.prompt_length:] if t not in (IGNORE_INDEX, tokenizer.eos_token_id)]
        else:
            prompt = [t for t, label in zip(item.input_ids, item.labels) if label == IGNORE_INDEX]
            reference = [t for t in item.labels if t not in (IGNORE_INDEX, tokenizer.eos_token_id)]
        input_ids = torch.tensor([prompt], device=device)
        # One row at a time: no padding, so nothing depends on the tokenizer's padding side.
        output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        lines.append({
            "prompt": tokenizer.decode(prompt, skip_special_tokens=True),
            "reference": tokenizer.decode(reference, skip_special_tokens=True),
            "prediction": tokenizer.decode(output[0, len(prompt):], skip_special_tokens=True),
        })
    model.train(was_training)
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    return len(lines)
