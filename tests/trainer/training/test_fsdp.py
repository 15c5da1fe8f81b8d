"""training.fsdp on CPU gloo ranks: the one-process losses on 2 and 4 ranks, 1/N of the training
state per rank, sharded checkpoints that resume on another rank count, and a plain final save.

Each run is the trainer's CLI main() in as many processes as ranks, forked from the test
process (test_multiprocess.py runs the real `accelerate launch`; importing torch and
transformers anew in every rank would take most of the time here), over the tiny model; the
runs of a method are shared by its tests (module-scoped).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tinymodels import TEMPLATE, make_rows, write_jsonl

STEPS, CHECKPOINT_AT = 6, 3
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "targetModules": ["q_proj", "v_proj", "down_proj"]}


def _config(path: Path, model: Path, data: Path, output: Path, method: str) -> Path:
    config = {
        "model": {"path": str(model)},
        "dataset": {"path": str(data), "promptTemplate": TEMPLATE, "completionField": "answer", "maxLength": 64},
        "method": method,
        **({"lora": LORA} if method == "lora" else {}),
        # 38 training rows in batches of 8: the epoch's last batch (6 rows) leaves 4 ranks uneven shares.
        "training": {"maxSteps": STEPS, "batchSize": 8, "learningRate": 1e-2, "logEverySteps": 1,
                     "checkpointEverySteps": CHECKPOINT_AT, "checkpointsToKeep": 2, "predictionRows": 1,
                     "fsdp": {"enabled": True},
                     # Under FSDP as elsewhere: packed rows (full) and recomputed activations (lora).
                     **({"packing": True} if method == "full" else {"gradientCheckpointing": True})},
        "output": {"path": str(output)},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _rank(rank: int, size: int, port: int, config: Path, env: dict, log: Path) -> None:
    """One rank, forked from the test process: the trainer's main() as `accelerate launch` starts
    it (the same environment variables), without importing torch and transformers again."""
    os.environ.update(env, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(size), LOCAL_WORLD_SIZE=str(size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    code = 1
    try:
        with log.open("w", buffering=1) as out:
            sys.stdout = sys.stderr = out  # pytest's capture would swallow them
            torch.set_num_threads(1)
            from accelerate.state import AcceleratorState

            AcceleratorState._reset_state(reset_partial_state=True)  # another test's, inherited by the fork
            from kubetune_trainer.cli import main

            code = main(["--config", str(config)])
    finally:
        os._exit(code)  # nothing of the test process (atexit, pytest) runs in the child


def _train(config: Path, ranks: int, cache: Path) -> dict:
    """Runs the trainer on `ranks` processes (gloo); returns the summary."""
    context = multiprocessing.get_context("fork")
    env = {"KUBETUNE_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logs = [config.with_suffix(f".rank{rank}.log") for rank in range(ranks)]
    processes = [context.Process(target=_rank, args=(rank, ranks, port, config, env, logs[rank])) for rank in range(ranks)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    for process in processes:
        if process.is_alive():
            process.kill()
    assert all(p.exitcode == 0 for p in processes), "\n".join(log.read_text()[-3000:] for log in logs)
    return json.loads(Path(logs[0].read_text().strip().splitlines()[-1]).read_text())


def _losses(summary: dict) -> list[float]:
    return [entry["trainLoss"] for entry in summary["history"]]


class Runs:
    """The runs of one method, started on first use: one process, 2 and 4 ranks, and resumes."""

    def __init__(self, method: str, base: Path, model: Path):
        self.method, self.base, self.model = method, base, model
        self.data = write_jsonl(base / "data.jsonl", make_rows())
        self.summaries: dict[str, dict] = {}

    def output(self, name: str) -> Path:
        return self.base / name

    def run(self, name: str, ranks: int, resume_from: str | None = None) -> dict:
        if name not in self.summaries:
            output = self.output(name)
            if resume_from:  # only the first checkpoint of the other run, as if it had stopped there
                source = self.output(resume_from) / "checkpoints" / f"step-{CHECKPOINT_AT}"
                shutil.copytree(source, output / "checkpoints" / source.name)
            config = _config(self.base / f"{name}.yaml", self.model, self.data, output, self.method)
            self.summaries[name] = _train(config, ranks, self.base / "cache")
        return self.summaries[name]


@pytest.fixture(scope="module", params=["full", "lora"])
def runs(request, tmp_path_factory, tiny_model_dir) -> Runs:
    return Runs(request.param, tmp_path_factory.mktemp(f"fsdp-{request.param}"), tiny_model_dir)


@pytest.mark.parametrize("ranks", [2, 4])
def test_ranks_give_the_one_process_losses_and_hold_a_share_of_the_state(runs, ranks):
    one, many = runs.run("one", 1), runs.run(f"ranks{ranks}", ranks)
    assert many["processes"] == ranks and many["fsdp"] is True and many["progress"]["step"] == STEPS
    assert len(_losses(one)) == STEPS
    assert _losses(many) == pytest.approx(_losses(one), abs=1e-3)
    assert many["metrics"]["validationLoss"] == pytest.approx(one["metrics"]["validationLoss"], abs=1e-3)
    assert many["metrics"]["testLoss"] == pytest.approx(one["metrics"]["testLoss"], abs=1e-3)
    assert many["throughput"]["trainTokens"] == one["throughput"]["trainTokens"]
    # Parameters, gradients and AdamW state each rank holds, against the one process's.
    [whole], shares = one["trainingStateBytes"], many["trainingStateBytes"]
    assert len(shares) == ranks
    assert max(shares) / whole <= {2: 0.6, 4: 0.35}[ranks]


RESUMES = {"full": (2, 4), "lora": (4, 1)}  # ranks that wrote the checkpoint, ranks that resume it


def test_a_sharded_checkpoint_resumes_on_another_rank_count(runs):
    source_ranks, ranks = RESUMES[runs.method]
    source = f"ranks{source_ranks}"
    uninterrupted = runs.run(source, source_ranks)
    resumed = runs.run(f"resume-{source}-on-{ranks}", ranks, resume_from=source)
    assert resumed["resumedFromStep"] == CHECKPOINT_AT and resumed["progress"]["step"] == STEPS
    assert _losses(resumed) == pytest.approx(_losses(uninterrupted), abs=1e-3)
    assert resumed["metrics"]["testLoss"] == pytest.approx(uninterrupted["metrics"]["testLoss"], abs=1e-3)
    shards = runs.output(source) / "checkpoints" / f"step-{STEPS}" / "shards"
    assert len(list(shards.glob("*.distcp"))) == source_ranks  # one file of shards per rank


def test_the_final_save_is_a_plain_model_with_the_trained_weights(runs, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    one, sharded = runs.run("one", 1), runs.run("ranks2", 2)
    loaded = {}
    for name, summary in (("one", one), ("ranks2", sharded)):
        path = Path(summary["artifacts"]["modelPath"])
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir if runs.method == "lora" else path)
        if runs.method == "lora":
            model = PeftModel.from_pretrained(model, path)
        loaded[name] = model.state_dict()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    trained = [k for k in loaded["one"] if "lora_" in k] if runs.method == "lora" else list(base)
    assert trained and set(loaded["ranks2"]) == set(loaded["one"])
    for key in trained:  # the 2-rank weights are the one-process weights, and both moved from the base
        torch.testing.assert_close(loaded["ranks2"][key], loaded["one"][key], atol=2e-4, rtol=1e-3)
    if runs.method == "lora":  # lora_B starts at zero
        assert all(loaded["ranks2"][k].abs().sum() > 0 for k in trained if "lora_B" in k)
    else:
        assert all(not torch.equal(loaded["ranks2"][k], base[k]) for k in trained)
    assert (Path(sharded["artifacts"]["outputPath"]) / "predictions.jsonl").read_text().count("\n") == 1


def _gradient_rank(rank: int, size: int, port: int, model_dir: Path, n_rows: int, out: Path) -> None:
    """One rank of a sharded backward pass over the batch of _batch(); rank 0 saves the full gradients."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    code = 1
    try:
        import torch.distributed as dist
        from transformers import AutoModelForCausalLM

        from kubetune_api.training import TrainingSpec
        from kubetune_trainer.training import fsdp
        from kubetune_trainer.training.loss import batch_loss

        torch.set_num_threads(1)
        dist.init_process_group("gloo")
        model = fsdp.shard_model(AutoModelForCausalLM.from_pretrained(model_dir), TrainingSpec(fsdp={"enabled": True}),
                                 torch.device("cpu"))
        input_ids, labels = _batch(n_rows)
        rows, weight = fsdp.rank_rows(list(range(len(input_ids))), rank, size)
        loss_sum, n_targets, _ = batch_loss(model, model, {"input_ids": input_ids[rows], "labels": labels[rows]})
        _, targets = fsdp.batch_sums(loss_sum, n_targets, weight)
        fsdp.objective(loss_sum, weight, targets).backward()
        grads = {name: p.grad.full_tensor() for name, p in model.named_parameters()}
        if rank == 0:
            torch.save(grads, out)
        dist.destroy_process_group()
        code = 0
    finally:
        os._exit(code)


