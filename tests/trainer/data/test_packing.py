"""training.packing: a packed batch is exact (rows never see each other; losses, gradients and
whole training runs equal the padded ones), and packing is refused or skipped where it is not."""
from __future__ import annotations

import logging

import pytest
import torch
from pydantic import ValidationError

from kubetune_api.errors import ConfigError
from kubetune_api.training import TrainingConfig
from kubetune_trainer.training.loss import batch_loss, hidden_state_outputs, model_inputs
from kubetune_trainer.model.methods import METHODS
from kubetune_trainer.model.loading import load_model
from kubetune_trainer.data.packing import PackedCollator, prepare_packed_attention, resolve_packing
from kubetune_trainer.data.tokenization import IGNORE_INDEX, Collator, Tokenized
from training_runs import make_config, run_training, train_losses

PROMPTS = [("Which animal is red cat?\nAnswer:", " cat"), ("Which animal is a very blue owl?\nAnswer:", " owl owl"),
           ("Which animal is green fox?\nAnswer:", " fox"), ("Which animal is black cow cow cow?\nAnswer:", " cow")]


@pytest.fixture
def rows(tiny_tokenizer) -> list[Tokenized]:
    items = []
    for prompt, completion in PROMPTS:
        p = tiny_tokenizer(prompt)["input_ids"]
        c = tiny_tokenizer(completion, add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
        items.append(Tokenized(p + c, [IGNORE_INDEX] * len(p) + c))
    # A row whose first token is labelled (a truncated row keeps only its completion): in the pack
    # it must not become the target of the previous row's last token.
    items.append(Tokenized(items[0].input_ids[-3:], items[0].input_ids[-3:]))
    return items


def prepared(method: str, tiny_model_dir, dataset_file, tmp_path, **block):
    config = make_config(tiny_model_dir, dataset_file, tmp_path, method=method)
    if method not in ("lora", "qlora"):
        config = TrainingConfig.model_validate({**config.model_dump(by_alias=True, exclude={"lora"}), "method": method, **block})
    base, _, checkpoint = load_model(config.model)
    return METHODS[method].prepare(base, config, checkpoint)


def test_a_packed_row_sees_only_itself(tiny_model_dir, dataset_file, tmp_path, rows):
    model = prepared("full", tiny_model_dir, dataset_file, tmp_path)
    packed = PackedCollator()(rows)
    with torch.no_grad(), hidden_state_outputs(model):
        hidden = model(**model_inputs(packed)).logits[0]
        start = 0
        for row in rows:
            alone = model(input_ids=torch.tensor([row.input_ids])).logits[0]
            torch.testing.assert_close(hidden[start:start + len(row.input_ids)], alone, rtol=1e-5, atol=1e-5)
            start += len(row.input_ids)
    assert start == hidden.size(0) == int(packed["tokens"])
    # The check has teeth: the same pack with positions running on lets rows attend to earlier rows.
    unmasked = {**packed, "position_ids": torch.arange(start).unsqueeze(0)}
    with torch.no_grad(), hidden_state_outputs(model):
        leaked = model(**model_inputs(unmasked)).logits[0]
    n0 = len(rows[0].input_ids)
    assert not torch.allclose(leaked[n0:n0 + len(rows[1].input_ids)], hidden[n0:n0 + len(rows[1].input_ids)], atol=1e-3)



@pytest.mark.parametrize("kv_heads", [4, 2])  # 2: grouped key/value heads, repeated for SDPA
def test_row_by_row_sdpa_equals_each_row_alone_and_the_dense_mask(kv_heads, tiny_tokenizer, rows):
    """kubetune's packed SDPA (model.packed_attention): outputs and gradients of a pack equal
    each row alone and the dense block-diagonal mask it replaces; padded batches keep their masks."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=kv_heads, attn_implementation="sdpa"))
    dense_pack, pack = PackedCollator()(rows), PackedCollator(varlen=True)(rows)
    dense = model(**model_inputs(dense_pack)).logits[0]
    dense_grad = torch.autograd.grad(dense.square().sum(), model.model.layers[0].self_attn.q_proj.weight)[0]
    padded = Collator(tiny_tokenizer.pad_token_id or 0)(rows)
    with torch.no_grad():
        padded_before = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
    assert prepare_packed_attention(model) and model.config._attn_implementation == "kubetune_packed_sdpa"
    packed = model(**model_inputs(pack)).logits[0]
    torch.testing.assert_close(packed, dense, rtol=1e-5, atol=1e-5)
    grad = torch.autograd.grad(packed.square().sum(), model.model.layers[0].self_attn.q_proj.weight)[0]
    torch.testing.assert_close(grad, dense_grad, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        start = 0
        for row in rows:
            alone = model(input_ids=torch.tensor([row.input_ids])).logits[0]
            torch.testing.assert_close(packed[start:start + len(row.input_ids)], alone.detach(), rtol=1e-5, atol=1e-5)
            start += len(row.input_ids)
        padded_after = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
    torch.testing.assert_close(padded_after, padded_before, rtol=1e-5, atol=1e-5)

@pytest.mark.parametrize("method,block", [("full", {}), ("lora", {}), ("ia3", {})])
def test_packed_loss_and_gradients_equal_the_padded_ones(method, block, tiny_model_dir, dataset_file, tmp_path, rows, tiny_tokenizer):
    model = prepared(method, tiny_model_dir, dataset_file, tmp_path, **block)
    trainable = [p for p in model.parameters() if p.requires_grad]
    padded_sum, padded_n, padded_correct = batch_loss(model, model, Collator(tiny_tokenizer.pad_token_id)(rows))
    padded_grads = torch.autograd.grad(padded_sum / padded_n, trainable)
    packed_sum, packed_n, packed_correct = batch_loss(model, model, PackedCollator()(rows))
    assert (packed_n.item(), packed_correct.item()) == (padded_n.item(), padded_correct.item())
    torch.testing.assert_close(packed_sum / packed_n, padded_sum / padded_n, rtol=1e-5, atol=1e-5)
    for got, want in zip(torch.autograd.grad(packed_sum / packed_n, trainable), padded_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_packed_run_trains_exactly_like_a_padded_one(method, tiny_model_dir, dataset_file, tmp_path, caplog):
    """Same rows, seed and batches: the loss history, validation loss and token counts match."""
    runs = {}
    for packing in (False, True):
        config = make_config(tiny_model_dir, dataset_file, tmp_path / str(packing), method=method, maxSteps=6, logEverySteps=1,
                             gradientAccumulationSteps=2, packing=packing, **({"learningRate": 1e-3} if method == "full" else {}))
        if method == "full":
            config = TrainingConfig.model_validate({**config.model_dump(by_alias=True, exclude={"lora"}), "method": "full"})
        with caplog.at_level(logging.INFO, logger="kubetune_trainer.data.packing"):
            runs[packing] = run_training(config)[2]
    assert "training.packing: on" in caplog.text
    padded, packed = runs[False], runs[True]
    assert len(train_losses(packed)) == 6
    torch.testing.assert_close(train_losses(packed), train_losses(padded), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed.metrics.validation_loss, padded.metrics.validation_loss, rtol=1e-5, atol=1e-5)
    assert packed.train_tokens == padded.train_tokens


def test_varlen_bounds_are_flash_attentions_own(rows):
    """The row bounds handed to flash-attention's varlen kernel equal what transformers derives
    from the packed position ids."""
    from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

    packed = PackedCollator(varlen=True)(rows)
    (cu_q, cu_k), (max_q, max_k) = prepare_fa_kwargs_from_position_ids(packed["position_ids"])
    assert packed["cu_seq_lens_q"].tolist() == cu_q.tolist() == packed["cu_seq_lens_k"].tolist() == cu_k.tolist()
    assert packed["max_length_q"] == packed["max_length_k"] == int(max_q) == int(max_k)
    assert "cu_seq_lens_q" not in PackedCollator()(rows)


def test_auto_skips_prompt_learning_and_true_is_refused(tiny_model_dir, dataset_file, tmp_path, caplog):
    model = prepared("prompt-tuning", tiny_model_dir, dataset_file, tmp_path, promptTuning={"numVirtualTokens": 2})
    with caplog.at_level(logging.INFO, logger="kubetune_trainer.data.packing"):
        assert resolve_packing(None, model) is False
    assert "training.packing: off (prompt-tuning prepends per-row virtual tokens)" in caplog.text
    with pytest.raises(ConfigError, match="training.packing: true, but prompt-tuning"):
        resolve_packing(True, model)
    full = prepared("full", tiny_model_dir, dataset_file, tmp_path)
    assert resolve_packing(False, full) is False
    # Auto packs only where the attention takes packed rows without a dense mask (flash-attention's varlen).
    assert full.config._attn_implementation == "sdpa"
    assert resolve_packing(None, full) is False and resolve_packing(True, full) is True
    full.config._attn_implementation = "flash_attention_2"
    assert resolve_packing(None, full) is True
    # At apply: the config names the field.
    config = make_config(tiny_model_dir, dataset_file, tmp_path).model_dump(by_alias=True, exclude={"lora"})
    for method in ("prompt-tuning", "prefix-tuning"):
        with pytest.raises(ValidationError, match=f"training.packing: true, but method {method}"):
            TrainingConfig.model_validate({**config, "method": method, "training": {"packing": True}})
        TrainingConfig.model_validate({**config, "method": method, "training": {"packing": False}})


def test_unknown_model_types_are_not_packed(caplog):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16, n_positions=16))
    with caplog.at_level(logging.INFO, logger="kubetune_trainer.data.packing"):
        assert resolve_packing(None, model) is False
    assert "model type gpt2" in caplog.text
    with pytest.raises(ConfigError, match="training.packing: true, but model type gpt2"):
        resolve_packing(True, model)
