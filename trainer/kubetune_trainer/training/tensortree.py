"""State (nested dicts, lists and tuples of tensors and JSON values, as an optimizer's
state_dict) as a JSON skeleton plus named tensors: what safetensors can carry, so state moves
between processes without pickles. Dict keys keep their type (an optimizer's state is keyed by
int), tuples stay tuples; anything else is refused rather than guessed.
"""
from __future__ import annotations

import json
import struct
from typing import Any

import torch

_SCALARS = (str, int, float, bool, type(None))


def split(tree: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """(skeleton, tensors): the skeleton names each tensor by its key in `tensors`."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, torch.Tensor):
            key = str(len(tensors))
            tensors[key] = node.detach().cpu().contiguous().clone()  # safetensors refuses shared storage
            return {"tensor": key}
        if isinstance(node, dict):
            return {"dict": [[walk(k), walk(v)] for k, v in node.items()]}
        if isinstance(node, (list, tuple)):
            return {"tuple" if isinstance(node, tuple) else "list": [walk(v) for v in node]}
        if isinstance(node, _SCALARS):
            return node
        raise TypeError(f"cannot send a {type(node).__name__} between processes (not a tensor or JSON value)")

    return walk(tree), tensors


def join(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The state `split` took apart."""
    if not isinstance(skeleton, dict):
        return skeleton
    ((kind, value),) = skeleton.items()
    if kind == "tensor":
        return tensors[value]
    if kind == "dict":
        return {join(k, tensors): join(v, tensors) for k, v in value}
    if kind not in ("list", "tuple"):
        raise ValueError(f"not a state skeleton: {kind!r}")
    items = [join(v, tensors) for v in value]
    return tuple(items) if kind == "tuple" else items


def metadata(data: bytes) -> dict[str, str]:
    """The metadata of safetensors bytes (safetensors.torch.load returns only the tensors):
    an 8-byte little-endian header length, then the JSON header."""
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]).get("__metadata__") or {}
