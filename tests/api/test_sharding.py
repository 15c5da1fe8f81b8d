"""training.fsdp in the API: what it refuses, naming the field, before anything runs."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from kubetune_api import FineTuneJobSpec

SPEC = {
    "model": {"path": "/models/base"},
    "dataset": {"path": "rows.jsonl", "promptTemplate": "{{ q }}", "completionField": "a"},
    "output": {"path": "out"},
}


def _spec(method="full", training=None, resources=None, **extra) -> dict:
    return {**SPEC, "method": method, "training": {"fsdp": {"enabled": True}, **(training or {})},
            **({"resources": resources} if resources else {}), **extra}


@pytest.mark.parametrize("method", ["full", "lora"])
def test_full_and_lora_shard_across_the_ranks(method):
    spec = FineTuneJobSpec.model_validate(_spec(method, {"batchSize": 16, "fsdp": {"enabled": True, "reshardAfterForward": False}},
                                                {"gpu": 8, "nodes": 2}))
    assert spec.training.fsdp.enabled and not spec.training.fsdp.reshard_after_forward
    assert not FineTuneJobSpec.model_validate(SPEC).training.fsdp.enabled  # off by default


@pytest.mark.parametrize("method", ["qlora", "prompt-tuning", "prefix-tuning", "ia3"])
def test_methods_fsdp_cannot_shard_are_refused(method):
    with pytest.raises(ValidationError, match=f"training.fsdp.enabled: method {method} cannot train under FSDP"):
        FineTuneJobSpec.model_validate(_spec(method))


def test_drift_penalty_is_refused_under_fsdp():
    with pytest.raises(ValidationError, match="training.driftPenalty: not available with training.fsdp.enabled"):
        FineTuneJobSpec.model_validate(_spec("full", {"driftPenalty": 0.1}))


def test_settings_without_enabled_are_refused():
    with pytest.raises(ValidationError, match="training.fsdp: settings given but training.fsdp.enabled is false"):
        FineTuneJobSpec.model_validate({**SPEC, "training": {"fsdp": {"reshardAfterForward": False}}})


@pytest.mark.parametrize(("resources", "ranks"), [({"gpu": 4, "nodes": 2}, 8), ({"gpu": 0, "nodes": 3}, 3)])
def test_a_batch_smaller_than_the_ranks_is_refused(resources, ranks):
    with pytest.raises(ValidationError, match=f"training.batchSize 2 is less than the {ranks} ranks"):
        FineTuneJobSpec.model_validate(_spec("lora", {"batchSize": 2}, resources))
    FineTuneJobSpec.model_validate(_spec("lora", {"batchSize": ranks}, resources))
