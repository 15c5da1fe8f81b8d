"""What a model needs in device memory to run inference, estimated from its checkpoint's
config.json (no weights read), so the check phase can refuse a job that cannot fit before any
model loads.

needed = parameters x bytes per parameter of the job's dtype (the weights)
       + the KV cache for one batch at its longest (2 x layers x KV heads x head dim x dtype
         bytes x batch x tokens)
       + the logits a log-likelihood batch holds (batch x tokens x vocabulary x (dtype bytes +
         8): the model's logits, their float32 copy and its log-softmax); generation keeps the
         logits of the last position only.

The parameter count is exact for the decoder families whose layout is known (llama, mistral,
qwen2, qwen3, gemma, gemma2, gemma3_text, phi3: embedding, per layer attention with grouped
KV heads, gated MLP and norms, final norm, lm_head unless tied); for any other architecture it is
read from the safetensors headers (tensor shapes, a few KiB per shard). A quantized checkpoint
(quantization_config) counts its stored bytes, as loaded. Pure Python: the check phase imports
no torch for this.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
# safetensors dtype names -> bytes per element (their headers name each tensor's dtype).
SAFETENSORS_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
                     "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "F4": 1}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # a safetensors header is JSON; anything larger is not one

# Family traits: q/k/v bias (True, False, or the config key that says), o_proj bias, MLP bias,
# per-head q/k norms, norms per layer, and whether embeddings are tied when config.json is silent.
_FAMILIES = {
    "llama": ("attention_bias", "attention_bias", "mlp_bias", False, 2, False),
    "mistral": (False, False, False, False, 2, False),
    "qwen2": (True, False, False, False, 2, False),
    "qwen3": ("attention_bias", "attention_bias", False, True, 2, False),
    "gemma": ("attention_bias", "attention_bias", False, False, 2, True),
    "gemma2": ("attention_bias", "attention_bias", False, False, 4, True),
    "gemma3_text": ("attention_bias", "attention_bias", False, True, 4, True),
    "phi3": (False, False, False, False, 2, False),
}


class EstimateError(ValueError):
    """The checkpoint says too little (no config.json, no safetensors) to estimate it."""


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    weight_bytes: int
    dtype: str  # what the weights load as: float32, bfloat16, ... or "stored" (quantized)
    kv_cache_bytes: int
    logits_bytes: int
    batch: int
    tokens: int

    @property
    def total(self) -> int:
        return self.weight_bytes + self.kv_cache_bytes + self.logits_bytes

    def describe(self) -> str:
        """E.g. '~141.2 GiB (70.6B parameters x 2 bytes bfloat16 = 131.5 GiB + KV cache 3.1 GiB for
        batch 8 x 2048 tokens)'."""
        if self.dtype == "stored":
            weights = f"{_billions(self.parameters)} parameters as stored (quantized) = {gib(self.weight_bytes)}"
        else:
            weights = (f"{_billions(self.parameters)} parameters x {DTYPE_BYTES[self.dtype]} bytes {self.dtype} = "
                       f"{gib(self.weight_bytes)}")
        logits = f" + logits {gib(self.logits_bytes)}" if self.logits_bytes else ""
        return (f"~{gib(self.total)} ({weights} + KV cache {gib(self.kv_cache_bytes)}{logits} "
                f"for batch {self.batch} x {self.tokens} tokens)")


def gib(count: float) -> str:
    return f"{count / GIB:.1f} GiB"


def _billions(count: int) -> str:
    return f"{count / 1e9:.1f}B" if count >= 1e8 else f"{count / 1e6:.1f}M"


def read_config(directory: Path) -> dict:
    """The checkpoint's config.json, a JSON object."""
    path = directory / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise EstimateError(f"{path}: cannot read it: {e}") from e
    if not isinstance(config, dict):
        raise EstimateError(f"{path}: not a JSON object")
    return config


def _text(config: dict) -> dict:
    """A multimodal wrapper's text_config (what generates) merged over it, so hidden_size and
    friends are found at the top."""
    text = config.get("text_config")
    return {**config, **text} if isinstance(text, dict) and "hidden_size" not in config else config


def head_dim(config: dict) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def _flag(config: dict, trait) -> bool:
    return bool(config.get(trait, False)) if isinstance(trait, str) else trait


