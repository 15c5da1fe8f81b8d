"""perplexity: each row's text scored on its own (no prompt), token-weighted over the corpus."""
from __future__ import annotations

import math

from kubetune_api.catalog import EvalTask
from kubetune_api.errors import DataError
from kubetune_trainer.evaluation.bootstrap import perplexity_of
from kubetune_trainer.evaluation.tasks.base import Item, Statistics, Task
from kubetune_trainer.data.rows import Row


def perplexity_scores(records: list[dict]) -> dict[str, float]:
    """exp(total NLL / total predicted tokens) over all records."""
    tokens = sum(r["tokens"] for r in records)
    if tokens == 0:
        raise DataError("perplexity: no text has a token to predict (each needs at least two tokens)")
    nll = sum(r["nll"] for r in records) / tokens
    return {"perplexity": math.exp(nll), "nll": nll, "tokens": float(tokens)}


class Perplexity(Task):
    kind = EvalTask.perplexity
    detail_keys = frozenset({"nll", "tokens"})

    def item(self, row: Row) -> Item:
        name = self.dataset.text_field
        text = self.field(row, name, "text field (dataset.textField)")
        if not isinstance(text, str) or not text:
            raise DataError(f"{self.where(row)}: text field '{name}' must be a non-empty string")
        return Item(row.line, text=text)

    def records(self, model, tokenizer, items: list[Item]) -> tuple[list[dict], int]:
        from kubetune_trainer.evaluation.loglikelihood import score_texts  # torch: only once a model runs

        spec = self.config.generation
        return score_texts(model, tokenizer, items, spec.max_input_length, spec.batch_size), 0

    def scored(self, records: list[dict], metrics: dict) -> tuple[dict[str, float], dict[str, str], Statistics]:
        statistic = perplexity_of([r["nll"] for r in records], [r["tokens"] for r in records])
        return perplexity_scores(records), {}, {"perplexity": statistic}
