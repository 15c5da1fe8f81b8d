"""Batched generation for evaluation: left-padded prompts, greedy or sampled, stop strings."""
from __future__ import annotations

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from kubetune_api.evaluation import GenerationSpec
from kubetune_trainer.data.chat import chat_prompts
from kubetune_trainer.evaluation.greedy import decode, supports_fast_greedy
from kubetune_trainer.model.placement import input_device


def cut_at_stop(text: str, stop: list[str]) -> str:
    """`text` without leading whitespace, up to the earliest occurrence of any stop string.
    Leading whitespace is skipped first: models often open with a blank line, which must not
    count as the stop string "\n\n"."""
    text = text.lstrip()
    ends = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(ends)] if ends else text


class StopStrings(StoppingCriteria):
    """Ends each row of a batch once its output (past leading whitespace) holds a stop string."""

    def __init__(self, tokenizer, stop: list[str], prompt_width: int):
        self.tokenizer, self.stop, self.prompt_width = tokenizer, stop, prompt_width

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width :], skip_special_tokens=True)
        return torch.tensor([cut_at_stop(t, self.stop) != t.lstrip() for t in texts], device=input_ids.device)


def encode_prompts(tokenizer, prompts: list[str], spec: GenerationSpec, chat_template: bool):
    """Left-padded batch encoding; over-long prompts lose their start. (encoding, truncated count)"""
    texts = chat_prompts(tokenizer, prompts) if chat_template else prompts
    tokenizer.padding_side = "left"  # generated tokens must follow the prompt directly in every row
    tokenizer.truncation_side = "left"
    # A chat template writes its own special tokens; a plain prompt gets BOS as in training.
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=not chat_template)["input_ids"]]
    encoding = tokenizer(texts, add_special_tokens=not chat_template, padding=True, truncation=True,
                         max_length=spec.max_input_length, return_tensors="pt")
    return encoding, sum(n > spec.max_input_length for n in lengths)


def _generation_config(tokenizer, spec: GenerationSpec) -> GenerationConfig:
    sampling = dict(temperature=spec.temperature, top_p=spec.top_p, top_k=spec.top_k) if spec.do_sample else {}
    return GenerationConfig(max_new_tokens=spec.max_new_tokens, do_sample=spec.do_sample,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **sampling)


def generate(model, tokenizer, prompts: list[str], spec: GenerationSpec, chat_template: bool = False) -> tuple[list[str], int]:
    """(one output per prompt, number of truncated prompts). Seed torch first for sampling.
    Greedy decoding takes the faster path of `greedy.decode` (the same tokens as batches of
    `generate`) where the model allows it; sampling keeps `generate` in the given order, so a
    seed repeats its draws."""
    if not spec.do_sample and supports_fast_greedy(model):
        return _generate_greedy(model, tokenizer, prompts, spec, chat_template)
    return _generate_in_order(model, tokenizer, prompts, spec, chat_template)


def _generate_greedy(model, tokenizer, prompts: list[str], spec: GenerationSpec, chat_template: bool):
    texts = chat_prompts(tokenizer, prompts) if chat_template else prompts
    tokenizer.padding_side = tokenizer.truncation_side = "left"  # as encode_prompts leaves them
    ids = tokenizer(texts, add_special_tokens=not chat_template, truncation=True,
                    max_length=spec.max_input_length)["input_ids"]
    lengths = [len(i) for i in tokenizer(texts, add_special_tokens=not chat_template)["input_ids"]]
    eos = _eos_ids(model, tokenizer)
    stop = StopStrings(tokenizer, spec.stop, 0) if spec.stop else None

    def done(tokens: list[int]) -> bool:
        return (len(tokens) >= spec.max_new_tokens or tokens[-1] in eos
                or (stop is not None and bool(stop(torch.tensor([tokens]), None)[0])))

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos, default=0)  # masked anyway
    outputs = decode(model, ids, spec.batch_size, done, pad)
    texts = tokenizer.batch_decode(outputs, skip_special_tokens=True)
    return [cut_at_stop(text, spec.stop) for text in texts], sum(n > spec.max_input_length for n in lengths)


def _eos_ids(model, tokenizer) -> set[int]:
    """The tokens that end a row in `generate`: the tokenizer's EOS, else the model's default."""
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [] if eos is None else [eos])


@torch.inference_mode()
def _generate_in_order(model, tokenizer, prompts: list[str], spec: GenerationSpec, chat_template: bool):
    """Batches of `generate` in the given order."""
    config = _generation_config(tokenizer, spec)
    outputs, truncated = [], 0
    for start in range(0, len(prompts), spec.batch_size):
        batch = prompts[start : start + spec.batch_size]
        encoding, cut = encode_prompts(tokenizer, batch, spec, chat_template)
        truncated += cut
        encoding = encoding.to(input_device(model))  # a sharded model's first GPU
        width = encoding["input_ids"].shape[1]
        stopping = StoppingCriteriaList([StopStrings(tokenizer, spec.stop, width)] if spec.stop else [])
        new = model.generate(**encoding, generation_config=config, stopping_criteria=stopping)[:, width:]
        outputs += [cut_at_stop(text, spec.stop) for text in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return outputs, truncated
