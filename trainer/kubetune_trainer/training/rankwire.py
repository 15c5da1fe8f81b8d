"""Values between the processes of a run as tensors, never as pickles.

accelerate's gather_object and broadcast_object_list pickle what they send, and unpickling runs
whatever code the sender chose: one process that joined the group without belonging there (see
rendezvous.py) would run code in every other. Here bytes travel as uint8 tensors (their lengths
first); JSON travels as its UTF-8 bytes, and state (dicts of tensors) as a JSON skeleton plus
safetensors bytes (tensortree.py). Without a process group (one process), values pass through
the same encoding, so one process behaves like many.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import safetensors.torch
import torch
import torch.distributed as dist

from kubetune_trainer.training import tensortree


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _tensor(data: bytes, device) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8).copy()).to(device)


def _bytes(tensor: torch.Tensor) -> bytes:
    return tensor.cpu().numpy().tobytes()


def broadcast_bytes(data: bytes | None, device, src: int = 0) -> bytes:
    """Process `src`'s `data`, on every process (the others' `data` is ignored)."""
    if not _distributed():
        return data
    mine = dist.get_rank() == src
    length = torch.tensor([len(data) if mine else 0], dtype=torch.int64, device=device)
    dist.broadcast(length, src)
    buffer = _tensor(data, device) if mine else torch.empty(int(length.item()), dtype=torch.uint8, device=device)
    if buffer.numel():
        dist.broadcast(buffer, src)
    return data if mine else _bytes(buffer)


def all_gather_bytes(data: bytes, device) -> list[bytes]:
    """Every process's `data`, by rank, on every process."""
    if not _distributed():
        return [data]
    world = dist.get_world_size()
    lengths = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
    dist.all_gather(lengths, torch.tensor([len(data)], dtype=torch.int64, device=device))
    sizes = [int(n.item()) for n in lengths]
    padded = torch.zeros(max(max(sizes), 1), dtype=torch.uint8, device=device)  # all_gather wants one shape
    padded[:len(data)] = _tensor(data, device)
    buffers = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(buffers, padded)
    return [_bytes(buffer[:size]) for buffer, size in zip(buffers, sizes)]


def broadcast_json(value: Any, device, src: int = 0) -> Any:
    """Process `src`'s JSON-able `value`, on every process."""
    mine = not _distributed() or dist.get_rank() == src
    return json.loads(broadcast_bytes(json.dumps(value).encode() if mine else None, device, src))


def all_gather_json(value: Any, device) -> list:
    """Every process's JSON-able `value`, by rank, on every process."""
    return [json.loads(data) for data in all_gather_bytes(json.dumps(value).encode(), device)]


def _pack(tree: Any) -> bytes:
    skeleton, tensors = tensortree.split(tree)
    return safetensors.torch.save(tensors, metadata={"skeleton": json.dumps(skeleton)})


def _unpack(data: bytes) -> Any:
    return tensortree.join(json.loads(tensortree.metadata(data)["skeleton"]), safetensors.torch.load(data))


def broadcast_state(tree: Any, device, src: int = 0) -> Any:
    """Process `src`'s state (dicts, lists, tuples of tensors and JSON values), on every process."""
    mine = not _distributed() or dist.get_rank() == src
    return _unpack(broadcast_bytes(_pack(tree) if mine else None, device, src))


def all_gather_state(tree: Any, device) -> list:
    """Every process's state, by rank, on every process."""
    return [_unpack(data) for data in all_gather_bytes(_pack(tree), device)]
