"""The check phase for chat rows: each conversation rendered with the model's own chat template.

Whether a template can mark a row's assistant turns (prefix-stable renders, tools rendered, no
system role refused, no special-token text in the row) depends on the model, so the check
phase loads the model's tokenizer (not the model) for datasets with `conversations` and renders
the first rows of every file the way training (or evaluation) will; a row that cannot be marked
fails here, naming file and row, before any weights load. Light at import.
"""
from __future__ import annotations

from kubetune_api.evaluation import EvalConfig
from kubetune_api.training import TrainingConfig
from kubetune_trainer.data.chat_masks import generation_prompt, model_tokenizer, special_texts, tokenize_conversation
from kubetune_trainer.data.conversations import read_conversation
from kubetune_trainer.data.rows import ExampleMaker, read_rows, retention_source, task_sources


def chat_sources(config: TrainingConfig) -> list:
    """The dataset's sources (single task, mixture tasks, retention) whose rows are conversations."""
    sources = [*task_sources(config.dataset), retention_source(config.dataset)]
    return [s for s in sources if s is not None and getattr(s.spec, "conversations", None) is not None]


def check_chat_rows(config: TrainingConfig, max_rows: int) -> int:
    """Renders and masks the first `max_rows` rows of every chat file; returns the rows checked."""
    sources = chat_sources(config)
    if not sources:
        return 0
    tokenizer = model_tokenizer(config.model.path)
    specials = special_texts(tokenizer)
    checked = 0
    for source in sources:
        for path in filter(None, (source.spec.path, source.validation_path, source.test_path)):
            make = ExampleMaker(source.spec, path, source.field, source.name)
            for row in read_rows(path, source.spec.format, max_rows):
                example = make(row)
                tokenize_conversation(tokenizer, example.conversation, example.where, specials)
                checked += 1
    return checked


def check_chat_eval(config: EvalConfig, max_rows: int) -> int:
    """Renders the generation prompt of the first `max_rows` chat rows of each task, per model."""
    from kubetune_trainer.evaluation.dataset import select_rows

    parts = [part for _, part in config.task_configs() if part.dataset is not None and part.dataset.conversations is not None]
    checked = 0
    for model in config.models if parts else []:
        tokenizer = model_tokenizer(model.path, f"models[{model.name}].path")
        for part in parts:
            for row in select_rows(read_rows(part.dataset.path), part)[:max_rows]:
                where = f"{part.dataset.path} line {row.line}"
                generation_prompt(tokenizer, read_conversation(part.dataset.conversations, row.values, where), where)
                checked += 1
    return checked
