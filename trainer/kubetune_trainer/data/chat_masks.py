"""Conversations through the model's chat template, with the loss on trained assistant turns only.

The rule, exact at token level: render the whole conversation once; each trained assistant
turn's characters are those between the render of the messages before it with the generation
prompt (`add_generation_prompt=True`) and the render that ends with it, so the assistant header
is context and the turn's content, tool calls and end-of-turn token(s) are trained. Both renders
must be prefixes of the whole render: a template that is not prefix-stable cannot mark
assistant turns, and the row fails (DataError naming file and row). Templates that render the
final assistant turn differently from the same turn in history (Qwen3's empty think block) get
the turn's end from the conversation continued by a probe user message instead. The whole text
is tokenized once with offsets, and exactly the tokens that start inside a trained span are
labelled.

Rows are data: they reach the template only as values (transformers renders chat templates in
a Jinja sandbox), and text that spells one of the tokenizer's special tokens is refused, since
it would tokenize as that token and forge turn structure.
"""
from __future__ import annotations

import json
import os
from typing import NamedTuple, Optional

from kubetune_api.errors import ConfigError, DataError
from kubetune_trainer.data.conversations import Conversation

PROBES = ("kubetune probe A", "kubetune probe B")  # two user turns that differ from their first character


def _render(tokenizer, conversation: Conversation, upto: int, generation: bool, where: str, extra: Optional[dict] = None) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("dataset.conversations: the model's tokenizer has no chat template (no chat_template in "
                          "tokenizer_config.json or chat_template.jinja); chat rows are rendered with the model's own")
    messages, tools = conversation.as_lists()
    messages = messages[:upto] + ([extra] if extra else [])
    try:
        return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=generation)
    except Exception as e:  # the template's raise_exception (TemplateError) or its own bugs on this row
        hint = " (this model's template has no system role: put the system text into the first user message)" \
            if "system" in str(e).lower() and any(m["role"] == "system" for m in messages) else ""
        raise DataError(f"{where}: the model's chat template refused the conversation: {e}{hint}") from None


def _cannot_mark(where: str, message: int, why: str) -> DataError:
    return DataError(f"{where}: the chat template cannot mark assistant turns (message {message + 1}: {why}); "
                     "its render of the conversation so far is not a prefix of the whole conversation's render")


