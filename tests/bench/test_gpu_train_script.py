"""bench/gpu_train.py runs where no GPU is: --tiny takes the same code path on the CPU, so the
script a lent GPU runs is known to work before device time is spent on it."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_gpu_bench_trains_each_method_and_prints_one_json_line(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_train.py"), "--tiny", "--methods", "lora,full,qlora",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert line == json.loads((tmp_path / "gpu_train.json").read_text())
    assert line["model"]["parameters"] > line["model"]["matmulParameters"] > 0
    for method in ("lora", "full"):
        numbers = line["methods"][method]
        assert numbers["steps"] == line["steps"] and numbers["trainTokens"] > 0
        assert numbers["tokensPerSecond"] > 0 and math.isfinite(numbers["finalTrainLoss"])
    assert line["methods"]["full"]["trainable"] > line["methods"]["lora"]["trainable"]
    assert "notRun" in line["methods"]["qlora"]  # bitsandbytes needs CUDA: said, not crashed
