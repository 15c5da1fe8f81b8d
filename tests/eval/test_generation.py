"""Generation on the tiny model: left padding, greedy decoding, stop strings, seeded sampling."""
from __future__ import annotations

import copy

import pytest
import torch

from kubetune_api.errors import ConfigError
from kubetune_api.evaluation import GenerationSpec
from kubetune_trainer.evaluation.generation import cut_at_stop, encode_prompts, generate

PROMPTS = ["Which animal is red cat?\nAnswer:", "Which animal is a very green dog, if any?\nAnswer:", "Which animal?"]


def greedy_by_hand(model, tokenizer, prompt: str, steps: int) -> str:
    """Argmax decoding without cache, padding or generate()."""
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        for _ in range(steps):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return tokenizer.decode(ids[0, -steps:], skip_special_tokens=True)


def test_batched_left_padded_greedy_equals_unbatched_and_argmax(tiny):
    model, tokenizer = tiny
    spec = GenerationSpec(max_new_tokens=6, batch_size=3)
    batched, truncated = generate(model, tokenizer, PROMPTS, spec)
    single = generate(model, tokenizer, PROMPTS, spec.model_copy(update={"batch_size": 1}))[0]
    assert batched == single and truncated == 0
    assert tokenizer.padding_side == "left"
    # Whitespace is stripped from the start of outputs; compare the same way.
    assert batched == [greedy_by_hand(model, tokenizer, p, 6).lstrip() for p in PROMPTS]


def test_stop_strings_cut_at_the_first():
    assert cut_at_stop("\n\n  one. two\n\nthree END", ["END", "\n\n"]) == "one. two"
    assert cut_at_stop(" no stop here", ["\n\n"]) == "no stop here"


def test_generation_stops_at_a_stop_string(tiny):
    model, tokenizer = tiny
    spec = GenerationSpec(max_new_tokens=12, batch_size=3)
    full = generate(model, tokenizer, PROMPTS, spec)[0]
    stop = full[0][2:4]  # a string the first output holds past its start
    stopped = generate(model, tokenizer, PROMPTS, spec.model_copy(update={"stop": [stop]}))[0]
    assert stopped == [cut_at_stop(text, [stop]) for text in full] and len(stopped[0]) < len(full[0])


def test_prompts_lose_their_start_beyond_max_input_length(tiny):
    model, tokenizer = tiny
    long = "Which animal is red cat? " * 10 + "\nAnswer:"
    spec = GenerationSpec(max_new_tokens=3, max_input_length=8)
    assert generate(model, tokenizer, [long, PROMPTS[2]], spec)[1] == 1


def test_sampling_repeats_for_a_seed(tiny):
    model, tokenizer = tiny
    spec = GenerationSpec(max_new_tokens=8, do_sample=True, temperature=1.5, top_p=0.9, top_k=50)
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(generate(model, tokenizer, PROMPTS, spec)[0])
    assert runs[0] == runs[1]


def test_chat_template_wraps_the_prompt_without_a_second_bos(tiny):
    tokenizer = copy.deepcopy(tiny[1])
    tokenizer.chat_template = "{{ bos_token }}{% for m in messages %}User: {{ m['content'] }}\n{% endfor %}Bot:"
    encoding, _ = encode_prompts(tokenizer, ["Which animal?"], GenerationSpec(), chat_template=True)
    assert tokenizer.decode(encoding["input_ids"][0]) == "<s>User: Which animal?\nBot:"


def test_chat_template_missing_is_a_config_error(tiny):
    with pytest.raises(ConfigError, match="dataset.chatTemplate"):
        generate(*tiny, ["x"], GenerationSpec(), chat_template=True)
