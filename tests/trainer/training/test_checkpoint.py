"""Checkpoints and resume: a run killed after a checkpoint and restarted on the same output
path ends where an uninterrupted run ends, continuing its step count and data order."""
from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
import types

import pytest
import torch
from safetensors.torch import load_file

from kubetune_trainer.training.checkpoint import Checkpoints
from kubetune_trainer.cli import main
from test_cli import write_config

STEPS, EVERY = 80, 20
TRAINING = {"maxSteps": STEPS, "batchSize": 4, "gradientAccumulationSteps": 2, "learningRate": 3e-3,
            "logEverySteps": 10, "evalEverySteps": 40, "checkpointEverySteps": EVERY, "checkpointsToKeep": 2}
LORA = {"r": 4, "alpha": 8, "dropout": 0.1, "targetModules": ["q_proj", "v_proj"]}  # dropout: RNG state matters


def test_killed_run_resumes_and_matches_an_uninterrupted_run(tiny_model_dir, dataset_file, tmp_path):
    reference = tmp_path / "reference"
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, dataset_file, reference, lora=LORA, training=TRAINING)
    assert main(["--config", str(config)]) == 0

    resumed = tmp_path / "resumed"
    child = subprocess.Popen([sys.executable, "-m", "kubetune_trainer.cli", "--config", str(config), "--output", str(resumed)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "KUBETUNE_CACHE": str(tmp_path / "cache")})
    first = resumed / "checkpoints" / f"step-{EVERY}"
    deadline = time.monotonic() + 300
    while not first.is_dir() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert first.is_dir() and not (resumed / "training_summary.json").exists(), "the run ended before it could be killed"

    assert main(["--config", str(config), "--output", str(resumed)]) == 0
    want = json.loads((reference / "training_summary.json").read_text())
    got = json.loads((resumed / "training_summary.json").read_text())
    assert want["resumedFromStep"] is None and EVERY <= got["resumedFromStep"] < STEPS
    # The step count and reports continue: the history is the uninterrupted run's, step for step.
    assert [e["step"] for e in got["history"]] == [e["step"] for e in want["history"]]
    assert got["progress"]["step"] == STEPS
    assert abs(got["finalTrainLoss"] - want["finalTrainLoss"]) < 1e-4
    assert abs(got["metrics"]["testLoss"] - want["metrics"]["testLoss"]) < 1e-4
    a, b = (load_file(d / "adapter" / "adapter_model.safetensors") for d in (reference, resumed))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)
    # Keep-last-K, and nothing half-written left behind.
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == [f"step-{STEPS - EVERY}", f"step-{STEPS}"]


def test_sigterm_stops_at_a_step_with_a_checkpoint_and_the_next_run_resumes_there(tiny_model_dir, dataset_file, tmp_path):
    """What a pod does when Kubernetes stops it (preemption, drain, spec.suspend): no steps lost,
    exit 143 so the operator sees an infrastructure failure, and the reason in the message."""
    from kubetune_api import wire

    run = tmp_path / "run"
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, dataset_file, run, lora=LORA,
                          training={**TRAINING, "checkpointEverySteps": 0})  # no periodic checkpoints
    log, termination = tmp_path / "stderr.log", tmp_path / "termination"
    with open(log, "w") as stderr:
        child = subprocess.Popen([sys.executable, "-m", "kubetune_trainer.cli", "--config", str(config)],
                                 stdout=subprocess.DEVNULL, stderr=stderr,
                                 env={**os.environ, wire.ENV_TERMINATION_LOG: str(termination)})
        deadline = time.monotonic() + 300
        while f"step 20/{STEPS}" not in log.read_text() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=120) == 143
    (checkpoint,) = (run / "checkpoints").iterdir()
    stopped_at = int(checkpoint.name.split("-")[1])
    assert 20 <= stopped_at < STEPS and not (run / "training_summary.json").exists()
    report = json.loads(termination.read_text())
    assert report["reason"] == "KilledBySignal" and f"stopped by SIGTERM after step {stopped_at}/{STEPS}" in report["error"]

    assert main(["--config", str(config)]) == 0
    summary = json.loads((run / "training_summary.json").read_text())
    assert summary["resumedFromStep"] == stopped_at and summary["progress"]["step"] == STEPS


class _Planted:
    """Unpickling this creates `marker`: what a file planted on a shared volume could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _one_process():
    return types.SimpleNamespace(is_main_process=True, process_index=0, num_processes=1, device="cpu",
                                 wait_for_everyone=lambda: None)


def _training_state(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def test_a_checkpoint_round_trips_through_the_weights_only_loader(tmp_path):
    checkpoints = Checkpoints(tmp_path, keep=2, accelerator=_one_process())
    model, optimizer, scheduler = _training_state(0)
    checkpoints.save(5, model, optimizer, scheduler, {"history": []})
    after_save = torch.rand(3)
    fresh, fresh_optimizer, fresh_scheduler = _training_state(1)
    assert checkpoints.load(checkpoints.latest(), fresh, fresh_optimizer, fresh_scheduler) == {"step": 5, "history": []}
    torch.testing.assert_close(fresh.weight, model.weight)
    torch.testing.assert_close(fresh_optimizer.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    assert fresh_scheduler.state_dict()["last_epoch"] == 1
    torch.testing.assert_close(torch.rand(3), after_save)  # the RNG continues from the save


@pytest.mark.parametrize("planted", ["state.pt", "rng-0.pt"])
@pytest.mark.parametrize("protocol", ["torch.save", "pickle"])
def test_a_planted_pickle_in_a_checkpoint_is_refused_unrun(tmp_path, planted, protocol):
    checkpoints = Checkpoints(tmp_path / "out", keep=2, accelerator=_one_process())
    model, optimizer, scheduler = _training_state(0)
    checkpoints.save(5, model, optimizer, scheduler, {})
    target, marker = tmp_path / "out" / "checkpoints" / "step-5" / planted, tmp_path / "ran"
    if protocol == "pickle":
        target.write_bytes(pickle.dumps({"model": _Planted(marker)}))
    else:
        torch.save({"model": _Planted(marker)}, target)
    with pytest.raises(ValueError, match=f"{re.escape(str(target))} holds more than tensors and plain values"):
        checkpoints.load(checkpoints.latest(), *_training_state(1))
    assert not marker.exists()
