"""FSDP on the local cluster: a 2-node CPU job with `training.fsdp` (gloo across pods, the
operator unchanged: the trainer reads the config) trains like one process on the same data and
seed, holds half the training state per rank and writes sharded checkpoints from both pods."""
from __future__ import annotations

import json

import pytest

from kubectl_utils import apply, wait_final
from test_finetunejob import finetunejob

pytestmark = pytest.mark.cluster

# No LoRA dropout: its masks depend on how rows are laid out on the ranks.
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "targetModules": ["q_proj", "v_proj"]}
TRAINING = {"maxSteps": 4, "batchSize": 4, "learningRate": 0.01, "evalEverySteps": 2, "checkpointEverySteps": 2,
            "fsdp": {"enabled": True}}


def test_a_two_node_fsdp_job_trains_like_one_process(operator, namespace, tiny_model_dir, rows_file, workdir):
    apply(finetunejob("fsdp-nodes", namespace, tiny_model_dir, rows_file, workdir / "nodes", lora=LORA,
                      training=TRAINING, resources={"gpu": 0, "nodes": 2}))
    apply(finetunejob("fsdp-one", namespace, tiny_model_dir, rows_file, workdir / "one", lora=LORA,
                      training=TRAINING, resources={"gpu": 1}))
    sharded, single = wait_final("ftj", namespace, "fsdp-nodes"), wait_final("ftj", namespace, "fsdp-one")
    assert sharded["status"]["phase"] == "Succeeded", sharded["status"]
    assert single["status"]["phase"] == "Succeeded", single["status"]
    for key in ("trainLoss", "validationLoss", "testLoss"):
        assert sharded["status"]["metrics"][key] == pytest.approx(single["status"]["metrics"][key], abs=1e-3), key

    summary = json.loads((workdir / "nodes" / "training_summary.json").read_text())
    [whole] = json.loads((workdir / "one" / "training_summary.json").read_text())["trainingStateBytes"]
    assert summary["processes"] == 2 and summary["fsdp"] is True
    assert max(summary["trainingStateBytes"]) <= 0.6 * whole
    shards = workdir / "nodes" / "checkpoints" / "step-4" / "shards"
    assert len(list(shards.glob("*.distcp"))) == 2  # each pod wrote its own
    assert (workdir / "nodes" / "adapter" / "adapter_model.safetensors").is_file()
