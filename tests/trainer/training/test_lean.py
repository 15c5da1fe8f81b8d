"""The memory-lean training forward (kubetune_trainer.training.lean) computes the same loss and the same
gradients as the models' own forwards, for every architecture it claims, for full, LoRA (with
dropout) and selective tuning, while saving far fewer activation bytes; and it leaves the
model exactly as it found it."""
from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from kubetune_trainer.training import lean
from kubetune_trainer.training.lean import lean_training

VOCAB = 97


def tiny(architecture: str, **overrides):
    import transformers

    config_class = getattr(transformers, f"{architecture}Config")
    model_class = getattr(transformers, f"{architecture}ForCausalLM")
    config = config_class(vocab_size=VOCAB, hidden_size=32, intermediate_size=80, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          tie_word_embeddings=False, **overrides)
    torch.manual_seed(0)
    return model_class(config)


def with_lora(model, dropout: float, targets=("q_proj", "k_proj", "v_proj", "o_proj")):
    from peft import LoraConfig, TaskType, get_peft_model

    model = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=8, lora_dropout=dropout,
                                             target_modules=list(targets)))
    for name, p in model.named_parameters():  # B starts at zero: give A's gradient something to flow through
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    return model


def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, VOCAB, (3, 20), generator=g)


def loss_and_grads(model, lean: bool, seed: int = 7):
    """Loss and gradients of one training step, dropout seeded the same on both sides."""
    model.train()
    model.zero_grad(set_to_none=True)
    ids = inputs()
    torch.manual_seed(seed)
    if lean:
        with lean_training(model):
            loss = model(input_ids=ids, labels=ids).loss
    else:
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def assert_same_training(model):
    loss, grads = loss_and_grads(model, lean=False)
    lean_loss, lean_grads = loss_and_grads(model, lean=True)
    torch.testing.assert_close(lean_loss, loss, rtol=1e-6, atol=1e-6)
    assert lean_grads.keys() == grads.keys()
    for name in grads:
        torch.testing.assert_close(lean_grads[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)


def saved_bytes(model, use_lean: bool, monkeypatch) -> int:
    """Bytes of tensors autograd keeps for the backward pass (parameters not counted). Under
    lean_training its own saved-tensor hooks see every saved tensor first: what they keep
    as a tensor counts, a norm output they rebuild later does not."""
    seen = {p.untyped_storage().data_ptr() for p in model.parameters()}
    total = 0

    def count(t):
        nonlocal total
        if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total += t.untyped_storage().nbytes()
        return t

    model.train()
    if use_lean:
        pack = lean.NormOutputs.pack
        monkeypatch.setattr(lean.NormOutputs, "pack", lambda self, t: count(pack(self, t)))
        with lean_training(model):
            model(input_ids=inputs())
    else:
        with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
            model(input_ids=inputs())
    return total


@pytest.mark.parametrize("architecture", ["Llama", "Mistral", "Qwen2", "Qwen3"])
def test_full_fine_tuning_gradients_match_and_every_block_is_lean(architecture):
    model = tiny(architecture)
    with lean_training(model) as kinds:
        pass
    norms_per_layer = 4 if architecture == "Qwen3" else 2  # Qwen3 also norms q and k
    assert kinds == {"mlp": 2, "norm": 2 * norms_per_layer + 1}
    assert_same_training(model)


def test_mlp_biases_get_their_gradients():
    assert_same_training(tiny("Llama", mlp_bias=True))


def test_lora_gradients_match_without_dropout():
    model = with_lora(tiny("Llama"), 0.0)
    with lean_training(model) as kinds:
        pass
    assert kinds == {"lora": 8, "mlp": 2, "norm": 5}
    assert_same_training(model)


def test_lora_gradients_match_with_dropout_given_the_same_masks(monkeypatch):
    p = 0.3
    model = with_lora(tiny("Llama"), p)
    masks = []
    draw = lean.keep_mask
    monkeypatch.setattr(lean, "keep_mask", lambda x, p: masks.append(draw(x, p)) or masks[-1])
    lean_loss, lean_grads = loss_and_grads(model, lean=True)
    dropped = sum(int((~m).sum()) for m in masks) / sum(m.numel() for m in masks)
    assert len(masks) == 8 and abs(dropped - p) < 0.05

    replay = iter(masks)

    class Replay(torch.nn.Module):  # PEFT's dropout, applying the lean run's masks in the same order
        def forward(self, x):
            return x * next(replay) / (1 - p)

    for module in model.modules():
        if hasattr(module, "lora_dropout"):
            module.lora_dropout["default"] = Replay()
    loss, grads = loss_and_grads(model, lean=False)
    assert next(replay, None) is None
    torch.testing.assert_close(lean_loss, loss, rtol=1e-6, atol=1e-6)
    for name in grads:
        torch.testing.assert_close(lean_grads[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_lora_on_the_mlp_keeps_peft_forward_for_those_projections():
    model = with_lora(tiny("Llama"), 0.0, targets=("q_proj", "gate_proj", "down_proj"))
    with lean_training(model) as kinds:
        pass
    # The MLP's projections are LoRA layers now, so the fused MLP does not apply; the LoRA layers do.
    assert kinds == {"lora": 6, "norm": 5}
    assert_same_training(model)


def test_selective_tuning_trains_norm_weights_and_frozen_projections():
    model = tiny("Llama")
    for name, p in model.named_parameters():
        p.requires_grad = "norm" in name or "down_proj" in name
    assert_same_training(model)


@pytest.mark.parametrize("method, most", [("full", 0.55), ("lora", 0.62)])
def test_saves_far_fewer_activation_bytes(method, most, monkeypatch):
    model = tiny("Llama") if method == "full" else with_lora(tiny("Llama"), 0.05)
    plain = saved_bytes(model, False, monkeypatch)
    lean_bytes = saved_bytes(model, True, monkeypatch)
    monkeypatch.setattr(lean.NormOutputs, "add", lambda *args: None)  # norm outputs kept, not rebuilt
    without_rebuild = saved_bytes(model, True, monkeypatch)
    assert lean_bytes < most * plain
    assert lean_bytes < 0.95 * without_rebuild


def own_attributes(model) -> dict:
    """Each module's own __dict__ (copied): where an instance `forward` lives, if any."""
    return {name: dict(m.__dict__) for name, m in model.named_modules()}


def count_lean_calls(monkeypatch) -> Counter:
    """Counts the lean autograd functions' calls by name."""
    calls = Counter()
    for name in ("RMSNorm", "GatedMLP", "LoraLinear"):
        function = getattr(lean, name)
        monkeypatch.setattr(lean, name, SimpleNamespace(
            apply=lambda *args, _name=name, _function=function: calls.update([_name]) or _function.apply(*args)))
    return calls


def test_restores_the_model_and_leaves_evaluation_alone():
    model = with_lora(tiny("Llama"), 0.05)
    model.eval()
    before_attributes = own_attributes(model)
    with torch.no_grad():
        before = model(input_ids=inputs()).logits
        with lean_training(model):
            during = model(input_ids=inputs()).logits
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert own_attributes(model) == before_attributes
    torch.testing.assert_close(during, before, rtol=0, atol=0)


def test_an_instance_forward_found_on_entry_serves_evaluation_and_is_put_back(monkeypatch):
    """A library may keep a module's forward in its __dict__ (a hub kernel, a hook's wrapper):
    the block trains with the lean forward over it, runs it outside autograd, and leaves it there."""
    model = tiny("Llama")
    norm, mlp = model.model.norm, model.model.layers[0].mlp
    seen = []

    def own_forward(module):
        cls_forward = type(module).forward
        return lambda x: seen.append(type(module).__name__) or cls_forward(module, x)

    norm.forward, mlp.forward = own_forward(norm), own_forward(mlp)
    kept = norm.__dict__["forward"], mlp.__dict__["forward"]
    before = own_attributes(model)
    calls = count_lean_calls(monkeypatch)
    with lean_training(model) as kinds:
        assert kinds == {"mlp": 2, "norm": 5}
        assert norm.forward is not kept[0] and mlp.forward is not kept[1]
        with torch.no_grad():
            model(input_ids=inputs())
        assert seen == ["LlamaMLP", "LlamaRMSNorm"] and not calls
        model(input_ids=inputs())
        assert seen == ["LlamaMLP", "LlamaRMSNorm"] and calls == {"RMSNorm": 5, "GatedMLP": 2}
    assert own_attributes(model) == before
    assert (norm.__dict__["forward"], mlp.__dict__["forward"]) == kept
    assert "forward" not in model.model.layers[1].mlp.__dict__


def test_a_forward_replaced_inside_the_block_gets_the_lean_one_back_and_the_exit_restores_the_entry_state(monkeypatch):
    """What kernels' kernelize does to the RMSNorms on a train()/eval() switch (transformers 5.25
    calls it there): pop `forward` from the module's __dict__ (no kernel for the device), or put
    a kernel's forward there. The next training forward is lean again, its gradients the same;
    the exit puts back what the block found, without failing over an entry that is gone."""
    model = with_lora(tiny("Llama"), 0.0)
    model.model.model.norm.forward = type(model.model.model.norm).forward.__get__(model.model.model.norm)
    before = own_attributes(model)
    loss, grads = loss_and_grads(model, lean=False)
    calls = count_lean_calls(monkeypatch)
    model.train()
    model.zero_grad(set_to_none=True)
    with lean_training(model):
        for module in model.modules():
            if type(module).__name__ == "LlamaRMSNorm":
                module.__dict__.pop("forward", None)
            elif type(module).__name__ == "LlamaMLP":
                module.forward = type(module).forward.__get__(module)  # a kernel's forward, bound as kernelize binds it
        torch.manual_seed(7)
        lean_loss = model(input_ids=inputs(), labels=inputs()).loss
        lean_loss.backward()
    assert calls == {"RMSNorm": 5, "GatedMLP": 2, "LoraLinear": 8}
    assert own_attributes(model) == before
    torch.testing.assert_close(lean_loss.detach(), loss, rtol=1e-6, atol=1e-6)
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_loaded_model_keeps_the_lean_forward_through_train_eval_switches(tiny_model_dir, monkeypatch):
    """As the trainer runs it: a model from from_pretrained (kernelized by transformers >= 5.25
    when the kernels package is installed), train(), then validations (eval(), train()) inside
    the block. Every training forward is lean, and the exit leaves each module as it was."""
    from transformers import AutoModelForCausalLM

    model = with_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), 0.05)
    model.train()
    before = own_attributes(model)
    calls = count_lean_calls(monkeypatch)
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with lean_training(model) as kinds:
        for _ in range(2):
            model(input_ids=ids, labels=ids).loss.backward()
            model.eval()
            with torch.no_grad():
                model(input_ids=ids)
            model.train()
    assert calls == {name: 2 * kinds[kind] for name, kind in
                     (("RMSNorm", "norm"), ("GatedMLP", "mlp"), ("LoraLinear", "lora"))}
    assert own_attributes(model) == before
    model.eval()
    model.train()  # and it switches as before


def test_cpu_autocast_in_bfloat16_stays_close():
    model = tiny("Llama")
    ids = inputs()
    results = []
    for use_lean in (False, True):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16), (lean_training(model) if use_lean else torch.enable_grad()):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        results.append((loss.detach(), model.model.layers[0].mlp.gate_proj.weight.grad.clone()))
    (loss, grad), (lean_loss, lean_grad) = results
    torch.testing.assert_close(lean_loss, loss, rtol=1e-2, atol=1e-2)
    assert torch.nn.functional.cosine_similarity(lean_grad.flatten(), grad.flatten(), dim=0) > 0.99
