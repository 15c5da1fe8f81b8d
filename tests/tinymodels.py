"""Builders for tiny offline models, tokenizers, data and GGUF files used by the trainer tests."""
from __future__ import annotations

import json
from pathlib import Path

COLORS = ["red", "green", "blue", "yellow", "black", "white", "purple", "orange"]
ANIMALS = ["cat", "dog", "fox", "owl", "bee", "cow"]
TEMPLATE = "Which animal is {{ color }} {{ animal }}?\nAnswer:"


def make_rows(n: int = 48) -> list[dict]:
    """A learnable task: the completion repeats the animal named in the prompt."""
    return [
        {"color": COLORS[i % len(COLORS)], "animal": ANIMALS[i % len(ANIMALS)], "answer": " " + ANIMALS[i % len(ANIMALS)]}
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def build_tokenizer():
    """A byte-level BPE (like SmolLM2's) trained on the task's text, with BOS added like Llama."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = [TEMPLATE.replace("{{ color }}", c).replace("{{ animal }}", a) + " " + a for c in COLORS for a in ANIMALS]
    tok.train_from_iterator(corpus * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    # No pad token on purpose: the trainer must fall back to eos.
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def build_model(tokenizer, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
        initializer_range=0.2,  # large enough that LoRA alone can move the logits of a random model
    )
    return LlamaForCausalLM(config)


def write_gguf(model, tokenizer, path: Path) -> Path:
    """Writes a float32 llama GGUF file as llama.cpp's converter lays it out, through the
    promotion's exporter (tests/trainer/promotion/test_gguf_export.py checks it against llama.cpp's own)."""
    import tempfile

    from kubetune_api.promotion import GgufQuantization
    from kubetune_trainer.promotion.gguf_export import export_gguf

    with tempfile.TemporaryDirectory() as checkpoint:
        model.save_pretrained(checkpoint)
        tokenizer.save_pretrained(checkpoint)
        export_gguf(Path(checkpoint), path, GgufQuantization.F32, "tiny")
    return path
