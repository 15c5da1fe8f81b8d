"""The evaluation configuration: what `kubetune-eval` runs, and the body of an EvalJob spec.

Like training.py, the single source of truth: the EvalJob spec embeds these models (the
operator resolves FineTuneJob references into paths first) and the CRD is generated from them.
"""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

from pydantic import Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from kubetune_api.base import (MAX_COLUMN, MAX_LIST, MAX_MODELS, MAX_PATH, MAX_ROWS, MAX_SEED, MAX_TEMPLATE, NAME_PATTERN, ApiModel,
                               NameList, load_model_file)
from kubetune_api.catalog import TASKS, EvalTask
from kubetune_api.conversations import ConversationsSpec, check_rows_mode
from kubetune_api.lm_eval import LmEvalSpec, check_task_inputs
from kubetune_api.sources import check_data_uri, check_model_uri
from kubetune_api.outputs import OutputSpec
from kubetune_api.training import DataFormat, Dtype
from kubetune_api.tracking import TrackingSpec


MODEL_PATH_DOC = ("Base model: a checkpoint directory, a .gguf file, pkg://<package>/<file>, hf://<org>/<name>[@<revision>] "
                  "(a Hugging Face Hub model repo) or an s3://, gs://, az:// checkpoint prefix or .gguf object.")


class EvalModel(ApiModel):
    name: str = Field(pattern=NAME_PATTERN, max_length=63, description="Label of this model in results (e.g. base, tuned).")
    path: str = Field(min_length=1, max_length=MAX_PATH, description=MODEL_PATH_DOC)
    adapter: Optional[str] = Field(None, min_length=1, max_length=MAX_PATH, description="A PEFT adapter directory applied on top of the base model.")
    dtype: Dtype = Field(Dtype.auto, description="Weight dtype for inference.")

    @field_validator("path")
    @classmethod
    def _known_source(cls, path: str) -> str:
        return check_model_uri(path, "models[].path")


class FewShotSpec(ApiModel):
    k: int = Field(ge=1, le=32, description="Shots before each item's prompt.")
    path: str = Field(
        min_length=1, max_length=MAX_PATH,
        description="JSONL file of the rows the shots come from (e.g. a dev or train split). Each shot is dataset.promptTemplate rendered on a row followed by its answer (generation: its first reference; multiple-choice: its correct option). May be dataset.path itself: an item is then never its own shot (a drawn row that is the item is replaced by one more drawn row).",
    )
    seed: int = Field(1234, ge=0, le=MAX_SEED, description="Seed drawing the k shots: the same shots, in the same order, precede every item (as MMLU-style k-shot prompts).")
    separator: str = Field("\n\n", max_length=MAX_COLUMN, description="Text after each shot (between shots, and between the last shot and the item's prompt).")


class EvalDataset(ApiModel):
    path: str = Field(min_length=1, max_length=MAX_PATH, description="JSONL file of rows to evaluate on.")
    prompt_template: Optional[str] = Field(None, min_length=1, max_length=MAX_TEMPLATE, description="Jinja template turning a row into the prompt; every variable must be a column (set this or conversations).")
    conversations: Optional[ConversationsSpec] = Field(None, description="task generation on chat rows (OpenAI chat format or ShareGPT), instead of promptTemplate, referenceFields and chatTemplate: the prompt is every turn before each row's last assistant message, rendered with the model's chat template, and the reference is that message's content.")
    reference_fields: NameList = Field(
        default_factory=list, max_length=MAX_LIST,
        description="Columns holding the reference output(s) for generation metrics; a column may also hold a list of references. Several references per row are scored by the best match (ROUGE) or jointly (BLEU).",
    )
    choices_field: Optional[str] = Field(None, min_length=1, max_length=MAX_COLUMN, description="multiple-choice: column holding the list of options; each is appended to the prompt as is (so usually starts with a space).")
    answer_field: Optional[str] = Field(None, min_length=1, max_length=MAX_COLUMN, description="multiple-choice: column holding the correct option (its index or its text).")
    text_field: Optional[str] = Field(None, min_length=1, max_length=MAX_COLUMN, description="perplexity: column holding the text to score on its own (promptTemplate is not used).")
    max_examples: Optional[int] = Field(None, ge=1, le=MAX_ROWS, description="Evaluate only the first N rows (after a seeded shuffle when shuffle is true).")
    shuffle: bool = Field(False, description="Shuffle rows with generation.seed before taking maxExamples.")
    chat_template: bool = Field(False, description="Wrap the prompt in the model's chat template as a user turn.")
    few_shot: Optional[FewShotSpec] = Field(None, description="Prepend k solved examples (shots) to every prompt (generation and multiple-choice).")

    @model_validator(mode="after")
    def _data_uris(self) -> "EvalDataset":
        check_rows_mode(self, "dataset", completion=False)
        check_data_uri(self.path, "dataset.path")
        if self.few_shot is not None:
            check_data_uri(self.few_shot.path, "dataset.fewShot.path")
        return self


