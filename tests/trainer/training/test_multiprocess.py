"""The trainer under `accelerate launch` with two CPU processes (gloo): one summary, written once."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_cli import write_config


def test_two_processes_train_and_only_the_main_one_writes(tiny_model_dir, dataset_file, tmp_path):
    out = tmp_path / "out"
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, dataset_file, out,
                          training={"maxSteps": 6, "batchSize": 4, "learningRate": 1e-2, "logEverySteps": 2,
                                    "evalEverySteps": 3, "checkpointEverySteps": 3})
    accelerate = Path(sys.executable).with_name("accelerate")
    # --multi_gpu picks accelerate's torchrun launcher (--cpu would need mpirun); without CUDA
    # the trainer's processes join a gloo group on the CPU.
    done = subprocess.run(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "kubetune_trainer.cli", "--config", str(config)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "KUBETUNE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == str(out / "training_summary.json")
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["processes"] == 2 and summary["progress"]["step"] == 6
    assert [e["step"] for e in summary["history"]] == [2, 3, 4, 6]
    assert summary["metrics"]["testLoss"] is not None and summary["throughput"]["trainTokens"] > 0
    assert done.stderr.count("step 6/6 test loss") == 1  # only the main process logs
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-3", "step-6"]
    assert {"rng-0.pt", "rng-1.pt"} <= {p.name for p in (out / "checkpoints" / "step-6").iterdir()}
