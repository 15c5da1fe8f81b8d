"""training.fsdp: fully sharded data parallel training (torch's FSDP2), and what it refuses.

Under FSDP every rank holds 1/N of the parameters, gradients and optimizer state, and a
batch's rows are split among the ranks (batchSize is the global batch), so a run takes the
same steps and losses on any number of ranks and resumes on a different one.
"""
from __future__ import annotations

from typing import Any

from pydantic import Field

from kubetune_api.base import ApiModel
from kubetune_api.catalog import Method

# Methods whose training FSDP shards exactly (tests/trainer/training/test_fsdp.py); qlora's 4-bit
# bitsandbytes weights, soft prompts, prefixes and scales are not sharded here.
FSDP_METHODS = (Method.full, Method.lora)


class FsdpSpec(ApiModel):
    enabled: bool = Field(
        False,
        description="Shard parameters, gradients and optimizer state across all ranks (resources.gpu x resources.nodes; torch FSDP2, one unit per decoder layer plus the root), with bf16 compute and fp32 gradient reduction on GPU. batchSize is then the rows of one forward pass over all ranks, split among them, so steps and losses do not depend on the rank count; checkpoints are sharded (torch.distributed.checkpoint) and resume on any rank count. Methods full and lora.")
    reshard_after_forward: bool = Field(
        True,
        description="Free each layer's gathered parameters after its forward pass and gather them again for the backward pass (least memory); false keeps them until the backward pass (one all-gather less per layer and step, more memory).")


def check_fsdp(method: Method, training: Any) -> None:
    """TrainingConfig's check: the combinations FSDP cannot train are refused by name."""
    fsdp = training.fsdp
    if not fsdp.enabled:
        if fsdp != FsdpSpec():
            raise ValueError("training.fsdp: settings given but training.fsdp.enabled is false")
        return
    if method not in FSDP_METHODS:
        raise ValueError(f"training.fsdp.enabled: method {method.value} cannot train under FSDP "
                         f"(methods {', '.join(m.value for m in FSDP_METHODS)} can)")
    if training.drift_penalty:
        raise ValueError("training.driftPenalty: not available with training.fsdp.enabled "
                         "(the penalty's anchor would be a full copy of the weights on every rank)")


def fsdp_batch_covers_ranks(spec: Any) -> Any:
    """FineTuneJobSpec's check (an after-validator): under FSDP every rank takes rows of each batch."""
    if spec.training.fsdp.enabled:
        gpus = spec.resources.gpu if spec.resources.gpu is not None else 1
        ranks = max(gpus, 1) * spec.resources.nodes
        if spec.training.batch_size < ranks:
            raise ValueError(f"training.batchSize {spec.training.batch_size} is less than the {ranks} ranks "
                             "(resources.gpu x resources.nodes): under training.fsdp each batch is split among the ranks")
    return spec
