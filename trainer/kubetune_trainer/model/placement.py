"""Where a model for inference goes: the pod's devices and their memory, whether a model's
estimate (kubetune_trainer.model.memory) fits them, and the device map that spreads it across
several GPUs of one process (sharded evaluation: each layer on one GPU, the batch passing
through them in turn).

The device query is a plain function returning Devices, so the check phase can be given any
list of devices (tests, a dry run). On CUDA the devices are the visible GPUs and their total
memory; on CPU the one "device" is the pod's memory limit (its cgroup), and with no limit
nothing is compared.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kubetune_api.errors import ConfigError
from kubetune_trainer.model.memory import MemoryEstimate, gib

log = logging.getLogger(__name__)

# Share of each device's memory the estimate may not use: the CUDA context, the allocator's
# fragmentation and the activations of a forward pass (or, on CPU, the Python process itself).
HEADROOM = 0.10
CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
NO_CGROUP_LIMIT = 1 << 60  # cgroup v1 writes a number near 2**63 for "unlimited"


@dataclass(frozen=True)
class Devices:
    kind: str  # "cuda" or "cpu"
    totals: tuple[int, ...]  # bytes per GPU; on CPU the pod's memory limit, or () without one
    bf16: bool = False  # whether dtype auto loads bfloat16 (as kubetune_trainer.model.loading does)

    def usable(self) -> tuple[int, ...]:
        return tuple(int(total * (1 - HEADROOM)) for total in self.totals)

    def describe(self) -> str:
        if self.kind == "cpu":
            return f"the pod's memory limit of {gib(self.totals[0])}"
        count = len(self.totals)
        sizes = (f"{count} x {gib(self.totals[0])}" if len(set(self.totals)) == 1
                 else " + ".join(gib(t) for t in self.totals))
        return f"the pod's {count} GPU{'s hold' if count > 1 else ' holds'} {sizes} = {gib(sum(self.totals))}"


def cgroup_memory_limit() -> int | None:
    """The pod's memory limit in bytes (cgroup v2, else v1); None when unlimited or unknown."""
    for path in CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < NO_CGROUP_LIMIT:
            return int(text)
        return None
    return None


def visible_devices() -> Devices:
    """The devices this process evaluates on (torch imported here: the check phase calls this
    only when it has a model to size)."""
    import torch

    if torch.cuda.is_available():
        totals = tuple(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count()))
        return Devices("cuda", totals, torch.cuda.is_bf16_supported())
    limit = cgroup_memory_limit()
    return Devices("cpu", (limit,) if limit else ())


DeviceQuery = Callable[[], Devices]


def resolved_dtype(dtype: str, devices: Devices) -> str:
    """A job's dtype as it loads on these devices: auto is bfloat16 where supported, else float32."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if devices.kind == "cuda" and devices.bf16 else "float32"


def check_fits(estimate: MemoryEstimate, devices: Devices, field: str) -> None:
    """ConfigError, with the numbers, when the estimate exceeds the devices' usable memory."""
    if not devices.totals:
        return  # CPU without a memory limit: nothing to compare with
    usable = sum(devices.usable())
    if estimate.total <= usable:
        if devices.kind == "cuda" and len(devices.totals) > 1 and estimate.total <= devices.usable()[0]:
            log.info("%s: %s fits one GPU; it is spread across all %d anyway (room for larger batches)",
                     field, gib(estimate.total), len(devices.totals))
        return
    where = f"{devices.describe()}, {gib(usable)} usable ({HEADROOM:.0%} kept for the runtime and activations)"
    if devices.kind == "cpu":
        wanted = math.ceil(estimate.total / (1 - HEADROOM) / 1024**3)
        advice = f"raise resources.memory to at least {wanted}Gi, or evaluate on GPUs"
    else:
        gpus = math.ceil(estimate.total / min(devices.usable()))
        advice = (f"ask for resources.gpu: {gpus} or more of these GPUs" if gpus <= 64 else "use larger GPUs")
    raise ConfigError(f"{field}: the model needs {estimate.describe()} but {where}; {advice}, a smaller dtype, "
                      "or a smaller batch or input length (generation.batchSize, generation.maxInputLength, "
                      "lmEval.batchSize)")


def max_memory(devices: Devices, runtime_bytes: int) -> dict[int, int]:
    """Bytes of weights each GPU may take: its usable memory less an even share of the KV cache
    and logits (which follow the layers across the GPUs)."""
    share = runtime_bytes // max(1, len(devices.totals))
    return {index: max(0, usable - share) for index, usable in enumerate(devices.usable())}


def device_map(directory: Path, dtype, budgets: dict[int, int]) -> dict[str, int]:
    """{module name: GPU} for the checkpoint in `directory`: its layers balanced over the GPUs
    within `budgets` (accelerate's planner on an empty, meta-device copy of the model; whole
    decoder layers per GPU). ConfigError when some module would not fit on any GPU."""
    from accelerate import init_empty_weights, infer_auto_device_map
    from accelerate.utils import get_balanced_memory
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(directory)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    no_split = list(getattr(model, "_no_split_modules", None) or [])
    balanced = get_balanced_memory(model, max_memory=budgets, no_split_module_classes=no_split, dtype=dtype,
                                   low_zero=False)
    plan = infer_auto_device_map(model, max_memory=balanced, no_split_module_classes=no_split, dtype=dtype)
    offloaded = sorted(name for name, where in plan.items() if not isinstance(where, int))
    if offloaded:
        raise ConfigError(f"{directory}: does not fit the pod's {len(budgets)} GPUs "
                          f"({', '.join(gib(b) for b in budgets.values())} for weights); left over: {', '.join(offloaded[:5])}")
    return plan


def load_options(directory: Path, dtype, devices: Devices, runtime_bytes: int) -> dict:
    """from_pretrained keywords placing the model on `devices`: a device map across the GPUs when
    there are several, none otherwise (the caller moves the model to its one device)."""
    if devices.kind != "cuda" or len(devices.totals) < 2:
        return {}
    plan = device_map(directory, dtype, max_memory(devices, runtime_bytes))
    used = sorted(set(plan.values()))
    log.info("%s: sharded across GPUs %s (%d modules)", directory, ", ".join(map(str, used)), len(plan))
    return {"device_map": plan}


def input_device(model):
    """Where a model's inputs go: its input embedding's device (the first GPU of a sharded model);
    model.device for a wrapper without one."""
    embeddings = getattr(model, "get_input_embeddings", None)
    return embeddings().weight.device if embeddings is not None else model.device
