"""generation: the model writes an answer to each prompt, scored against the references by
ROUGE, BLEU, exact match and token F1 (built in) or an `evaluate` metric from the Hub."""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

from kubetune_api.catalog import EvalTask
from kubetune_api.reports import Sample
from kubetune_trainer.evaluation import textmetrics
from kubetune_trainer.evaluation.metrics import hub_scores
from kubetune_trainer.evaluation.bootstrap import mean_of
from kubetune_trainer.evaluation.rouge import rouge_with_rows
from kubetune_trainer.evaluation.tasks.base import Item, PromptTask, Statistics, strings
from kubetune_trainer.data.chat import RenderedChat
from kubetune_trainer.data.chat_masks import generation_prompt
from kubetune_trainer.data.conversations import read_conversation, reference
from kubetune_trainer.data.rows import Row

Predictions, References = list[str], list[list[str]]
Scored = tuple[dict[str, float], Optional[str], dict[str, list[float]]]


class Generation(PromptTask):
    kind = EvalTask.generation

    def item(self, row: Row) -> Item:
        where = self.where(row)
        if self.dataset.conversations is not None:  # context: the turns before the last assistant message
            conversation = read_conversation(self.dataset.conversations, row.values, where)
            return Item(row.line, references=[reference(conversation, where)], conversation=conversation)
        references = [reference for name in self.dataset.reference_fields
                      for reference in strings(self.field(row, name, "reference field (dataset.referenceFields)"),
                                               where, name, "reference field")]
        return Item(row.line, self.prompt(row), references=references)

    def records(self, model, tokenizer, items: list[Item]) -> tuple[list[dict], int]:
        from kubetune_trainer.evaluation.generation import generate  # torch: only once a model runs

        prompts = [i.prompt for i in items]
        if self.dataset.conversations is not None:
            prompts = [RenderedChat(generation_prompt(tokenizer, i.conversation, f"{self.dataset.path} line {i.line}"))
                       for i in items]
        outputs, truncated = generate(model, tokenizer, prompts, self.config.generation,
                                      self.dataset.chat_template or self.dataset.conversations is not None)
        items = [replace(i, prompt=p) for i, p in zip(items, prompts)]
        return [{"line": i.line, "prompt": i.prompt, "prediction": o, "references": i.references}
                for i, o in zip(items, outputs)], truncated

    def scored(self, records: list[dict], metrics: dict) -> tuple[dict[str, float], dict[str, str], Statistics]:
        predictions, references = [r["prediction"] for r in records], [r["references"] for r in records]
        scores, signatures, statistics = {}, {}, {}
        for name, hub_metric in metrics.items():
            if name in self.builtin_metrics():
                values, signature, rows = getattr(self, f"_{name}")(predictions, references)
                scores.update(values)
                statistics.update({key: mean_of(per_row) for key, per_row in rows.items()})
                if signature:
                    signatures[name] = signature
            else:
                scores.update(hub_scores(name, hub_metric, predictions, references))
        return scores, signatures, statistics

    def samples(self, model_name: str, records: list[dict]) -> list[Sample]:
        return [self.sample(model_name, r["prompt"], r["prediction"], r["references"][0])
                for r in records[: self.config.samples]]

    # The built-in metrics, one method per name in kubetune_api.catalog.TASKS[generation].metrics:
    # (scores, signature or None, per-row values of the scores that are a mean over rows).

    def _rouge(self, predictions: Predictions, references: References) -> Scored:
        return rouge_with_rows(predictions, references, self.config.rouge, self.config.generation.seed)

    def _bleu(self, predictions: Predictions, references: References) -> Scored:
        score, signature = textmetrics.bleu(predictions, references, self.config.bleu.tokenize.value)
        return {"bleu": score}, signature, {}  # corpus n-gram counts: not a mean over rows

    def _exact_match(self, predictions: Predictions, references: References) -> Scored:
        rows = textmetrics.exact_match_rows(predictions, references, self.config.exact_match)
        return {"exactMatch": sum(rows) / len(rows)}, None, {"exactMatch": rows}

    def _token_f1(self, predictions: Predictions, references: References) -> Scored:
        rows = textmetrics.token_f1_rows(predictions, references, self.config.exact_match)
        return {"tokenF1": sum(rows) / len(rows)}, None, {"tokenF1": rows}