def _batch(n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows with 1, 2, 3... completion tokens: a mean per rank is not the batch's."""
    input_ids = torch.randint(3, 300, (n_rows, 12), generator=torch.Generator().manual_seed(0))
    labels = input_ids.clone()
    for row in range(n_rows):
        labels[row, :11 - row] = -100
    return input_ids, labels


# 5 rows: uneven shares; 3 rows on 4 ranks: one rank runs a stand-in row at weight 0.
@pytest.mark.parametrize(("ranks", "n_rows"), [(2, 5), (4, 5), (4, 3)])
def test_the_sharded_gradient_is_the_one_process_gradient_of_the_batch(tiny_model_dir, tmp_path, ranks, n_rows):
    """Exact loss reduction: the loss's scale, not only its minimum (AdamW would hide a scale error)."""
    from transformers import AutoModelForCausalLM

    from kubetune_trainer.training.loss import batch_loss

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    input_ids, labels = _batch(n_rows)
    loss_sum, n_targets, _ = batch_loss(model, model, {"input_ids": input_ids, "labels": labels})
    (loss_sum / n_targets).backward()
    context, out = multiprocessing.get_context("fork"), tmp_path / "grads.pt"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    processes = [context.Process(target=_gradient_rank, args=(rank, ranks, port, tiny_model_dir, n_rows, out)) for rank in range(ranks)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * ranks
    sharded = torch.load(out)
    for name, p in model.named_parameters():
        torch.testing.assert_close(sharded[name], p.grad, atol=1e-6, rtol=1e-4)
