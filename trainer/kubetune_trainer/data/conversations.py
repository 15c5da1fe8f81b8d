"""Chat rows (dataset.conversations) to conversations, checked strictly.

Two row formats: OpenAI's chat fine-tuning format (`messages` of {role, content} with per-message
`weight`, `tool_calls` on assistant messages, `tool` messages and a row-level `tools` list) and
ShareGPT's (`conversations` of {from, value}). Both become one Conversation: the messages as
chat templates take them (role, content text, tool_calls with arguments as an object), which
assistant turns are trained, and the tools. Every error names file, line and field.

Light: no torch or transformers at import; rendering with the model's chat template and the
label mask are `chat_masks`'s job.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from kubetune_api.conversations import DEFAULT_FIELDS, ConversationsSpec, ConversationStyle
from kubetune_api.errors import DataError

ROLES = ("system", "user", "assistant", "tool")
OPENAI_KEYS = {"role", "content", "name", "weight", "tool_calls", "tool_call_id"}
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "model": "assistant", "function_call": "assistant", "observation": "tool", "tool": "tool",
                  "function_response": "tool"}
SHAREGPT_KEYS = {"from", "value", "weight"}


@dataclass(frozen=True)
class Conversation:
    messages: tuple  # dicts as chat templates take them: role, content (text), tool_calls, tool_call_id, name
    trained: tuple  # per message: True for an assistant turn the loss is taken on
    tools: Optional[tuple] = None  # the row's tool definitions ({type: function, function: {...}})

    @property
    def last_assistant(self) -> int:
        """Index of the last assistant message (evaluation's reference; predictions' prompt end)."""
        return max(i for i, m in enumerate(self.messages) if m["role"] == "assistant")

    def as_lists(self) -> tuple[list[dict], Optional[list[dict]]]:
        """Fresh copies for a template call (templates get their own objects, never ours)."""
        return json.loads(json.dumps(list(self.messages))), (json.loads(json.dumps(list(self.tools))) if self.tools else None)


def _text(content, where: str) -> str:
    """A message's content as text: a string, or OpenAI's list of text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for number, part in enumerate(content, 1):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text" or not isinstance(part.get("text"), str):
                what = f"type {kind!r}" if kind else f"{type(part).__name__}"
                raise DataError(f"{where}.content part {number}: only text parts ({{type: text, text: ...}}) are supported, got {what}")
            texts.append(part["text"])
        return "".join(texts)
    raise DataError(f"{where}.content must be a string or a list of text parts, got {type(content).__name__}")


def _json_object(value, where: str, what: str, kind: type = dict):
    """`value`, or the JSON text it holds, as a `kind` (an object); DataError naming `where` and `what` it should be."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise DataError(f"{where} is not valid JSON ({what}): {e}") from None
    if not isinstance(value, kind):
        raise DataError(f"{where} must be {what}, got {type(value).__name__}")
    return value


def _arguments(value, where: str) -> dict:
    """A tool call's arguments as an object: OpenAI sends a JSON string, templates want the object."""
    return _json_object(value, f"{where}.arguments", "a JSON object (or a string holding one)")


def _tool_call(call, where: str) -> dict:
    if not isinstance(call, dict):
        raise DataError(f"{where} must be an object {{id, type: function, function: {{name, arguments}}}}")
    if call.get("type", "function") != "function":
        raise DataError(f"{where}.type must be 'function', got {call.get('type')!r}")
    function = call.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise DataError(f"{where}.function must be an object with a non-empty string name")
    out = {"type": "function", "function": {"name": function["name"],
                                            "arguments": _arguments(function.get("arguments", {}), f"{where}.function")}}
    if "id" in call:
        if not isinstance(call["id"], str):
            raise DataError(f"{where}.id must be a string")
        out["id"] = call["id"]
    return out


def _weight(message: dict, role: str, where: str) -> bool:
    """Whether the message is trained: assistant messages unless weight 0."""
    if "weight" not in message:
        return role == "assistant"
    weight = message["weight"]
    if role != "assistant":
        raise DataError(f"{where}.weight: only assistant messages take a weight (this one is {role})")
    if isinstance(weight, bool) or weight not in (0, 1):
        raise DataError(f"{where}.weight must be 0 or 1, got {weight!r}")
    return weight == 1


