"""The evaluator's fast greedy path (evaluation/greedy.py) gives the tokens of `generate`: prompts
run longest first and come back in order, finished rows leave the batch and waiting prompts
join it, and outputs equal batches of `generate` and one prompt at a time."""
from __future__ import annotations

import copy
import inspect

import pytest
import torch

from kubetune_api.evaluation import GenerationSpec
from kubetune_trainer.evaluation import generation, greedy
from kubetune_trainer.evaluation.generation import _generate_in_order, generate

# Different lengths, not sorted: batches of 3 mix them unless the fast path sorts.
PROMPTS = ["Which animal?", "Which animal is a very green dog, if any, or a cow?\nAnswer:", "Which animal is red cat?",
           "Which animal is blue owl?\nAnswer:", "Which?", "Which animal is a white bee or a black fox?\nAnswer:",
           "Which animal is purple cow?\nAnswer:"]


@pytest.fixture
def calls(monkeypatch):
    """Records the prompt lengths of each prefill and counts joins of new rows into a batch."""
    seen = {"prefills": [], "joins": 0}
    prefill, join = greedy._prefill, greedy._join

    def spy_prefill(model, prompts, rows, pad_id):
        seen["prefills"].append([len(p) for p in prompts])
        return prefill(model, prompts, rows, pad_id)

    def spy_join(batch, new):
        seen["joins"] += 1
        return join(batch, new)

    monkeypatch.setattr(greedy, "_prefill", spy_prefill)
    monkeypatch.setattr(greedy, "_join", spy_join)
    return seen


def with_eos_at(tokenizer, token_id: int):
    """A copy of the tokenizer whose EOS is `token_id`, so generation ends where the model writes it."""
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(token_id)
    return tokenizer


def test_fast_greedy_equals_generate_batches_and_one_at_a_time(tiny, calls):
    model, tokenizer = tiny
    spec = GenerationSpec(max_new_tokens=8, batch_size=3)
    assert greedy.supports_fast_greedy(model)
    fast, truncated = generate(model, tokenizer, PROMPTS, spec)
    assert calls["prefills"], "the fast path ran"
    assert fast == _generate_in_order(model, tokenizer, PROMPTS, spec, False)[0]
    assert fast == _generate_in_order(model, tokenizer, PROMPTS, spec.model_copy(update={"batch_size": 1}), False)[0]
    assert truncated == 0


def test_prompts_run_longest_first_and_come_back_in_order(tiny, calls):
    model, tokenizer = tiny
    ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    outputs = greedy.decode(model, ids, 3, lambda tokens: len(tokens) >= 5, tokenizer.eos_token_id)
    lengths = sorted(map(len, ids), reverse=True)
    assert calls["prefills"] == [lengths[0:3], lengths[3:6], lengths[6:7]]
    alone = [greedy.decode(model, [i], 1, lambda tokens: len(tokens) >= 5, tokenizer.eos_token_id)[0] for i in ids]
    assert outputs == alone
    assert greedy.decode(model, ids[::-1], 3, lambda tokens: len(tokens) >= 5, tokenizer.eos_token_id) == outputs[::-1]


def test_rows_ending_at_eos_leave_the_batch_and_equal_full_runs(tiny, calls):
    model, tokenizer = tiny
    spec = GenerationSpec(max_new_tokens=10, batch_size=3)
    ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    full = greedy.decode(model, ids, 3, lambda tokens: len(tokens) >= 10, tokenizer.eos_token_id)
    eos = full[1][2]  # a token some rows write early, others late or never
    stopping = with_eos_at(tokenizer, eos)
    stopped = generate(model, stopping, PROMPTS, spec)[0]
    assert calls["joins"] > 0, "waiting prompts joined a running batch"
    assert stopped == _generate_in_order(model, stopping, PROMPTS, spec, False)[0]
    ends = [row.index(eos) + 1 if eos in row else len(row) for row in full]
    assert len(set(ends)) > 1
    assert stopped == [stopping.decode(row[:end], skip_special_tokens=True).lstrip() for row, end in zip(full, ends)]


