"""Memory-lean training forward for Llama-style blocks: the same math, fewer saved activations.

Autograd keeps every intermediate a backward formula might read. For a Llama decoder layer
most of them are cheap to recompute from a few others, and a frozen linear layer needs no
saved input at all, yet keeps one. Three fused autograd functions save only what their
backward cannot rebuild cheaply:

- the gated MLP (down(silu(gate(x)) * up(x))) keeps gate(x) and up(x), plus x only when a
  projection trains; the product and the activation are rebuilt in the backward pass
  (HF keeps gate, silu(gate), up and the product: 4 tensors of the intermediate size);
- RMSNorm keeps its input and one reciprocal norm per token (HF also keeps the normalized
  copy when the weight trains), and the ops after it that keep its output (the projections)
  get it rebuilt from that input in the backward pass instead (NormOutputs);
- a PEFT LoRA linear keeps its input once (shared by q, k and v), the dropout mask as
  bytes and the rank-r projection (PEFT keeps a float dropout copy and a float noise
  tensor per adapted module), drawing the mask with faster uniform draws.

`lean_training(model)` swaps these forwards in on the modules that match exactly (known
classes, plain nn.Linear projections, one active vanilla LoRA adapter) and restores them on
exit; anything else keeps its own forward. Outside autograd (evaluation, generation) the
original forwards run. Given the same dropout masks, losses and gradients equal the original
forwards' (tests/trainer/training/test_lean.py).

A lean forward is an entry `forward` in the module's own __dict__, which shadows the class's.
Libraries set and clear that entry too: with the `kernels` package (a dependency of
transformers from 5.25, which then kernelizes every model it loads) each train()/eval() switch
re-kernelizes the model, and on a device without a kernel that pops `forward` from the
__dict__ of every layer with a hub kernel name (the RMSNorms), or puts a kernel's there. So the
block records what each module's __dict__ held on entry (a `forward`, or none) and puts exactly
that back on exit, whatever happened in between; and before each forward of `model` in the
block, a module whose lean forward was replaced gets it again, over the forward it has now.
"""
from __future__ import annotations

import logging
import weakref
from collections import Counter
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

# transformers classes whose forward is exactly Llama's (checked by tests/trainer/training/test_lean.py).
NORM_CLASSES = {"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"}
MLP_CLASSES = {"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP"}
SILU_CLASSES = {"SiLU", "SiLUActivation"}  # torch's and transformers' F.silu


class _Autocast:
    """The autocast state of the forward, re-entered in the backward (as torch.amp.custom_bwd does)."""

    def __init__(self, device_type: str):
        self.device_type = device_type
        self.enabled = torch.is_autocast_enabled(device_type)
        self.dtype = torch.get_autocast_dtype(device_type)

    def __call__(self):
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1])


def _weight_grad(grad_out: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """dL/dW of y = x W^T over all leading dimensions."""
    return _flat(grad_out).t().matmul(_flat(inputs))


def _bias_grad(grad_out: torch.Tensor) -> torch.Tensor:
    return _flat(grad_out).sum(0)


class GatedMLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gate_w, gate_b, up_w, up_b, down_w, down_b):
        gate, up = F.linear(x, gate_w, gate_b), F.linear(x, up_w, up_b)
        y = F.linear(F.silu(gate) * up, down_w, down_b)
        projections_train = gate_w.requires_grad or up_w.requires_grad
        ctx.save_for_backward(x if projections_train else None, gate, up, gate_w, up_w, down_w)
        ctx.autocast = _Autocast(x.device.type)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, gate, up, gate_w, up_w, down_w = ctx.saved_tensors
        need = ctx.needs_input_grad
        with ctx.autocast():
            sig = torch.sigmoid(gate)
            act = gate * sig
            d_down_w = _weight_grad(dy, act * up) if need[5] else None
            d_down_b = _bias_grad(dy) if need[6] else None
            dh = dy.matmul(down_w.to(dy.dtype))
            d_up = (dh * act).to(up.dtype)
            d_gate = (dh * up * sig * (1 + gate * (1 - sig))).to(gate.dtype)
            del sig, act, dh
            dx = (d_gate.matmul(gate_w.to(d_gate.dtype)) + d_up.matmul(up_w.to(d_up.dtype))) if need[0] else None
            d_gate_w = _weight_grad(d_gate, x) if need[1] else None
            d_up_w = _weight_grad(d_up, x) if need[3] else None
            d_gate_b = _bias_grad(d_gate) if need[2] else None
            d_up_b = _bias_grad(d_up) if need[4] else None
        return dx, d_gate_w, d_gate_b, d_up_w, d_up_b, d_down_w, d_down_b


