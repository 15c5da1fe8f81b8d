"""Prompts wrapped as a user turn in the tokenizer's chat template, for training and evaluation.

Light: no torch or transformers at import (it only calls the tokenizer it is given).
"""
from __future__ import annotations

from kubetune_api.errors import ConfigError


class RenderedChat(str):
    """A prompt already rendered with the chat template (a conversation's turns): used as is."""


def chat_prompt(tokenizer, prompt: str, field: str = "dataset.chatTemplate") -> str:
    """`prompt` as a user turn, the assistant turn opened; ConfigError (naming `field`) if the
    tokenizer has no chat template."""
    if isinstance(prompt, RenderedChat):
        return str(prompt)
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"{field} is true but the model's tokenizer has no chat template (no chat_template in "
            "tokenizer_config.json or chat_template.jinja); set chatTemplate to false and write the "
            "model's prompt format into promptTemplate"
        )
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)


def chat_prompts(tokenizer, prompts: list[str], field: str = "dataset.chatTemplate") -> list[str]:
    return [chat_prompt(tokenizer, p, field) for p in prompts]
