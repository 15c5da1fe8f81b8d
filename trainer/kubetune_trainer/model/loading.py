"""Finds the base model named by model.path and loads it with its tokenizer.

model.path is a Hugging Face checkpoint directory, a .gguf file, or pkg://<package>/<file>.
A GGUF file is dequantized once into an ordinary checkpoint under $KUBETUNE_CACHE, because
loading GGUF takes tens of seconds and yields a model that cannot be saved as is.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from kubetune_api.training import Dtype, ModelSource
from kubetune_api.errors import ModelSourceError
from kubetune_trainer.model.location import locate_model

log = logging.getLogger(__name__)


def cache_root() -> Path:
    return Path(os.environ.get("KUBETUNE_CACHE", "~/.cache/kubetune")).expanduser()


def gguf_cache_dir(gguf: Path) -> Path:
    """Where the checkpoint converted from `gguf` lives; a changed file gets a new entry."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_root() / "models" / f"{gguf.stem}-{stat.st_size}-{key}"


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantizes `gguf` into a checkpoint at `target`, atomically (a concurrent run may race)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s into a checkpoint at %s (once; later runs reuse it)", gguf, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except ValueError as e:  # an architecture or tokenizer transformers cannot read from GGUF
        raise ModelSourceError(f"{gguf}: cannot load this GGUF file: {e}") from e
    # The weights are plain float tensors now. Drop the GGUF quantizer: save_pretrained refuses
    # a model whose quantizer is not serializable, and the saved config must not point at GGUF
    # (transformers before 5.17 sets neither).
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    model.hf_quantizer = None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():
                raise
            log.info("another process converted %s first; using its copy", gguf)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def checkpoint_dir(path: str) -> Path:
    """A checkpoint directory for model.path, converting a GGUF file on first use."""
    location = locate_model(path)
    if location.is_dir():
        return location
    target = gguf_cache_dir(location)
    if target.is_dir():
        log.info("using cached checkpoint %s for %s", target, location)
    else:
        convert_gguf(location, target)
    return target


def bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def torch_dtype(dtype: Dtype) -> torch.dtype:
    if dtype is Dtype.auto:
        return torch.bfloat16 if bf16_supported() else torch.float32
    return getattr(torch, dtype.value)


def load_model(source: ModelSource, **options):
    """(model, tokenizer, checkpoint directory) for the base model; the tokenizer always pads.
    `options` go to from_pretrained (e.g. a method's quantization_config)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = checkpoint_dir(source.path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
        # use_kernels=False: transformers would otherwise swap layers for kernels fetched from the
        # Hub on CUDA (code no one reviewed, and offline an error at the first train()).
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch_dtype(source.dtype), use_kernels=False, **options)
    except (OSError, ValueError) as e:  # unreadable or incomplete checkpoint
        raise ModelSourceError(f"model.path {source.path!r}: cannot load a model from {directory}: {e}") from e
    if tokenizer.eos_token_id is None:
        raise ModelSourceError(f"model.path {source.path!r}: the tokenizer has no end-of-sequence token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out, so any id will do
    return model, tokenizer, directory
