"""multiple-choice: each option's log-likelihood after the prompt picks the model's answer
(lm-eval's acc, and acc_norm per UTF-8 byte of the option)."""
from __future__ import annotations

from kubetune_api.catalog import EvalTask
from kubetune_api.errors import DataError
from kubetune_api.reports import Sample
from kubetune_trainer.evaluation.bootstrap import mean_of
from kubetune_trainer.evaluation.tasks.base import Item, PromptTask, Statistics, strings
from kubetune_trainer.data.rows import Row


def choice_rows(records: list[dict]) -> dict[str, list[float]]:
    """accuracy and accuracyNorm per row: 1.0 where the pick is the answer."""
    return {"accuracy": [float(r["prediction"] == r["answer"]) for r in records],
            "accuracyNorm": [float(r["predictionNorm"] == r["answer"]) for r in records]}



class MultipleChoice(PromptTask):
    kind = EvalTask.multiple_choice

    def item(self, row: Row) -> Item:
        where, name = self.where(row), self.dataset.choices_field
        choices = strings(self.field(row, name, "choices field (dataset.choicesField)"), where, name, "choices field")
        if len(choices) < 2:
            raise DataError(f"{where}: choices field '{name}' needs at least two options, got {len(choices)}")
        return Item(row.line, self.prompt(row), choices=choices, answer=self._answer(row, choices))

    def _answer(self, row: Row, choices: list[str]) -> int:
        """The answer field as an index into `choices`; it may also hold the option's text."""
        name = self.dataset.answer_field
        answer = self.field(row, name, "answer field (dataset.answerField)")
        if isinstance(answer, str) and answer in choices:
            answer = choices.index(answer)
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise DataError(f"{self.where(row)}: answer field '{name}' must be an option's index "
                            f"(0-{len(choices) - 1}) or its text, got {answer!r:.80}")
        return answer

    def records(self, model, tokenizer, items: list[Item]) -> tuple[list[dict], int]:
        from kubetune_trainer.evaluation.loglikelihood import score_choices  # torch: only once a model runs

        spec = self.config.generation
        records = score_choices(model, tokenizer, items, spec.max_input_length, spec.batch_size,
                                self.dataset.chat_template)
        return records, sum(r["truncated"] for r in records)

    def scored(self, records: list[dict], metrics: dict) -> tuple[dict[str, float], dict[str, str], Statistics]:
        statistics = {name: mean_of(rows) for name, rows in choice_rows(records).items()}
        return {name: statistic.score() for name, statistic in statistics.items()}, {}, statistics

    def samples(self, model_name: str, records: list[dict]) -> list[Sample]:
        return [self.sample(model_name, r["prompt"], r["choices"][r["prediction"]], r["choices"][r["answer"]])
                for r in records[: self.config.samples]]
