"""What FSDP saves per rank: parameters + gradients + optimizer state held by each of 1, 2 and 4 ranks.

Builds, offline, a Llama from a config with random weights (hidden 256, 4 layers, MLP 768,
vocabulary 2048: about 4.2M parameters; --shape gpu_train's 1.1B where there is memory) and
synthetic prompt/completion rows (bench/gpu_train.py's builders), then trains it with kubetune's
own trainer (kubetune_trainer.cli with training.fsdp.enabled, as a pod runs it) on one process and
under `accelerate launch` with 2 and 4 CPU gloo ranks, for methods full and lora. Per run it reads
the trainer's summary: `trainingStateBytes` (per rank, the bytes of the parameter, gradient and
AdamW-state shards it holds after the first optimizer step) and the train losses; it prints per
rank count the largest rank's share of the one-process bytes and the largest loss difference
from the one-process run, then one JSON line.

    PYTHONPATH=api:operator:trainer python3 bench/fsdp_memory.py [--ranks 1,2,4] [--methods full,lora] [--steps 4]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from gpu_train import BIG, LORA, TEMPLATE, build_model, build_tokenizer, make_rows  # noqa: E402

MID = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
       "intermediate_size": 768, "vocab_size": 2048}
SHAPES = {"mid": MID, "big": BIG}


def config(method: str, data: Path, model: Path, output: Path, steps: int, batch: int) -> dict:
    return {
        "model": {"path": str(model)},
        "dataset": {"path": str(data), "promptTemplate": TEMPLATE, "completionField": "summary", "maxLength": 256},
        "method": method,
        **({"lora": {**LORA, "dropout": 0.0}} if method == "lora" else {}),  # no dropout: masks differ by rank
        "training": {"maxSteps": steps, "batchSize": batch, "learningRate": 1e-4, "logEverySteps": 1,
                     "predictionRows": 0, "fsdp": {"enabled": True}},
        "output": {"path": str(output)},
    }


def train(cfg: dict, ranks: int, workdir: Path, name: str) -> dict:
    path = workdir / f"{name}.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    module = ["-m", "kubetune_trainer.cli", "--config", str(path)]
    command = [sys.executable, *module] if ranks == 1 else [
        str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", str(ranks),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *module]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KUBETUNE_CACHE": str(workdir / "cache"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(Path(done.stdout.strip().splitlines()[-1]).read_text())


def measure(method: str, ranks_list: list[int], data: Path, model: Path, workdir: Path, steps: int, batch: int) -> dict:
    runs = {}
    for ranks in ranks_list:
        name = f"{method}-{ranks}"
        summary = train(config(method, data, model, workdir / name, steps, batch), ranks, workdir, name)
        runs[ranks] = {"bytesPerRank": summary["trainingStateBytes"],
                       "losses": [e["trainLoss"] for e in summary["history"] if "trainLoss" in e]}
    base = runs[min(runs)]
    whole = sum(base["bytesPerRank"])  # everything, as one process (the fewest ranks run) holds it
    for ranks, run in runs.items():
        run["shareOfOneProcess"] = round(max(run["bytesPerRank"]) / whole, 4)
        run["maxLossDifference"] = max(abs(a - b) for a, b in zip(run["losses"], base["losses"]))
        print(f"{method:5s} {ranks} ranks: {max(run['bytesPerRank']) / 2**20:8.2f} MiB per rank "
              f"({run['shareOfOneProcess']:.3f}x one process), losses within {run['maxLossDifference']:.1e}", file=sys.stderr)
    return {str(ranks): run for ranks, run in runs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="1,2,4")
    parser.add_argument("--methods", default="full,lora")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mid")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    ranks = sorted(int(r) for r in args.ranks.split(","))
    with tempfile.TemporaryDirectory(prefix="fsdp-bench-") as tmp:
        workdir = Path(tmp)
        rows = make_rows(args.steps * args.batch * 2 + 16, (20, 40), (5, 12))
        data = workdir / "rows.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        model = workdir / "model"
        info = build_model(SHAPES[args.shape], build_tokenizer(rows, SHAPES[args.shape]["vocab_size"]), model)
        results = {m: measure(m, ranks, data, model, workdir, args.steps, args.batch) for m in args.methods.split(",")}
    print(json.dumps({"bench": "fsdp_memory", "shape": args.shape, "parameters": info["parameters"],
                      "steps": args.steps, "batch": args.batch, "methods": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