def _rstd(x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)


def _normalized(x: torch.Tensor, rstd: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return weight * (x.float() * rstd).to(x.dtype)


class RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        rstd = _rstd(x, eps)
        ctx.save_for_backward(x, weight, rstd)
        return _normalized(x, rstd, weight)

    @staticmethod
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        normed = x.float() * rstd
        d_weight = _bias_grad(dy * normed.to(x.dtype)) if ctx.needs_input_grad[1] else None
        dn = (dy * weight).float()
        dx = rstd * (dn - normed * (dn * normed).mean(-1, keepdim=True))
        return dx.to(x.dtype), d_weight, None


def keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout's keep mask, as bytes: each element kept with probability 1 - p. Uniform draws
    are faster on CPU than the float bernoulli_ that nn.Dropout uses (the draws differ)."""
    return torch.rand_like(x) >= p


class LoraLinear(torch.autograd.Function):
    """base(x) + B(A(dropout(x))) * scaling with a frozen base layer."""

    @staticmethod
    def forward(ctx, x, base_w, base_b, lora_a, lora_b, scaling, p):
        y = F.linear(x, base_w, base_b)
        keep = keep_mask(x, p) if p > 0 else None
        dropped = x * keep / (1 - p) if keep is not None else x
        z = F.linear(dropped, lora_a)
        del dropped
        y = y + F.linear(z, lora_b) * scaling
        ctx.save_for_backward(x, keep, z, base_w, lora_a, lora_b)
        ctx.scaling, ctx.p, ctx.autocast = scaling, p, _Autocast(x.device.type)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, keep, z, base_w, lora_a, lora_b = ctx.saved_tensors
        need, p = ctx.needs_input_grad, ctx.p
        with ctx.autocast():
            d_lora = dy * ctx.scaling
            d_b = _weight_grad(d_lora, z) if need[4] else None
            dz = d_lora.matmul(lora_b.to(d_lora.dtype))
            del d_lora
            dropped = x * keep / (1 - p) if keep is not None else x
            d_a = _weight_grad(dz, dropped) if need[3] else None
            del dropped
            dx = None
            if need[0]:
                d_dropped = dz.matmul(lora_a.to(dz.dtype))
                if keep is not None:
                    d_dropped = d_dropped * keep / (1 - p)
                dx = dy.matmul(base_w.to(dy.dtype)) + d_dropped
            d_base_b = _bias_grad(dy) if need[2] else None
        return dx, None, d_base_b, d_a, d_b, None, None


class _Rebuild:
    """A norm's output, recomputed from the norm's input on first use and shared by every view."""

    def __init__(self, x: torch.Tensor, weight: torch.Tensor, eps: float):
        self.x, self.weight, self.eps, self.output = x, weight, eps, None

    def view(self, size, stride, offset) -> torch.Tensor:
        if self.output is None:
            self.output = _normalized(self.x, _rstd(self.x, self.eps), self.weight)
        return self.output.as_strided(size, stride, offset)


class NormOutputs:
    """Saved-tensor hooks: a norm's output that an op after it keeps for the backward pass
    (q/k/v, gate/up and LoRA projections all keep their input) is rebuilt from the norm's
    input, which the norm keeps anyway; the same ops on the same input give the same bits.
    Outputs are tracked by storage, weakly, while their tensor lives."""

    def __init__(self):
        self.live: dict[int, tuple] = {}  # storage address -> (output ref, _Rebuild)

    def add(self, output: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, eps: float) -> None:
        if not output.is_contiguous() or not x.is_contiguous():
            return
        key = output.untyped_storage().data_ptr()

        def forget(ref, key=key):
            if self.live.get(key, (None,))[0] is ref:
                del self.live[key]
        self.live[key] = (weakref.ref(output, forget), _Rebuild(x, weight, eps))

    def pack(self, t: torch.Tensor):
        if t.layout != torch.strided:  # sparse tensors have no storage to look up
            return t
        output_ref, rebuild = self.live.get(t.untyped_storage().data_ptr(), (None, None))
        output = output_ref() if output_ref is not None else None
        if output is None or t.dtype != output.dtype:
            return t
        return rebuild, t.size(), t.stride(), t.storage_offset()

    @staticmethod
    def unpack(packed):
        if isinstance(packed, tuple):
            rebuild, size, stride, offset = packed
            return rebuild.view(size, stride, offset)
        return packed


def _plain_linear(module) -> bool:
    return type(module) is nn.Linear


def _mlp_forward(mlp, original):
    def forward(x):
        if not torch.is_grad_enabled():
            return original(x)
        g, u, d = mlp.gate_proj, mlp.up_proj, mlp.down_proj
        return GatedMLP.apply(x, g.weight, g.bias, u.weight, u.bias, d.weight, d.bias)
    return forward


def _norm_forward(norm, original, outputs: NormOutputs):
    def forward(x):
        if not torch.is_grad_enabled():
            return original(x)
        y = RMSNorm.apply(x, norm.weight, norm.variance_epsilon)
        outputs.add(y, x, norm.weight, norm.variance_epsilon)
        return y
    return forward


def _lora_adapter(layer, x):
    """The single active vanilla adapter of a PEFT LoRA layer whose fused form is exact, or None."""
    if layer.disable_adapters or layer.merged or layer.base_layer.weight.requires_grad:
        return None
    active = [a for a in layer.active_adapters if a in layer.lora_A]
    if len(active) != 1 or active[0] in getattr(layer, "lora_variant", {}):
        return None
    name = active[0]
    lora_a, lora_b, dropout = layer.lora_A[name], layer.lora_B[name], layer.lora_dropout[name]
    if not (_plain_linear(lora_a) and _plain_linear(lora_b) and lora_a.bias is None and lora_b.bias is None):
        return None
    if not isinstance(dropout, (nn.Dropout, nn.Identity)) or x.dtype != lora_a.weight.dtype:
        return None
    p = dropout.p if isinstance(dropout, nn.Dropout) and dropout.training else 0.0
    return lora_a.weight, lora_b.weight, layer.scaling[name], p


def _lora_forward(layer, original):
    def forward(x, *args, **kwargs):
        adapter = _lora_adapter(layer, x) if torch.is_grad_enabled() and not args and not kwargs else None
        if adapter is None:
            return original(x, *args, **kwargs)
        base = layer.base_layer
        return LoraLinear.apply(x, base.weight, base.bias, *adapter)
    return forward


def _lean_forward(module):
    """(kind, forward factory) for a module with a lean form, else None."""
    name = type(module).__name__
    if name in NORM_CLASSES and hasattr(module, "variance_epsilon"):
        return "norm", _norm_forward
    if (name in MLP_CLASSES and type(getattr(module, "act_fn", None)).__name__ in SILU_CLASSES
            and all(_plain_linear(getattr(module, p, None)) for p in ("gate_proj", "up_proj", "down_proj"))):
        return "mlp", _mlp_forward
    if name == "Linear" and type(module).__module__.startswith("peft.tuners.lora") and _plain_linear(module.base_layer):
        return "lora", _lora_forward
    return None


_ABSENT = object()  # no `forward` in a module's own __dict__


class _Patch:
    """A module's lean forward, and the `forward` its __dict__ held when the block began."""

    def __init__(self, module, make):
        self.module, self.make = module, make
        self.found = module.__dict__.get("forward", _ABSENT)
        self.lean = None

    def install(self) -> bool:
        """Puts the lean forward in the module's __dict__, over the forward the module has now
        (which serves outside autograd); False where an instance entry cannot shadow the
        class's `forward` (a data descriptor), which then stays."""
        module = self.module
        self.lean = self.make(module.forward)
        module.__dict__["forward"] = self.lean
        if module.forward is self.lean:
            return True
        self.restore()
        return False

    def installed(self) -> bool:
        return self.module.__dict__.get("forward") is self.lean

    def restore(self) -> None:
        if self.found is _ABSENT:
            self.module.__dict__.pop("forward", None)
        else:
            self.module.__dict__["forward"] = self.found


@contextmanager
def lean_training(model):
    """Within the block, matching modules of `model` train with the lean forwards above."""
    patches, kinds, outputs = [], Counter(), NormOutputs()
    for module in model.modules():
        lean = _lean_forward(module)
        if lean is None:
            continue
        kind, factory = lean
        make = ((lambda original, m=module, f=factory: f(m, original, outputs)) if kind == "norm"
                else (lambda original, m=module, f=factory: f(m, original)))
        patch = _Patch(module, make)
        if patch.install():
            patches.append(patch)
            kinds[kind] += 1
    if kinds:
        log.info("memory-lean training forward: %s", ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))

    def reinstall(_model, _args):
        lost = [p for p in patches if not p.installed()]
        for patch in lost:
            patch.install()
        if lost:
            log.debug("lean forward put back on %d modules whose forward was replaced", len(lost))

    hook = model.register_forward_pre_hook(reinstall) if patches else None
    try:
        with torch.autograd.graph.saved_tensors_hooks(outputs.pack, outputs.unpack):
            yield kinds
    finally:
        if hook is not None:
            hook.remove()
        for patch in patches:
            patch.restore()