def _openai_message(message, where: str) -> tuple[dict, bool]:
    if not isinstance(message, dict):
        raise DataError(f"{where} must be an object with role and content, got {type(message).__name__}")
    role = message.get("role")
    if role not in ROLES:
        raise DataError(f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}")
    unknown = sorted(set(message) - OPENAI_KEYS)
    if unknown:
        raise DataError(f"{where}: unknown key {unknown[0]!r} (a message has {', '.join(sorted(OPENAI_KEYS))})")
    out: dict = {"role": role}
    calls = message.get("tool_calls")
    if calls is not None:
        if role != "assistant":
            raise DataError(f"{where}.tool_calls: only assistant messages make tool calls (this one is {role})")
        if not isinstance(calls, list) or not calls:
            raise DataError(f"{where}.tool_calls must be a non-empty list")
        out["tool_calls"] = [_tool_call(c, f"{where}.tool_calls[{i}]") for i, c in enumerate(calls)]
    content = message.get("content")
    if content is None and calls is None:
        raise DataError(f"{where}.content is missing (only an assistant message with tool_calls may leave it out)")
    out["content"] = "" if content is None else _text(content, where)
    for key in ("name", "tool_call_id"):
        if key in message:
            if not isinstance(message[key], str):
                raise DataError(f"{where}.{key} must be a string")
            out[key] = message[key]
    return out, _weight(message, role, where)


def _sharegpt_message(turn, where: str) -> tuple[dict, bool]:
    if not isinstance(turn, dict):
        raise DataError(f"{where} must be an object with from and value, got {type(turn).__name__}")
    unknown = sorted(set(turn) - SHAREGPT_KEYS)
    if unknown:
        raise DataError(f"{where}: unknown key {unknown[0]!r} (a ShareGPT turn has from, value and optionally weight)")
    source = turn.get("from")
    if source not in SHAREGPT_ROLES:
        raise DataError(f"{where}.from must be one of {', '.join(SHAREGPT_ROLES)}, got {source!r}")
    value = turn.get("value")
    if not isinstance(value, str):
        raise DataError(f"{where}.value must be a string, got {type(value).__name__}")
    role = SHAREGPT_ROLES[source]
    if source == "function_call":  # {"name": ..., "arguments": {...}} as JSON text
        call = _json_object(value, f"{where}.value", "a function_call turn's JSON object {name, arguments}")
        out = {"role": role, "content": "",
               "tool_calls": [_tool_call({"type": "function", "function": call}, f"{where}.value")]}
    else:
        out = {"role": role, "content": value}
    return out, _weight(turn, role, where)


def _tools(value, where: str) -> Optional[tuple]:
    if value is None:
        return None
    # ShareGPT files (LLaMA-Factory's) keep tools as JSON text.
    value = _json_object(value, where, "a list of tool definitions", list)
    for i, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or tool.get("type", "function") != "function":
            raise DataError(f"{where}[{i}] must be {{type: function, function: {{name, description, parameters}}}}")
    return tuple(value) or None


def _style(spec: ConversationsSpec, row: dict, where: str) -> tuple[str, ConversationStyle]:
    """(column, style) of this row."""
    if spec.style is not ConversationStyle.auto:
        return spec.field or DEFAULT_FIELDS[spec.style], spec.style
    if spec.field is None:
        present = [f for f in DEFAULT_FIELDS.values() if f in row]
        if not present:
            raise DataError(f"{where}: no conversation: the row has neither a messages nor a conversations field")
        field = present[0]
    else:
        field = spec.field
    value = row.get(field)
    first = value[0] if isinstance(value, list) and value and isinstance(value[0], dict) else {}
    return field, ConversationStyle.sharegpt if "from" in first else ConversationStyle.openai


def read_conversation(spec: ConversationsSpec, row: dict, where: str) -> Conversation:
    """The row's conversation; DataError naming `where` ('file line N') and the field at fault."""
    field, style = _style(spec, row, where)
    if field not in row:
        raise DataError(f"{where}: conversation field '{field}' is missing")
    turns = row[field]
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: '{field}' must be a non-empty list of messages, got {type(turns).__name__ if turns else turns!r}")
    read = _openai_message if style is ConversationStyle.openai else _sharegpt_message
    messages, trained = zip(*(read(t, f"{where}: {field}[{i}]") for i, t in enumerate(turns)))
    if not any(trained):
        raise DataError(f"{where}: '{field}' has no trained assistant message (each has weight 0, or there is none)")
    return Conversation(tuple(messages), tuple(trained), _tools(row.get("tools"), f"{where}: tools"))


def reference(conversation: Conversation, where: str) -> str:
    """The text evaluation scores against: the last assistant message's content."""
    message = conversation.messages[conversation.last_assistant]
    if not message["content"].strip():
        raise DataError(f"{where}: the last assistant message has no text content to score predictions against")
    return message["content"]