class GenerationSpec(ApiModel):
    max_new_tokens: int = Field(128, ge=1, le=8192, description="Longest generated output in tokens.")
    do_sample: bool = Field(False, description="Sample instead of greedy decoding.")
    temperature: float = Field(1.0, gt=0, le=10, description="Sampling temperature (with doSample).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (with doSample).")
    top_k: int = Field(0, ge=0, le=1_000_000, description="Top-k sampling; 0 disables (with doSample).")
    stop: NameList = Field(default_factory=list, max_length=64, description="Generation stops at the first of these strings, which are cut from the output (leading whitespace of the output is skipped first, so a blank line the model opens with does not stop it).")
    batch_size: int = Field(8, ge=1, le=1024, description="Prompts per batch (left-padded).")
    max_input_length: int = Field(1024, ge=8, le=131072, description="Prompts longer than this lose their start.")
    seed: int = Field(42, ge=0, le=MAX_SEED, description="Seed for sampling and shuffling.")


class RougeTokenizer(str, Enum):
    default = "default"
    char = "char"
    whitespace = "whitespace"


class RougeSpec(ApiModel):
    tokenize: RougeTokenizer = Field(
        RougeTokenizer.default,
        description="How texts split into tokens: default (rouge-score's: lowercase ASCII letters and digits, other characters separate words, so Chinese or Japanese text gives no tokens), char (lowercased after NFKC; each Chinese or Japanese character is a token, and each run of other letters and digits, any script, is one) or whitespace (lowercased, split at whitespace; for text segmented beforehand).",
    )
    use_stemmer: bool = Field(True, description="Porter-stem tokens before matching (as rouge-score's use_stemmer); with tokenize default only.")
    confidence_interval: bool = Field(False, description="Also report bootstrap 95% confidence intervals (low/high) of each score.")
    bootstrap_samples: int = Field(1000, ge=10, le=100000, description="Bootstrap resamples for confidence intervals.")


class DeltaIntervalSpec(ApiModel):
    level: float = Field(0.95, ge=0.5, le=0.999, description="Confidence level of each delta's paired-bootstrap interval (results[].deltaLow/deltaHigh): the rows resampled alike for both models.")
    samples: int = Field(1000, ge=100, le=100000, description="Bootstrap resamples (seeded with generation.seed, so intervals repeat).")


MAX_TRAINING_FILES = 64


class ContaminationAction(str, Enum):
    off = "off"
    flag = "flag"
    refuse = "refuse"


class TrainingFile(ApiModel):
    path: str = Field(min_length=1, max_length=MAX_PATH, description="A file (or hf://, s3://, gs://, az:// URI) a compared model was trained on.")
    format: DataFormat = Field(DataFormat.auto, description="Its row format, as a FineTuneJob's dataset.format.")

    @model_validator(mode="after")
    def _data_uri(self) -> "TrainingFile":
        check_data_uri(self.path, "contamination.trainingFiles[].path")
        return self


class ContaminationSpec(ApiModel):
    action: ContaminationAction = Field(
        ContaminationAction.flag,
        description="Before any model loads, compare the evaluation rows with the training files: flag (report the overlapping rows in status.contamination), refuse (fail the job naming them) or off.")
    ngram: int = Field(13, ge=4, le=64, description="Words in a shared n-gram that marks a row as overlapping (13, as GPT-3's contamination study); n-grams that occur in more than one evaluation row are shared prompt text and do not count. A row identical to a training row (all its text, case, punctuation and spacing aside) overlaps too.")
    training_files: list[TrainingFile] = Field(
        default_factory=list, max_length=MAX_TRAINING_FILES,
        description="Training data to compare with; the operator adds the training files of every model given as fineTuneJob (its dataset.path, or each dataset.tasks[].path). Whole files count: rows a FineTuneJob split off for validation or test are in them.")


class BleuTokenizer(str, Enum):
    t13a = "13a"
    intl = "intl"
    zh = "zh"
    char = "char"
    ja_mecab = "ja-mecab"


class BleuSpec(ApiModel):
    tokenize: BleuTokenizer = Field(
        BleuTokenizer.t13a,
        description="sacreBLEU's tokenizer: 13a (its default, for languages written with spaces), intl (Unicode punctuation and symbols split off too), zh (each Chinese character a token), char (every character) or ja-mecab (Japanese words by MeCab; needs sacrebleu[ja] installed in the evaluator image).",
    )


