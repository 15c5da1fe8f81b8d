"""Tokenizers with the real chat templates of each model family (tests/fixtures/chat_templates),
on the tiny test tokenizer with the special tokens each template needs: offline, in milliseconds."""
from __future__ import annotations

from pathlib import Path

from tinymodels import build_tokenizer

TEMPLATES = Path(__file__).parent / "fixtures" / "chat_templates"
# The shipped OpenAI-format example (multi-turn, tools, tool calls) that the CLI tests train and score on.
CHAT_FILE = Path(__file__).parents[1] / "examples" / "data" / "chat-tools.jsonl"

# family: (template file, special tokens, non-special added tokens, bos, eos, end-of-turn marker)
FAMILIES = {
    "llama-3.1": ("llama-3.1.jinja", ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                                      "<|eom_id|>", "<|python_tag|>"], [], "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>"),
    "qwen2.5": ("qwen2.5.jinja", ["<|im_start|>", "<|im_end|>"], ["<tool_call>", "</tool_call>", "<tool_response>",
                                                                 "</tool_response>"], None, "<|im_end|>", "<|im_end|>\n"),
    "qwen3": ("qwen3.jinja", ["<|im_start|>", "<|im_end|>"], ["<tool_call>", "</tool_call>", "<tool_response>",
                                                             "</tool_response>", "<think>", "</think>"], None, "<|im_end|>", "<|im_end|>\n"),
    "mistral-v0.3": ("mistral-v0.3.jinja", ["[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                                            "[TOOL_RESULTS]", "[/TOOL_RESULTS]"], [], "<s>", "</s>", "</s>"),
    "smollm2": ("smollm2.jinja", ["<|im_start|>", "<|im_end|>"], [], None, "<|im_end|>", "<|im_end|>\n"),
    "gemma-2": ("gemma-2.jinja", ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"], [], "<bos>", "<eos>", "<end_of_turn>\n"),
}
TOOL_FAMILIES = ("llama-3.1", "qwen2.5", "qwen3", "mistral-v0.3")


def family_tokenizer(family: str):
    file, specials, added, bos, eos, _ = FAMILIES[family]
    tokenizer = build_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": specials + [t for t in (bos, eos) if t and t not in specials]})
    tokenizer.add_tokens(added)
    if bos:
        tokenizer.bos_token = bos
    tokenizer.eos_token = eos
    tokenizer.chat_template = (TEMPLATES / file).read_text(encoding="utf-8")
    return tokenizer


def tiny_chat_model_dir(directory: Path, family: str = "qwen2.5") -> Path:
    """A tiny model saved with `family`'s tokenizer and chat template, as a model.path."""
    from tinymodels import build_model

    tokenizer = family_tokenizer(family)
    build_model(tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
