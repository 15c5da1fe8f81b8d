"""FSDP's GPU precision choices, without a GPU (construction only: the CUDA paths run on a lent GPU)."""
from __future__ import annotations

import torch

from kubetune_api.training import Dtype, ModelSource, TrainingSpec
from kubetune_trainer.training import fsdp

ON = TrainingSpec(fsdp={"enabled": True})


def test_gpu_ranks_compute_in_bf16_and_reduce_in_fp32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    policy = fsdp.mixed_precision(torch.device("cuda", 0))
    assert (policy.param_dtype, policy.reduce_dtype) == (torch.bfloat16, torch.float32)
    cpu = fsdp.mixed_precision(torch.device("cpu"))
    assert (cpu.param_dtype, cpu.reduce_dtype) == (None, None)  # the parameters' own dtype: fp32


def test_an_auto_dtype_model_loads_in_fp32_on_gpu_under_fsdp_only(monkeypatch):
    auto, bf16 = ModelSource(path="/models/base"), ModelSource(path="/models/base", dtype="bfloat16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert fsdp.model_source(auto, ON).dtype is Dtype.float32  # fp32 master shards, bf16 compute
    assert fsdp.model_source(bf16, ON).dtype is Dtype.bfloat16  # what the user chose stays
    assert fsdp.model_source(auto, TrainingSpec()).dtype is Dtype.auto
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert fsdp.model_source(auto, ON).dtype is Dtype.auto  # fp32 on CPU anyway


def test_a_batch_is_shared_among_the_ranks_and_a_rank_without_a_row_gets_a_stand_in():
    assert [fsdp.rank_rows([7, 8, 9, 10, 11], rank, 2) for rank in range(2)] == [([7, 9, 11], 1.0), ([8, 10], 1.0)]
    assert [fsdp.rank_rows([7, 8], rank, 4) for rank in range(4)] == [([7], 1.0), ([8], 1.0), ([7], 0.0), ([7], 0.0)]