class ExactMatchSpec(ApiModel):
    ignore_case: bool = Field(True, description="Compare case-insensitively.")
    ignore_punctuation: bool = Field(True, description="Drop punctuation before comparing.")
    ignore_articles: bool = Field(False, description="Drop English articles (a, an, the), as SQuAD's normalization does.")


DEFAULT_METRICS = ("rouge", "bleu", "exact_match")
METRICS_DESCRIPTION = "Metric names: rouge, bleu, exact_match, token_f1 (generation), accuracy (multiple-choice; also reports accuracyNorm, per byte of the option), perplexity; any other name loads through the evaluate package (generation only) when the operator allows it by name (KUBETUNE_ALLOWED_EVALUATE_METRICS; refused at apply otherwise), which needs the Hugging Face Hub or its cache."
# Suite task names: in score keys (<task>/<metric>) and file names (predictions-<task>-<model>.jsonl,
# so no '-': the task part of a file name stays unambiguous).
TASK_NAME_PATTERN = r"^[a-z0-9]([a-z0-9_]*[a-z0-9])?$"
MAX_SUITE_TASKS = 32


def check_task_dataset(task: EvalTask, dataset: EvalDataset) -> None:
    """ValueError unless `dataset` has what `task` needs (catalog.TASKS) and takes its fewShot."""
    if dataset.conversations is not None:
        if task != EvalTask.generation:
            raise ValueError(f"dataset.conversations: set but task is {task.value} (chat rows are scored by task generation)")
        for name in ("reference_fields", "few_shot"):
            if getattr(dataset, name):
                raise ValueError(f"dataset.{to_camel(name)}: not with dataset.conversations (the reference is each row's last "
                                 "assistant message and earlier turns are the context)")
        return
    for field in TASKS[task].required_fields:
        if not getattr(dataset, field):
            raise ValueError(f"dataset.{to_camel(field)} is required for task {task.value}")
    for other, info in TASKS.items():  # another task's fields would be ignored: refused instead
        for field in info.required_fields:
            if other != task and field not in TASKS[task].required_fields and getattr(dataset, field):
                raise ValueError(f"dataset.{to_camel(field)}: set but task is {task.value} (it applies to task {other.value})")
    if dataset.few_shot and task == EvalTask.perplexity:
        raise ValueError("dataset.fewShot needs a prompt with an answer: use it with generation or multiple-choice, not perplexity")


def check_lm_eval_fields(config) -> None:
    """ValueError for the fields task lm-eval does not read, when set (an EvalJob or an evaluation block)."""
    if tuple(config.metrics) != DEFAULT_METRICS:
        raise ValueError("metrics: task lm-eval reports the metrics its lm-eval tasks define; leave metrics unset")
    if config.contamination.action.value == "refuse":
        raise ValueError("contamination.action: refuse cannot be checked for task lm-eval (its rows come from lm-eval's tasks); use flag or off")


class SuiteTask(ApiModel):
    """One task of a benchmark suite: its own rows, task type, metrics and prompt."""

    name: str = Field(pattern=TASK_NAME_PATTERN, max_length=40, description="Task name in results (<task>/<metric>) and file names; lowercase letters, digits and '_'.")
    task: EvalTask = Field(EvalTask.generation, description="generation, multiple-choice or perplexity.")
    dataset: EvalDataset = Field(description="This task's rows and how they become prompts and references.")
    metrics: NameList = Field(default_factory=lambda: list(DEFAULT_METRICS), min_length=1, max_length=32, description=METRICS_DESCRIPTION)
    generation: Optional[GenerationSpec] = Field(None, description="Decoding settings for this task; unset: the top-level generation.")
    rouge: Optional[RougeSpec] = Field(None, description="ROUGE settings for this task; unset: the top-level rouge.")
    bleu: Optional[BleuSpec] = Field(None, description="BLEU settings for this task; unset: the top-level bleu.")
    exact_match: Optional[ExactMatchSpec] = Field(None, description="Exact-match normalization for this task; unset: the top-level exactMatch.")

    @model_validator(mode="after")
    def _task_fields(self) -> "SuiteTask":
        if self.task == EvalTask.lm_eval:
            raise ValueError(f"tasks[{self.name}].task: lm-eval is a top-level task (task: lm-eval with lmEval.tasks, which are a suite already)")
        check_task_dataset(self.task, self.dataset)
        return self