def parameter_count(config: dict) -> Optional[int]:
    """Exact parameters of a known decoder family from its config; None for any other."""
    family = _FAMILIES.get(config.get("model_type"))
    if family is None:
        return None
    qkv_bias, o_bias, mlp_bias, qk_norm, norms, tied_default = family
    try:
        hidden, vocab, layers = int(config["hidden_size"]), int(config["vocab_size"]), int(config["num_hidden_layers"])
        heads, inner = int(config["num_attention_heads"]), int(config["intermediate_size"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
    except (KeyError, TypeError, ValueError):
        return None  # an incomplete config: the safetensors headers say
    dim = head_dim(config)
    if min(hidden, vocab, layers, heads, inner, kv_heads, dim) < 1:
        raise EstimateError("config.json: hidden_size, vocab_size, num_hidden_layers, num_attention_heads, "
                            "num_key_value_heads, intermediate_size and head_dim must be positive")
    q, kv = heads * dim, kv_heads * dim
    attention = hidden * (q + 2 * kv) + q * hidden
    attention += (q + 2 * kv) * _flag(config, qkv_bias) + hidden * _flag(config, o_bias) + 2 * dim * qk_norm
    mlp = 3 * hidden * inner + (2 * inner + hidden) * _flag(config, mlp_bias)
    tied = config.get("tie_word_embeddings", tied_default)
    return vocab * hidden * (1 if tied else 2) + layers * (attention + mlp + norms * hidden) + hidden


def _safetensors_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise EstimateError(f"{index}: cannot read its weight_map: {e}") from e
        return [directory / name for name in shards if "/" not in name and name not in ("", ".", "..")]
    return sorted(directory.glob("*.safetensors"))


def stored_tensors(directory: Path) -> tuple[int, int]:
    """(parameters, bytes) of the checkpoint's safetensors files, from their headers alone."""
    files = _safetensors_files(directory)
    if not files:
        raise EstimateError(f"{directory}: no safetensors weights to count (and config.json's architecture is not one "
                            f"whose size kubetune computes: {', '.join(sorted(_FAMILIES))})")
    parameters = stored = 0
    for path in files:
        try:
            with path.open("rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                if length > MAX_HEADER_BYTES:
                    raise ValueError(f"header of {length} bytes")
                header = json.loads(handle.read(length))
        except (OSError, ValueError, struct.error) as e:
            raise EstimateError(f"{path}: not a readable safetensors file: {e}") from e
        for name, tensor in header.items():
            if name == "__metadata__" or not isinstance(tensor, dict):
                continue
            count = math.prod(int(n) for n in tensor.get("shape", []))
            parameters += count
            stored += count * SAFETENSORS_BYTES.get(str(tensor.get("dtype")), 4)
    return parameters, stored


def kv_cache_bytes(config: dict, dtype_bytes: int, batch: int, tokens: int) -> int:
    """Keys and values of every layer for `batch` rows of `tokens` positions."""
    try:
        layers, heads = int(config["num_hidden_layers"]), int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        per_token = 2 * layers * kv_heads * head_dim(config) * dtype_bytes
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return 0  # unknown layout: the weights alone are compared
    return per_token * batch * tokens


def estimate_memory(directory: Path, dtype: str, batch: int, tokens: int, scores_logits: bool) -> MemoryEstimate:
    """The estimate for the checkpoint in `directory`, its weights as `dtype` (float32,
    bfloat16, float16), one batch of `batch` rows x `tokens` positions; `scores_logits` when a
    log-likelihood task keeps every position's logits. EstimateError for files that say too
    little or hold values no model has (zero heads, strings, negative sizes): they are the
    checkpoint's, not kubetune's, and must not crash the check phase."""
    try:
        estimate = _estimate(directory, dtype, batch, tokens, scores_logits)
    except EstimateError:
        raise
    except (TypeError, ValueError, ZeroDivisionError, KeyError, AttributeError, OverflowError) as e:
        raise EstimateError(f"{directory}: config.json or a safetensors header holds a value no model has: "
                            f"{type(e).__name__}: {str(e)[:200]}") from None
    if min(estimate.parameters, estimate.weight_bytes, estimate.kv_cache_bytes, estimate.logits_bytes) < 0:
        raise EstimateError(f"{directory}: config.json or a safetensors header gives a negative size")
    return estimate


def _estimate(directory: Path, dtype: str, batch: int, tokens: int, scores_logits: bool) -> MemoryEstimate:
    top = read_config(directory)
    config = _text(top)  # a multimodal wrapper's text model makes the KV cache and logits
    dtype_bytes = DTYPE_BYTES[dtype]
    # The wrapper's own parameters (a vision tower) are the safetensors headers' to count.
    parameters = parameter_count(top) if "quantization_config" not in config else None
    if parameters is not None:
        weights = parameters * dtype_bytes
    else:
        parameters, stored = stored_tensors(directory)
        weights, dtype = (stored, "stored") if "quantization_config" in config else (parameters * dtype_bytes, dtype)
    vocab = int(config.get("vocab_size") or 0)
    logits = batch * tokens * vocab * (dtype_bytes + 8) if scores_logits else 0
    return MemoryEstimate(parameters, weights, dtype, kv_cache_bytes(config, dtype_bytes, batch, tokens), logits,
                          batch, tokens)
