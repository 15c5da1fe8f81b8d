"""A Hugging Face Llama checkpoint directory written as one GGUF file, laid out as llama.cpp's
convert_hf_to_gguf.py writes it: llama.* hyperparameters, a byte-level BPE ("gpt2") tokenizer
with its merges and special tokens (so the file loads on its own), q/k rows permuted the
way llama.cpp's rotary embedding reads them, norms and biases in F32.

Tensors are read one at a time from the checkpoint's safetensors files, so memory holds the
output (the file's size), never a second copy of the model.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterator

import numpy as np

from kubetune_api.errors import ConfigError
from kubetune_api.promotion import GgufQuantization

log = logging.getLogger(__name__)

ARCHITECTURES = ("LlamaForCausalLM",)
# llama.cpp names its pre-tokenizers (text split before BPE) and cannot read them from the file;
# these are the tokenizer.json shapes whose llama.cpp name we know.
GPT2_PRE = {"type": "ByteLevel", "use_regex": True}
SMOLLM_PRE = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, GPT2_PRE]}


def file_name(quantization: GgufQuantization) -> str:
    return f"model.{quantization.value}.gguf"


def export_gguf(model_dir: Path, target: Path, quantization: GgufQuantization, name: str) -> None:
    """Writes the checkpoint at `model_dir` (with its tokenizer) to the GGUF file `target`;
    `name` becomes general.name."""
    import gguf
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(model_dir)
    architectures = config.architectures or [config.model_type]
    if architectures[0] not in ARCHITECTURES:
        raise ConfigError(f"promotion.export gguf: architecture {architectures[0]} is not supported "
                          f"(supported: {', '.join(ARCHITECTURES)})")
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ConfigError(f"promotion.export gguf: rope_type {rope['rope_type']} is not supported (only default RoPE)")
    qtype = gguf.GGMLQuantizationType[quantization.value]
    writer = gguf.GGUFWriter(str(target), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name(name)
    _write_hyperparameters(writer, config, quantization)
    _write_tokenizer(writer, AutoTokenizer.from_pretrained(model_dir), config.vocab_size)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for tensor, array in _checkpoint_tensors(model_dir):
        if tensor == "lm_head.weight" and config.tie_word_embeddings:
            continue  # tied: llama.cpp reuses token_embd, and transformers ties again when output is absent
        stem, suffix = tensor.rsplit(".", 1)
        gguf_name = names.get_name(stem)
        if gguf_name is None:
            raise ConfigError(f"promotion.export gguf: tensor {tensor} has no llama.cpp name")
        if stem.endswith("q_proj"):
            array = _permute(array, config.num_attention_heads)
        elif stem.endswith("k_proj"):
            array = _permute(array, config.num_key_value_heads)
        data, stored = _encode(array, qtype)
        writer.add_tensor(f"{gguf_name}.{suffix}", data, raw_dtype=stored)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _write_hyperparameters(writer, config, quantization: GgufQuantization) -> None:
    import gguf

    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_file_type({"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
                          "BF16": gguf.LlamaFileType.MOSTLY_BF16, "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[quantization.value])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)


def _write_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    """The vocabulary as llama.cpp's gpt2 tokenizer reads it: every id up to the model's vocab
    size (gaps as [PADn]), special tokens as control, merges as "a b"."""
    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    pre = _pre_tokenizer_name(spec)
    vocab = {index: token for token, index in tokenizer.get_vocab().items()}
    if max(vocab) >= vocab_size:
        raise ConfigError(f"promotion.export gguf: the tokenizer has id {max(vocab)}, beyond the model's vocab_size {vocab_size}")
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        tokens.append(vocab.get(index, f"[PAD{index}]"))
        if index not in vocab:
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            types.append(gguf.TokenType.CONTROL if added[index].special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    for token_id, add in ((tokenizer.bos_token_id, writer.add_bos_token_id), (tokenizer.eos_token_id, writer.add_eos_token_id),
                          (tokenizer.unk_token_id, writer.add_unk_token_id), (tokenizer.pad_token_id, writer.add_pad_token_id)):
        if token_id is not None:
            add(token_id)
    # Whether BOS/EOS frame a text is in the tokenizer's post-processor; ask it rather than parse it.
    ids = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id)
    writer.add_add_eos_token(tokenizer.eos_token_id is not None and ids[-1] == tokenizer.eos_token_id)
    writer.add_add_space_prefix(False)
    if isinstance(tokenizer.chat_template, str):
        writer.add_chat_template(tokenizer.chat_template)


def _pre_tokenizer_name(spec: dict) -> str:
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    if model.get("type") != "BPE" or not _matches(pre, GPT2_PRE) and not _matches(pre, SMOLLM_PRE):
        raise ConfigError("promotion.export gguf: only byte-level BPE tokenizers split like GPT-2 or SmolLM are supported "
                          f"(this one: model {model.get('type')}, pre-tokenizer {pre.get('type')})")
    return "gpt-2" if _matches(pre, GPT2_PRE) else "smollm"


def _matches(actual, expected) -> bool:
    """Whether `actual` has every key of `expected` with a matching value (lists item by item)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(_matches(actual.get(k), v) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(map(_matches, actual, expected))
    return actual == expected


def _checkpoint_tensors(model_dir: Path) -> Iterator[tuple[str, np.ndarray]]:
    """Each tensor of the checkpoint as float32, shard by shard."""
    import torch
    from safetensors import safe_open

    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    if not (model_dir / files[0]).is_file():
        raise ConfigError(f"promotion.export gguf: {model_dir} has no safetensors weights")
    for file in files:
        with safe_open(str(model_dir / file), framework="pt") as shard:
            for name in shard.keys():
                yield name, shard.get_tensor(name).to(torch.float32).numpy()


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (its rotary embedding pairs adjacent rows, Hugging Face pairs
    the halves of each head); transformers' GGUF loader undoes it."""
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _encode(array: np.ndarray, qtype) -> tuple[np.ndarray, object]:
    """The tensor in `qtype`; 1-D tensors stay F32, and a matrix whose rows do not split into
    quantization blocks falls back to F16, as llama.cpp's converter does."""
    import gguf

    if array.ndim <= 1:
        qtype = gguf.GGMLQuantizationType.F32
    try:
        return gguf.quants.quantize(array, qtype), qtype
    except gguf.QuantError:
        log.info("a tensor of shape %s does not split into %s blocks; written as F16", array.shape, qtype.name)
        return gguf.quants.quantize(array, gguf.GGMLQuantizationType.F16), gguf.GGMLQuantizationType.F16