class EvalConfig(ApiModel):
    """Everything the evaluator needs; the EvalJob spec embeds these fields."""

    models: list[EvalModel] = Field(min_length=1, max_length=MAX_MODELS, description="Models scored side by side; deltas are against the first.")
    dataset: Optional[EvalDataset] = Field(None, description="Rows to evaluate on and how they become prompts and references (or tasks, for a suite).")
    task: EvalTask = Field(EvalTask.generation, description="generation (generate then score), multiple-choice (log-likelihood of each option), perplexity, or lm-eval (lm-evaluation-harness's tasks, spec.lmEval, run by lm-eval's own code).")
    lm_eval: Optional[LmEvalSpec] = Field(None, description="task lm-eval: the lm-evaluation-harness tasks to run on every model, instead of dataset and metrics (docs/evaljob.md).")
    metrics: NameList = Field(default_factory=lambda: list(DEFAULT_METRICS), min_length=1, max_length=32, description=METRICS_DESCRIPTION)
    tasks: Optional[list[SuiteTask]] = Field(
        None, min_length=1, max_length=MAX_SUITE_TASKS,
        description="A benchmark suite instead of dataset/task/metrics: each task is scored for every model, and status.results holds the aggregate table (<task>/<metric> and mean).")
    generation: GenerationSpec = Field(default_factory=GenerationSpec, description="Decoding settings for generation.")
    rouge: RougeSpec = Field(default_factory=RougeSpec, description="ROUGE settings.")
    bleu: BleuSpec = Field(default_factory=BleuSpec, description="BLEU settings.")
    exact_match: ExactMatchSpec = Field(default_factory=ExactMatchSpec, description="Normalization for exact match and token F1.")
    delta_interval: DeltaIntervalSpec = Field(default_factory=DeltaIntervalSpec, description="Paired-bootstrap intervals of each delta against the first model (scores that are a sum over rows: ROUGE, exact match, token F1, accuracy, perplexity; not BLEU).")
    contamination: ContaminationSpec = Field(default_factory=ContaminationSpec, description="Overlap of the evaluation rows with training data (n-grams and identical rows), checked before any model loads.")
    reuse_predictions: bool = Field(True, description="Reuse a model's predictions on a task from an earlier evaluation with the same model and adapter digests, dtype, data digests, prompt and decoding settings, library versions and device kind (cached in the runtime's model cache when it has one, else in the pod); they are scored again with this job's metrics. results[].cached says which were.")
    samples: int = Field(3, ge=0, le=50, description="Predictions per model (per task in a suite) copied into the status as samples.")
    tracking: Optional[TrackingSpec] = Field(None, description="Log the scores, deltas and their intervals (an evaluation block's EvalJob logs to its FineTuneJob's run) to an MLflow run (docs/tracking.md).")
    output: OutputSpec = Field(description="Where scores.json, report.md and predictions-<model>.jsonl (predictions-<task>-<model>.jsonl in a suite) are written.")

    @model_validator(mode="after")
    def _task_fields(self) -> "EvalConfig":
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("models[].name must be unique")
        if self.task != EvalTask.lm_eval and (self.dataset is None) == (self.tasks is None):
            raise ValueError("set exactly one of dataset (one task) and tasks (a suite)")
        if self.tasks is None:
            check_task_inputs(self.task, self.dataset is not None, self.lm_eval)
            if self.task == EvalTask.lm_eval:
                check_lm_eval_fields(self)
            else:
                check_task_dataset(self.task, self.dataset)
            return self
        tasks = [t.name for t in self.tasks]
        if len(set(tasks)) != len(tasks):
            raise ValueError("tasks[].name must be unique")
        if self.task != EvalTask.generation or tuple(self.metrics) != DEFAULT_METRICS:
            raise ValueError("task and metrics belong to dataset; with tasks, set them in each tasks[] entry")
        return self

    def task_metrics(self) -> list[tuple[str, EvalTask, list[str]]]:
        """(field, task, metric names) of the single dataset, or of each suite task."""
        if self.task == EvalTask.lm_eval:
            return []  # lm-eval's task definitions name their metrics
        if self.tasks is None:
            return [("metrics", self.task, self.metrics)]
        return [(f"tasks[{t.name}].metrics", t.task, t.metrics) for t in self.tasks]

    def task_configs(self) -> list[tuple[Optional[str], "EvalConfig"]]:
        """(suite task name, single-dataset config) of each task: [(None, self)] without a suite.
        A suite task's config takes its own settings, the top-level ones where it has none."""
        if self.tasks is None:
            return [(None, self)]
        shared = self.model_dump(exclude={"tasks"})
        return [(t.name, EvalConfig.model_validate({**shared, **t.model_dump(exclude={"name"}, exclude_none=True)}))
                for t in self.tasks]


def load_eval_config(path: str | Path) -> EvalConfig:
    return load_model_file(EvalConfig, path)
