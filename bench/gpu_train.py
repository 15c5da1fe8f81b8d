"""GPU proof of the kubetune trainer: LoRA, QLoRA and full fine-tuning steps of a 1B-class Llama in bf16.

Builds, offline, a Llama from a config with random weights (hidden 2048, 16 layers, 32 heads, 8 KV
heads, MLP 8192, vocabulary 32000: 1.10B parameters; saved in bf16) and a byte-level BPE tokenizer
trained on the synthetic words, writes seeded synthetic prompt/completion rows of about 300-500
tokens, and trains each method with kubetune's own trainer (kubetune_trainer.cli, as a pod runs it,
in a subprocess per method; loaded with dtype auto = bf16 on CUDA, Accelerate bf16 autocast).
Per method it prints real (non-padding) tokens/s over the whole run (the trainer's summary) and in
steady state (from the trainer's progress reports, after the first logged step), MFU against the
H200's dense bf16 peak (989 TFLOP/s datasheet) and against the ~790 TFLOP/s bf16 matmul rate measured
on these machines, and torch.cuda.max_memory_allocated of the trainer's process. Ends with one JSON line.

FLOPs per token: 6N for full fine-tuning and 4N for LoRA/QLoRA (frozen weights get no weight
gradients; LoRA's own FLOPs are negligible), N the weights of every matmul except the untied LM head,
which kubetune applies to the completion positions only (kubetune_trainer.training.loss), so it counts at
its share of the tokens; plus causal attention 6*L*d*T (forward 2*L*d*T, backward twice that),
T the token-weighted mean row length. Recomputation (the loss's checkpointed head) is not counted.

    PYTHONPATH=api:operator:trainer python3 bench/gpu_train.py [--tiny] [--methods lora,full,qlora]
        [--steps 60] [--batch 32] [--qlora-path DIR] [--out DIR]

--tiny: a tiny model on CPU (the same code path, seconds), to test the script without a GPU.
qlora needs bitsandbytes and CUDA (the trainer refuses it otherwise): skipped with the reason where absent.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

H200_PEAK_TFLOPS, H200_MEASURED_TFLOPS = 989.0, 790.0
BIG = {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
       "intermediate_size": 8192, "vocab_size": 32000}
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 128, "vocab_size": 2048}
TEMPLATE = "Summarize the report below in a few sentences.\n\nReport:\n{{ report }}\n\nSummary:"
LORA = {"r": 16, "alpha": 32, "dropout": 0.05,
        "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
LEARNING_RATE = {"lora": 2e-4, "qlora": 2e-4, "full": 1e-5}
FLOPS_PER_PARAM = {"lora": 4, "qlora": 4, "full": 6}
REPORT_PREFIX = "kubetune-report "  # kubetune_api.wire.REPORT_PREFIX (checked in main)


# ---- synthetic words, tokenizer, rows, model -------------------------------------------------

def make_words(n: int, rng: random.Random) -> list[str]:
    """n distinct pronounceable pseudo-words of 1-4 syllables."""
    onsets, vowels = "b c d f g h k l m n p r s t v w z br ch st tr pl".split(), "a e i o u ai ea ou".split()
    words: dict[str, None] = {}
    while len(words) < n:
        words.setdefault("".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(rng.randint(1, 4))))
    return list(words)


def sentence(words: list[str], cum_weights: list[float], rng: random.Random, n: int) -> str:
    text = " ".join(rng.choices(words, cum_weights=cum_weights, k=n))
    return text[0].upper() + text[1:] + "."


def make_rows(n_rows: int, prompt_words: tuple[int, int], completion_words: tuple[int, int], seed: int = 0) -> list[dict]:
    """Seeded synthetic reports and summaries, words drawn Zipf-like from a fixed vocabulary."""
    rng = random.Random(seed)
    words = make_words(3000, rng)
    weights = list(itertools.accumulate(1.0 / (rank + 10) for rank in range(len(words))))

    def text(lo: int, hi: int) -> str:
        total, parts = rng.randint(lo, hi), []
        while total > 0:
            k = min(total, rng.randint(8, 20))
            parts.append(sentence(words, weights, rng, k))
            total -= k
        return " ".join(parts)

    return [{"report": text(*prompt_words), "summary": " " + text(*completion_words)} for _ in range(n_rows)]


def build_tokenizer(rows: list[dict], vocab_size: int):
    """A byte-level BPE trained on the rows (BOS added like Llama; no pad token: the trainer uses EOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator((TEMPLATE + r["report"] + r["summary"] for r in rows[:400]), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def build_model(shape: dict, tokenizer, directory: Path) -> dict:
    """The Llama with random weights (on the GPU where there is one: faster), saved in bf16."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**shape, max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "matmulParameters": sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)),
            "headParameters": model.get_output_embeddings().weight.numel()}


def row_lengths(rows: list[dict], tokenizer) -> dict:
    """T, the token-weighted mean row length (BOS, prompt, completion, EOS), the mean, and the
    fraction of tokens that are completion targets (completion and EOS)."""
    lengths = [len(tokenizer(TEMPLATE.replace("{{ report }}", r["report"]) + r["summary"]).input_ids) + 1 for r in rows]
    targets = sum(len(tokenizer(r["summary"]).input_ids) for r in rows)  # BOS dropped, EOS added: same count
    return {"attentionLength": sum(n * n for n in lengths) / sum(lengths), "meanLength": sum(lengths) / len(lengths),
            "completionFraction": targets / sum(lengths)}


# ---- one trainer run -------------------------------------------------------------------------

def training_config(method: str, data: Path, model: Path, output: Path, steps: int, batch: int, max_length: int) -> dict:
    return {
        "model": {"path": str(model)},
        "dataset": {"path": str(data), "promptTemplate": TEMPLATE, "completionField": "summary",
                    "validationRatio": 0.02, "testRatio": 0.02, "maxLength": max_length},
        "method": method,
        **({"lora": LORA} if method in ("lora", "qlora") else {}),
        "training": {"maxSteps": steps, "batchSize": batch, "learningRate": LEARNING_RATE[method],
                     "logEverySteps": 2, "predictionRows": 0},
        "output": {"path": str(output)},
    }


def child_train(config: Path, result: Path) -> int:
    """kubetune-train's main() in this process, then its peak memory: what the trainer does not report."""
    import torch

    from kubetune_trainer.cli import main

    code = main(["--config", str(config)])
    info = {"code": code, "peakRssBytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "versions": versions()}
    if torch.cuda.is_available():
        info.update(peakAllocatedBytes=torch.cuda.max_memory_allocated(), peakReservedBytes=torch.cuda.max_memory_reserved(),
                    gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda)
    result.write_text(json.dumps(info), encoding="utf-8")
    return code


def versions() -> dict:
    from importlib import metadata

    found = {}
    for name in ("torch", "transformers", "peft", "accelerate", "tokenizers", "bitsandbytes", "kernels", "pydantic"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def report_points(log: str) -> list[tuple[int, int, float]]:
    """(step, trainTokens, trainSeconds) of each progress report line the trainer printed."""
    points = []
    for line in log.splitlines():
        if line.startswith(REPORT_PREFIX):
            progress = json.loads(line[len(REPORT_PREFIX):]).get("progress", {})
            if progress.get("step"):
                points.append((progress["step"], progress["trainTokens"], progress["trainSeconds"]))
    return points


def run_method(method: str, config: dict, workdir: Path, out: Path, extra_path: str | None, timeout: float) -> dict:
    """One trainer subprocess (with `extra_path` first on its PYTHONPATH); its output goes to OUT/trainer-<method>.log."""
    import yaml

    path, result, log = workdir / f"{method}.yaml", workdir / f"{method}-result.json", out / f"trainer-{method}.log"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KUBETUNE_CACHE": str(workdir / "cache"), "HF_HOME": str(workdir / "hf"),
           "KUBETUNE_TERMINATION_LOG": str(workdir / f"{method}-termination"), "PYTHONUNBUFFERED": "1"}
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra_path, env.get("PYTHONPATH")]))
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        try:
            code = subprocess.run([sys.executable, __file__, "--child-train", str(path), str(result)],
                                  stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = f"timeout after {timeout:.0f}s"
    wall, text = time.perf_counter() - started, log.read_text(encoding="utf-8", errors="replace")
    if code or not result.exists():
        print(f"{method}: kubetune-train FAILED ({code}) after {wall:.0f}s:\n{text[-3000:]}", flush=True)
        return {"method": method, "error": f"exit {code}", "errorTail": text[-1500:]}
    info = json.loads(result.read_text())
    summary = json.loads((Path(config["output"]["path"]) / "training_summary.json").read_text())
    return {"method": method, "wallSeconds": round(wall, 1), "points": report_points(text), "summary": summary, **info}


# ---- numbers ---------------------------------------------------------------------------------

def numbers(r: dict, model: dict, shape: dict, length: float, cuda: bool) -> dict:
    throughput, points = r["summary"]["throughput"], r["points"]
    whole = throughput["trainTokens"] / throughput["trainSeconds"]
    first, last = (points[0], points[-1]) if len(points) >= 2 else (None, None)
    steady = ((last[1] - first[1]) / (last[2] - first[2]) if first and last[2] > first[2] else None)
    # The LM head projects only the completion positions (kubetune_trainer.training.loss), the other weights every token.
    weights = model["matmulParameters"] - model["headParameters"] * (1 - model["completionFraction"])
    flops = FLOPS_PER_PARAM[r["method"]] * weights + 6 * shape["num_hidden_layers"] * shape["hidden_size"] * length
    rate = steady or whole

    def mfu(tflops: float) -> float:
        return round(rate * flops / (tflops * 1e12), 4)

    out = {"tokensPerSecond": round(rate, 1), "tokensPerSecondWholeRun": round(whole, 1),
           "steadyFromStep": first[0] if steady else None, "steps": r["summary"]["progress"]["step"],
           "trainTokens": throughput["trainTokens"], "trainSeconds": throughput["trainSeconds"],
           "firstStepsSeconds": first[2] if steady else None, "gflopsPerToken": round(flops / 1e9, 3),
           "finalTrainLoss": round(r["summary"]["finalTrainLoss"], 4), "mixedPrecision": r["summary"]["mixedPrecision"],
           "trainable": r["summary"]["parameters"]["trainable"], "wallSeconds": r["wallSeconds"],
           "peakRssGiB": round(r["peakRssBytes"] / 2**30, 2)}
    if cuda:
        out.update(mfuVsPeak989=mfu(H200_PEAK_TFLOPS), mfuVsMeasured790=mfu(H200_MEASURED_TFLOPS),
                   peakAllocatedGiB=round(r["peakAllocatedBytes"] / 2**30, 2),
                   peakReservedGiB=round(r["peakReservedBytes"] / 2**30, 2))
    return out


def print_row(method: str, n: dict) -> None:
    mfu = f"{n['mfuVsPeak989']:>6.1%} {n['mfuVsMeasured790']:>6.1%}" if "mfuVsPeak989" in n else f"{'-':>6} {'-':>6}"
    memory = f"{n['peakAllocatedGiB']:>8.2f}" if "peakAllocatedGiB" in n else f"{'-':>8}"
    print(f"{method:<6} {n['tokensPerSecond']:>10.1f} {n['tokensPerSecondWholeRun']:>10.1f} {mfu} {memory} "
          f"{n['peakRssGiB']:>7.2f} {n['steps']:>5} {n['trainTokens']:>8} {n['finalTrainLoss']:>8.4f} {n['wallSeconds']:>6.0f}", flush=True)


def qlora_missing(cuda: bool, qlora_path: Path | None) -> str | None:
    import importlib.util

    if not cuda:
        return "no CUDA GPU (bitsandbytes 4-bit needs one)"
    if not (qlora_path and (qlora_path / "bitsandbytes").is_dir()) and importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed"
    return None


# ---- main ------------------------------------------------------------------------------------

def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model, short rows, a few steps (CPU test)")
    parser.add_argument("--methods", default="lora,full,qlora", help="comma-separated: lora, full, qlora")
    parser.add_argument("--child-timeout", type=float, default=300, help="seconds one trainer run may take (default 300)")
    parser.add_argument("--steps", type=int, help="optimizer steps per method (default 60; --tiny 6)")
    parser.add_argument("--batch", type=int, help="rows per step (default 32; --tiny 4)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "."),
                        help="where the logs and gpu_train.json go (default $OUT, else .)")
    parser.add_argument("--qlora-path", type=Path,
                        help="a directory holding bitsandbytes, put on the PYTHONPATH of the qlora run only (so a broken "
                             "bitsandbytes cannot affect the lora and full runs, which peft would otherwise import it in)")
    parser.add_argument("--child-train", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-build", nargs=2, type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def child_build(rows_path: Path, model_dir: Path, tiny: bool) -> None:
    rows = [json.loads(line) for line in rows_path.read_text(encoding="utf-8").splitlines()]
    shape = TINY if tiny else BIG
    tokenizer = build_tokenizer(rows, min(shape["vocab_size"], 4096))
    info = build_model(shape, tokenizer, model_dir)
    info.update(vocabulary=len(tokenizer), **row_lengths(rows, tokenizer))
    (model_dir / "bench-info.json").write_text(json.dumps(info), encoding="utf-8")


def prepare(args, workdir: Path) -> tuple[dict, Path, Path]:
    """Rows and model (the model in a child: the parent never holds CUDA memory)."""
    steps, batch = args.steps or (6 if args.tiny else 60), args.batch or (4 if args.tiny else 32)
    words = ((20, 40), (5, 12)) if args.tiny else ((190, 290), (25, 55))
    rows = make_rows(round(steps * batch / 0.96) + 8, *words)
    data, model_dir = workdir / "rows.jsonl", workdir / "model"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    started = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--child-build", str(data), str(model_dir)] + (["--tiny"] if args.tiny else []),
                   check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    info = json.loads((model_dir / "bench-info.json").read_text())
    info.update(steps=steps, batch=batch, rows=len(rows), buildSeconds=round(time.perf_counter() - started, 1))
    return info, data, model_dir


def main() -> int:
    args = parse_args()
    if args.child_train:
        return child_train(*args.child_train)
    if args.child_build:
        return child_build(*args.child_build, tiny=args.tiny)
    from kubetune_api.wire import REPORT_PREFIX as prefix

    assert prefix == REPORT_PREFIX, prefix
    import torch

    cuda, shape = torch.cuda.is_available(), (TINY if args.tiny else BIG)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu-train-") as tmp:
        workdir = Path(tmp)
        info, data, model_dir = prepare(args, workdir)
        print(f"Llama {shape}: {info['parameters'] / 1e9:.3f}B parameters, {info['matmulParameters'] / 1e9:.3f}B in matmuls; "
              f"tokenizer {info['vocabulary']} tokens; {info['rows']} rows of {info['meanLength']:.0f} tokens on average "
              f"(T={info['attentionLength']:.0f}, {info['completionFraction']:.0%} completion); "
              f"batch {info['batch']}, {info['steps']} steps; built in {info['buildSeconds']}s", flush=True)
        print(f"{'method':<6} {'tok/s':>10} {'tok/s all':>10} {'MFU989':>6} {'MFU790':>6} {'peakGiB':>8} {'rssGiB':>7} "
              f"{'steps':>5} {'tokens':>8} {'loss':>8} {'wall':>6}", flush=True)
        results, device = {}, {}
        for method in args.methods.split(","):
            missing = qlora_missing(cuda, args.qlora_path) if method == "qlora" else None
            if missing:
                print(f"{method:<6} not run: {missing}", flush=True)
                results[method] = {"notRun": missing}
                continue
            config = training_config(method, data, model_dir, workdir / f"out-{method}", info["steps"], info["batch"], 512)
            extra = str(args.qlora_path.resolve()) if method == "qlora" and args.qlora_path else None
            r = run_method(method, config, workdir, args.out, extra, args.child_timeout)
            if "error" in r:
                results[method] = r
                continue
            results[method] = numbers(r, info, shape, info["attentionLength"], cuda)
            device = {k: r[k] for k in ("gpu", "cuda", "versions") if k in r}
            print_row(method, results[method])
    line = {"model": {**shape, "parameters": info["parameters"], "matmulParameters": info["matmulParameters"]},
            "batch": info["batch"], "steps": info["steps"], "meanRowTokens": round(info["meanLength"], 1),
            "attentionLength": round(info["attentionLength"], 1), "completionFraction": round(info["completionFraction"], 3),
            "peakTflops": H200_PEAK_TFLOPS, "measuredTflops": H200_MEASURED_TFLOPS, **device,
            "date": time.strftime("%Y-%m-%d"), "methods": results}
    (args.out / "gpu_train.json").write_text(json.dumps(line, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(line, separators=(",", ":")), flush=True)
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