def _common(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _turn_end(tokenizer, conversation: Conversation, k: int, whole: str, start: int, where: str) -> int:
    """Where assistant message k ends in `whole`."""
    own = _render(tokenizer, conversation, k + 1, False, where)
    if whole.startswith(own) and len(own) > start:
        return len(own)
    if k == len(conversation.messages) - 1:
        raise _cannot_mark(where, k, "the turn's render differs from the whole render")
    # The turn rendered as history: followed by a probe user turn, whose header is measured on
    # the conversation before the turn.
    try:
        probe = [_render(tokenizer, conversation, k + 1, False, where, {"role": "user", "content": p}) for p in PROBES]
        base = [_render(tokenizer, conversation, k, False, where, {"role": "user", "content": p}) for p in PROBES]
        before = _render(tokenizer, conversation, k, False, where)
    except DataError:  # the template takes no user turn here: no way to see the turn in history
        raise _cannot_mark(where, k, "the turn renders differently in history and at the end") from None
    header = _common(*base) - len(before)
    end = _common(*probe) - header
    if header < 0 or not base[0].startswith(before) or end <= start or not whole.startswith(probe[0][:end]):
        raise _cannot_mark(where, k, "the turn renders differently in history and at the end")
    return end


def _check_tools_rendered(whole: str, conversation: Conversation, where: str) -> None:
    """A template without tool support drops tools and tool calls silently: refused instead."""
    calls = [c["function"]["name"] for m in conversation.messages for c in m.get("tool_calls", [])]
    tools = [t["function"]["name"] for t in conversation.tools or ()]
    missing = sorted({name for name in calls + tools if name not in whole})
    if missing:
        raise DataError(f"{where}: the model's chat template does not render tools or tool calls (no trace of "
                        f"{', '.join(missing)} in the rendered conversation); use a model whose template supports tools")


def trained_spans(tokenizer, conversation: Conversation, where: str) -> tuple[str, list[tuple[int, int]], int]:
    """(whole render, character spans of the trained assistant turns, where the last assistant turn starts)."""
    whole = _render(tokenizer, conversation, len(conversation.messages), False, where)
    _check_tools_rendered(whole, conversation, where)
    spans, last_start = [], len(whole)
    last = conversation.last_assistant
    for k, message in enumerate(conversation.messages):
        if message["role"] != "assistant" or not (conversation.trained[k] or k == last):
            continue
        head = _render(tokenizer, conversation, k, True, where)
        if not whole.startswith(head):
            raise _cannot_mark(where, k, "the messages before it render differently")
        if k == last:
            last_start = len(head)
        if conversation.trained[k]:
            spans.append((len(head), _turn_end(tokenizer, conversation, k, whole, len(head), where)))
    return whole, spans, last_start


class ControlTexts(NamedTuple):
    """The strings that tokenize as one control token: `special` ones (turn markers, BOS/EOS,
    tool tags) no row may spell; `added` ones not marked special (Qwen's <tool_call>,
    <tool_response>, <think>) that an assistant turn may write (its tool calls and reasoning are
    what the model learns to produce) and any other turn would forge."""

    special: list[str]
    added: list[str]


def special_texts(tokenizer) -> ControlTexts:
    """The tokenizer's control texts, longest first; computed once per file, not per row."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    special = set(tokenizer.all_special_tokens) | {t.content for t in added.values() if getattr(t, "special", False)}
    plain = {t.content for t in added.values() if not getattr(t, "special", False)}
    return ControlTexts(*(sorted((t for t in texts if t), key=len, reverse=True) for texts in (special, plain - special)))


def check_no_special_text(tokenizer, conversation: Conversation, where: str, texts: Optional[ControlTexts] = None) -> None:
    texts = special_texts(tokenizer) if texts is None else texts
    parts = [(f"message {i + 1}", m) for i, m in enumerate(conversation.messages)] + [("tools", conversation.tools)]
    for name, part in parts:
        text = json.dumps(part, ensure_ascii=False)
        refused = texts.special if isinstance(part, dict) and part.get("role") == "assistant" else texts.special + texts.added
        found = next((s for s in refused if s in text), None)
        if found is not None:
            raise DataError(f"{where}: {name} contains the special token text {found!r}: rows are data and may "
                            "not spell the template's control tokens")


def tokenize_conversation(tokenizer, conversation: Conversation, where: str, specials: Optional[ControlTexts] = None):
    """(input_ids, labels (IGNORE_INDEX outside trained spans), index of the last assistant turn's
    first token, token index where each trained span ends)."""
    from kubetune_trainer.data.tokenization import IGNORE_INDEX

    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("dataset.conversations needs a fast tokenizer (tokenizer.json) to mark assistant tokens by offsets")
    check_no_special_text(tokenizer, conversation, where, specials)
    whole, spans, last_start = trained_spans(tokenizer, conversation, where)
    encoding = tokenizer(whole, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
    labels = [IGNORE_INDEX] * len(ids)
    ends = []
    for start, end in spans:
        inside = [i for i, (s, _) in enumerate(offsets) if start <= s < end]
        for i in inside:
            labels[i] = ids[i]
        ends.append(inside[-1] + 1 if inside else 0)
    prompt_length = next((i for i, (s, _) in enumerate(offsets) if s >= last_start), len(ids))
    return ids, labels, prompt_length, ends


def generation_prompt(tokenizer, conversation: Conversation, where: str) -> str:
    """Every turn before the last assistant message, the assistant turn opened (evaluation)."""
    check_no_special_text(tokenizer, conversation, where)
    return _render(tokenizer, conversation, conversation.last_assistant, True, where)


def model_tokenizer(path: str, field: str = "model.path"):
    """The model's tokenizer alone, for the check phase (a checkpoint directory or a GGUF file)."""
    from kubetune_api.errors import ModelSourceError
    from kubetune_trainer.model.location import locate_model

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import AutoTokenizer

    location = locate_model(path, field)
    try:
        if location.is_dir():
            return AutoTokenizer.from_pretrained(location)
        return AutoTokenizer.from_pretrained(location.parent, gguf_file=location.name)
    except (OSError, ValueError) as e:
        raise ModelSourceError(f"{field} {path!r}: cannot load the tokenizer from {location}: {e}") from e
