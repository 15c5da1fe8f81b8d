"""Fully sharded data parallel training (training.fsdp) with torch's FSDP2 (`fully_shard`).

Every decoder layer is one FSDP unit and the root (embeddings, final norm, output head) another:
each rank keeps 1/N of every parameter, its gradient and its AdamW state, all-gathers a layer's
parameters just for that layer's forward and backward, and reduce-scatters its gradients. On
GPU the gathered parameters are bf16 and gradients are reduced in fp32 (the shards stay fp32:
the run loads the model in fp32 when model.dtype is auto); on CPU everything is fp32.

Unlike DDP, where every process takes whole batches, a batch (training.batchSize rows) is split
among the ranks, and each rank scales its summed loss by the batch's completion-token count
over all ranks: the reduced gradient is exactly the one-process gradient of the same batch, so
steps and losses do not depend on the number of ranks (which is what lets a sharded checkpoint
resume on another rank count). Every rank must run the same forwards (each is a collective), so
a rank with no row of a short batch runs one row at weight 0.

The output head stays in the root unit: the completion loss calls it outside the model's
forward, a different number of times on each rank, which a unit of its own (one all-gather per
call) would deadlock. The root keeps its parameters gathered from forward to backward.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.tensor import DTensor

from kubetune_api.errors import ConfigError
from kubetune_api.training import TrainingSpec
from kubetune_trainer.training.loss import transformers_model

log = logging.getLogger(__name__)


def world() -> tuple[int, int]:
    """(rank, number of ranks): (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _decoder_layers(model) -> list[nn.Module]:
    """The model's repeated blocks: the classes transformers never splits across devices."""
    inner = transformers_model(model)
    names = set(getattr(inner, "_no_split_modules", None) or ())
    layers = [m for m in inner.modules() if type(m).__name__ in names]
    if not layers:
        raise ConfigError(f"training.fsdp: {type(inner).__name__} names no decoder layer class "
                          "(transformers' _no_split_modules), so it cannot be wrapped layer by layer")
    return layers


def mixed_precision(device: torch.device):
    """bf16 compute with fp32 gradient reduction on a GPU that has bf16; fp32 elsewhere."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def shard_model(model, spec: TrainingSpec, device: torch.device):
    """`model` sharded across the process group, in place (FSDP2 swaps its class); unchanged with
    one process, where there is nothing to shard."""
    if is_sharded(model):
        return model
    rank, size = world()
    if size == 1:
        log.info("training.fsdp: one process, nothing to shard")
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (size,))
    options = {"mesh": mesh, "mp_policy": mixed_precision(device)}
    layers = _decoder_layers(model)
    for layer in layers:
        fully_shard(layer, reshard_after_forward=spec.fsdp.reshard_after_forward, **options)
    fully_shard(model, **options)
    log.info("training.fsdp: %d decoder layers and the root sharded across %d ranks", len(layers), size)
    return model


def rank_rows(rows: list[int], rank: int, size: int) -> tuple[list[int], float]:
    """This rank's rows of a batch and their weight: 1, or 0 for a stand-in row when the batch
    has fewer rows than ranks (the forward must still run, its loss must not count)."""
    mine = rows[rank::size]
    return (mine, 1.0) if mine else (rows[:1], 0.0)


def rank_batches(n_items: int, batch_size: int, sharded: bool) -> list[tuple[list[int], float]]:
    """Evaluation's (rows, weight) for this process: every rank a share of each batch under FSDP
    (the same number of forwards everywhere), else every N-th row as DDP processes take them."""
    rank, size = world()
    if sharded:
        return [rank_rows(list(range(start, min(start + batch_size, n_items))), rank, size)
                for start in range(0, n_items, batch_size)]
    mine = list(range(rank, n_items, size))
    return [(mine[start:start + batch_size], 1.0) for start in range(0, len(mine), batch_size)]


def batch_sums(loss_sum: torch.Tensor, n_targets: torch.Tensor, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss, completion tokens) of the whole batch over all ranks, detached."""
    sums = torch.stack([loss_sum.detach().float(), n_targets.float()]) * weight
    if world()[1] > 1:
        dist.all_reduce(sums)
    return sums[0], sums[1]


def objective(loss_sum: torch.Tensor, weight: float, total_targets: torch.Tensor) -> torch.Tensor:
    """This rank's part of the batch's mean loss, times the ranks: FSDP averages the gradients it
    reduces, so their mean is the gradient of the mean over the whole batch."""
    return loss_sum * (weight * world()[1] / total_targets.clamp(min=1))


def _local_bytes(tensor: torch.Tensor) -> int:
    local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
    return local.numel() * local.element_size()


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of parameters, gradients and optimizer state this rank holds (its shards under FSDP)."""
    params = list(model.parameters())
    total = sum(_local_bytes(p) for p in params) + sum(_local_bytes(p.grad) for p in params if p.grad is not None)
    for state in optimizer.state.values():
        total += sum(_local_bytes(v) for v in state.values() if isinstance(v, torch.Tensor))
    return total


def unsharded_copy(model, rebuild: Callable[[], nn.Module], is_main: bool):
    """On the main process, a plain (unsharded, CPU) model with the trained weights, for
    predictions and the usual save; None elsewhere. Called on every process: the weights are
    gathered to the main one."""
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not is_main:
        return None
    plain = rebuild()
    plain.load_state_dict(full)  # strict: the same model and method, so every key matches
    return plain


def model_source(source, spec: TrainingSpec):
    """The model to load: in fp32 under FSDP on a GPU when model.dtype is auto, so the shards are
    fp32 master weights and the mixed-precision policy computes in bf16 (auto would load bf16)."""
    from kubetune_api.training import Dtype

    if spec.fsdp.enabled and source.dtype is Dtype.auto and torch.cuda.is_available():
        return source.model_copy(update={"dtype": Dtype.float32})
    return source
