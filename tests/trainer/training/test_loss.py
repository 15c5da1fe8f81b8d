"""The chunked completion loss equals the naive full-logits loss, with and without PEFT's
virtual tokens (prompt tuning prepends them to the outputs; prefix tuning does not)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kubetune_trainer.training import loss as loss_module
from kubetune_trainer.data.tokenization import IGNORE_INDEX, Collator, Tokenized
from kubetune_trainer.training.loss import batch_loss, completion_loss
from kubetune_trainer.model.methods import METHODS
from kubetune_trainer.model.loading import load_model
from training_runs import make_config


def test_completion_loss_counts_only_labelled_next_tokens():
    head = torch.nn.Identity()  # hidden states are the logits
    hidden = torch.zeros(1, 4, 3)
    hidden[0, 0, 2] = 10.0  # predicts position 1 correctly
    hidden[0, 1, 0] = 10.0  # predicts position 2 wrongly, but position 2 is masked
    hidden[0, 2, 1] = 10.0  # predicts position 3 wrongly
    labels = torch.tensor([[IGNORE_INDEX, 2, IGNORE_INDEX, 2]])
    loss, n, correct = completion_loss(hidden, labels, head)
    assert (n.item(), correct.item()) == (2, 1)
    expected = F.cross_entropy(hidden[0, [0, 2]], torch.tensor([2, 2]), reduction="sum")
    torch.testing.assert_close(loss, expected)


@pytest.fixture
def batch(tiny_tokenizer):
    rows = [("Which animal is red cat?\nAnswer:", " cat"), ("Which animal is a very blue owl?\nAnswer:", " owl owl")]
    items = []
    for prompt, completion in rows:
        p = tiny_tokenizer(prompt)["input_ids"]
        c = tiny_tokenizer(completion, add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
        items.append(Tokenized(p + c, [IGNORE_INDEX] * len(p) + c))
    return Collator(tiny_tokenizer.pad_token_id)(items)


@pytest.mark.parametrize("method,block", [
    ("full", {}), ("lora", {}), ("prompt-tuning", {"promptTuning": {"numVirtualTokens": 3}}),
    ("prefix-tuning", {"prefixTuning": {"numVirtualTokens": 3}}),
])
def test_chunked_loss_and_gradients_equal_the_naive_loss(method, block, tiny_model_dir, dataset_file, tmp_path, batch, monkeypatch):
    from kubetune_api.training import TrainingConfig

    monkeypatch.setattr(loss_module, "CHUNK_POSITIONS", 3)  # several chunks, the last one short
    config = make_config(tiny_model_dir, dataset_file, tmp_path)
    config = TrainingConfig.model_validate({**config.model_dump(by_alias=True, exclude=set() if method == "lora" else {"lora"}),
                                            "method": method, **block})
    base, _, checkpoint = load_model(config.model)
    model = METHODS[method].prepare(base, config, checkpoint)
    trainable = [p for p in model.parameters() if p.requires_grad]

    # The reference: transformers' own loss on full logits (PEFT pads the labels for virtual tokens).
    naive = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    naive_grads = torch.autograd.grad(naive, trainable)
    loss_sum, n, _ = batch_loss(model, model, batch)
    assert n.item() == (batch["labels"][:, 1:] != IGNORE_INDEX).sum().item()
    chunked = loss_sum / n
    torch.testing.assert_close(chunked, naive, rtol=1e-5, atol=1e-5)
    for got, want in zip(torch.autograd.grad(chunked, trainable), naive_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    # The output head is back in place afterwards.
    assert isinstance(model.get_output_embeddings(), torch.nn.Linear)
