"""Chat rows: the `conversations` block of a dataset (training tasks, retention, evaluation).

A dataset with `conversations` takes rows that already are conversations (OpenAI's chat
fine-tuning format or ShareGPT's) and renders them through the model's own chat template; it
replaces promptTemplate/completionField/completionTemplate/chatTemplate, which the validators
here refuse beside it.
"""
from __future__ import annotations

from enum import Enum
from typing import Optional

from pydantic import Field

from kubetune_api.base import MAX_COLUMN, ApiModel


class ConversationStyle(str, Enum):
    auto = "auto"
    openai = "openai"
    sharegpt = "sharegpt"


DEFAULT_FIELDS = {ConversationStyle.openai: "messages", ConversationStyle.sharegpt: "conversations"}


class ConversationsSpec(ApiModel):
    """Rows that are conversations, rendered with the model's chat template; loss on assistant turns."""

    field: Optional[str] = Field(
        None, min_length=1, max_length=MAX_COLUMN,
        description=(
            "Column holding the conversation. Default: messages for style openai, conversations for style sharegpt; "
            "with style auto, whichever of the two the row has."
        ),
    )
    style: ConversationStyle = Field(
        ConversationStyle.auto,
        description=(
            "openai: OpenAI's chat fine-tuning format, a list of {role: system|user|assistant|tool, content} messages "
            "with optional per-message weight (0 or 1, assistant messages), tool_calls on assistant messages, "
            "tool_call_id on tool messages, and a row-level tools list. sharegpt: a list of {from: "
            "system|human|gpt|function_call|observation|tool, value} turns. auto: told apart by the messages' keys "
            "(role/content or from/value)."
        ),
    )


_PROMPT_FIELDS = ("prompt_template", "completion_field", "completion_template")


def check_rows_mode(spec, where: str, completion: bool = True) -> None:
    """ValueError unless `spec` gives rows one way: conversations, or promptTemplate (with exactly
    one of completionField and completionTemplate when `completion`)."""
    from pydantic.alias_generators import to_camel

    if getattr(spec, "conversations", None) is not None:
        given = [f"{where}.{to_camel(name)}" for name in _PROMPT_FIELDS if getattr(spec, name, None) is not None]
        if getattr(spec, "chat_template", False):
            given.append(f"{where}.chatTemplate")
        if given:
            raise ValueError(f"{where}.conversations renders each row through the model's chat template and takes the "
                             f"loss on assistant turns: remove {', '.join(given)}")
        return
    if spec.prompt_template is None:
        raise ValueError(f"{where} needs promptTemplate (or conversations, for chat rows)")
    if completion and (spec.completion_field is None) == (spec.completion_template is None):
        raise ValueError(f"{where}: set exactly one of completionField and completionTemplate")