def test_stop_strings_and_truncation_match_generate(tiny):
    model, tokenizer = tiny
    spec = GenerationSpec(max_new_tokens=12, batch_size=2, max_input_length=9)
    full = generate(model, tokenizer, PROMPTS, spec)[0]
    stop = spec.model_copy(update={"stop": [full[1][2:4], full[4][1:3]]})
    fast, truncated = generate(model, tokenizer, PROMPTS, stop)
    assert (fast, truncated) == _generate_in_order(model, tokenizer, PROMPTS, stop, False) and truncated > 0
    assert any(len(a) < len(b) for a, b in zip(fast, full))


def test_models_with_extra_generation_settings_keep_generate(tiny, calls, monkeypatch):
    model, tokenizer = tiny
    monkeypatch.setattr(model.generation_config, "repetition_penalty", 1.5)
    assert not greedy.supports_fast_greedy(model)
    spec = GenerationSpec(max_new_tokens=8, batch_size=3)
    assert generate(model, tokenizer, PROMPTS, spec) == _generate_in_order(model, tokenizer, PROMPTS, spec, False)
    assert calls["prefills"] == []


def test_sampling_keeps_generate_in_the_given_order(tiny, calls, monkeypatch):
    model, tokenizer = tiny
    ran = []
    monkeypatch.setattr(generation, "_generate_in_order", lambda *args: ran.append(args) or ([], 0))
    generate(model, tokenizer, PROMPTS, GenerationSpec(do_sample=True))
    assert len(ran) == 1 and calls["prefills"] == []


class _Output(dict):
    """A model output: a dict of its fields, read as attributes too (as ModelOutput)."""
    __getattr__ = dict.__getitem__


class _Renamed(torch.nn.Module):
    """The tiny model behind a forward that takes and returns its cache under another name, as
    transformers before 5.24 (past_key_values) or from 5.24 on (cache) names it."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.passed_back = model, 0

    @property
    def device(self):
        return self.inner.device

    def run(self, name, cache, **inputs):
        self.passed_back += cache is not None
        out = self.inner(**inputs, **({greedy.cache_keyword(self.inner): cache} if cache is not None else {}))
        return _Output(logits=out.logits, **{name: greedy.output_cache(out)})


class _PastKeyValues(_Renamed):
    def forward(self, input_ids, attention_mask, position_ids, use_cache, logits_to_keep, past_key_values=None):
        return self.run("past_key_values", past_key_values, input_ids=input_ids, attention_mask=attention_mask,
                        position_ids=position_ids, use_cache=use_cache, logits_to_keep=logits_to_keep)


class _Cache(_Renamed):
    def forward(self, input_ids, attention_mask, position_ids, use_cache, logits_to_keep, cache=None):
        return self.run("cache", cache, input_ids=input_ids, attention_mask=attention_mask,
                        position_ids=position_ids, use_cache=use_cache, logits_to_keep=logits_to_keep)


def test_the_cache_goes_back_under_the_name_the_forward_takes(tiny, tiny_model_dir, calls):
    model, tokenizer = tiny
    name = greedy.cache_keyword(model)
    assert name in inspect.signature(model.forward).parameters and name in greedy.CACHE_NAMES
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                LoraConfig(target_modules=["q_proj"]))
    assert greedy.cache_keyword(peft_model) == name  # PEFT passes it on to the base model
    ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    stop = greedy.decode(model, ids, 3, lambda tokens: len(tokens) >= 8, tokenizer.eos_token_id)[1][2]
    done = lambda tokens: len(tokens) >= 8 or tokens[-1] == stop  # noqa: E731  rows end at different steps
    calls["joins"] = 0
    expected = greedy.decode(model, ids, 3, done, tokenizer.eos_token_id)
    assert calls["joins"] > 0, "rows left the batch and waiting ones joined it"
    for renamed in (_PastKeyValues(model), _Cache(model)):
        assert greedy.decode(renamed, ids, 3, done, tokenizer.eos_token_id) == expected
        assert renamed.passed_back > 0
