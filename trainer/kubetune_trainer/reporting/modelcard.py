"""The model card (README.md in output.path): what was trained, on what, how well, how to load it."""
from __future__ import annotations

from pathlib import Path


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _how_to_load(model_path: Path, base: str) -> str:
    if (model_path / "adapter_config.json").is_file():
        return (
            "from peft import AutoPeftModelForCausalLM\n"
            "from transformers import AutoTokenizer\n\n"
            f"model = AutoPeftModelForCausalLM.from_pretrained(\"{model_path}\")  # loads the base from {base}\n"
            f"tokenizer = AutoTokenizer.from_pretrained(\"{model_path}\")\n"
        )
    return (
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f"model = AutoModelForCausalLM.from_pretrained(\"{model_path}\")\n"
        f"tokenizer = AutoTokenizer.from_pretrained(\"{model_path}\")\n"
    )


def _lineage(lineage: dict) -> str:
    """The Lineage section: every data file by content, the base model's digest, config hash, versions."""
    files = "\n".join(f"| {d['role']} | `{d['uri']}` | `{d['sha256']}` | {_fmt(d.get('rows'))} |" for d in lineage["datasets"])
    model = lineage.get("model") or {}
    versions = ", ".join(f"{k} {v}" for k, v in (lineage.get("versions") or {}).items())
    return f"""## Lineage

Same lineage and seed, same loss curve.

| data | uri | sha256 | rows |
|---|---|---|---|
{files}

- Base model: `{model.get('uri')}`, digest `{model.get('digest')}` ({model.get('files')} file(s))
- Config hash: `{lineage.get('configHash')}`
- Versions: {versions}
"""


def _rows_line(dataset: dict) -> str:
    """How rows became training text: chat rows through the chat template, or the prompt template."""
    if dataset.get("conversations"):
        return (f"Conversations ({dataset['conversations']}) rendered with the model's chat template, "
                "loss on assistant turns only")
    return f"Prompt template: `{dataset.get('promptTemplate')!r}`, completion field `{dataset.get('completionField')}`"


def write_model_card(path: Path, summary: dict) -> None:
    config, metrics, params = summary["config"], summary["metrics"], summary["parameters"]
    model_path = Path(summary["artifacts"]["modelPath"])
    data = summary["data"]
    rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in metrics.items())
    text = f"""# Fine-tuned {config['model']['path']}

Trained by kubetune with method `{config['method']}`: {params['trainable']:,} of {params['total']:,} parameters trainable.

- Base model: `{config['model']['path']}` (checkpoint `{summary['model']['checkpoint']}`)
- Data: `{config['dataset']['path']}`; {data.get('train')} training, {data.get('validation')} validation, {data.get('test')} test rows
- {_rows_line(config['dataset'])}
- Training: {summary['progress']['step']} optimizer steps, batch {config['training']['batchSize']} x {config['training']['gradientAccumulationSteps']} accumulation, learning rate {config['training']['learningRate']}, seed {config['training']['seed']}
- Throughput: {summary['throughput']['tokensPerSecond']} tokens/s over {summary['throughput']['trainSeconds']} s

## Metrics (completion tokens only)

| metric | value |
|---|---|
{rows}

Sample predictions on test rows: `predictions.jsonl`. Everything above in full: `training_summary.json`.

{_lineage(summary["lineage"])}
## Loading

```python
{_how_to_load(model_path, summary['model']['checkpoint'])}```
"""
    path.write_text(text, encoding="utf-8")
