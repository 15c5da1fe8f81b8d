"""The trainer across "machines": two `accelerate launch` invocations of one process each
(--num_machines 2, as two pods run it) train like one invocation of two processes: same
batches per global rank, same final loss. Each machine has its own working directory (pods
on different nodes share no disk), and only rank 0's gets outputs and checkpoints."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from test_cli import write_config

TRAINING = {"maxSteps": 4, "batchSize": 4, "learningRate": 1e-2, "logEverySteps": 2, "evalEverySteps": 4,
            "checkpointEverySteps": 2}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(cwd: Path, config: Path, cache: Path, *flags: str) -> subprocess.Popen:
    accelerate = Path(sys.executable).with_name("accelerate")
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [str(accelerate), "launch", "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", *flags,
         "-m", "kubetune_trainer.cli", "--config", str(config)],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "KUBETUNE_CACHE": str(cache), "OMP_NUM_THREADS": "1"})


def _wait(proc: subprocess.Popen) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    return out, err


def _two_machines(tmp_path: Path, config: Path) -> list[tuple[str, str]]:
    port = str(_free_port())
    machines = [_launch(tmp_path / f"machine-{rank}", config, tmp_path / f"cache-{rank}", "--num_processes", "2",
                        "--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                        "--main_process_port", port)
                for rank in (0, 1)]
    return [_wait(proc) for proc in machines]


def test_two_machines_of_one_process_train_like_one_machine_of_two(tiny_model_dir, dataset_file, tmp_path):
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, dataset_file, "out", training=TRAINING)
    single = _launch(tmp_path / "single", config, tmp_path / "cache-single", "--num_processes", "2",
                     "--num_machines", "1", "--main_process_port", str(_free_port()))
    _wait(single)

    (out0, err0), (out1, err1) = _two_machines(tmp_path, config)

    one = json.loads((tmp_path / "single" / "out" / "training_summary.json").read_text())
    two = json.loads((tmp_path / "machine-0" / "out" / "training_summary.json").read_text())
    assert one["processes"] == two["processes"] == 2
    assert two["progress"]["step"] == 4 and two["throughput"]["trainTokens"] == one["throughput"]["trainTokens"]
    for key in ("trainLoss", "validationLoss", "testLoss"):
        assert abs(two["metrics"][key] - one["metrics"][key]) < 1e-4, (key, one["metrics"], two["metrics"])
    # Rank 0 alone prints the result, writes outputs and checkpoints (with every rank's RNG state).
    assert out0.strip().splitlines()[-1] == str(tmp_path / "machine-0" / "out" / "training_summary.json")
    assert out1.strip() == "" and "step 4/4 test loss" not in err1
    assert not (tmp_path / "machine-1" / "out").exists()
    assert {"rng-0.pt", "rng-1.pt"} <= {p.name for p in (tmp_path / "machine-0" / "out" / "checkpoints" / "step-4").iterdir()}

    # A retried attempt resumes: rank 0 alone sees the checkpoint and sends it to rank 1.
    checkpoints = tmp_path / "machine-0" / "out" / "checkpoints"
    shutil.rmtree(checkpoints / "step-4")
    _two_machines(tmp_path, config)
    resumed = json.loads((tmp_path / "machine-0" / "out" / "training_summary.json").read_text())
    assert resumed["resumedFromStep"] == 2 and not (tmp_path / "machine-1" / "out").exists()
    for key in ("trainLoss", "validationLoss", "testLoss"):
        assert abs(resumed["metrics"][key] - two["metrics"][key]) < 1e-4, (key, two["metrics"], resumed["metrics"])
