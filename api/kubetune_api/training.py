"""The training configuration: what `kubetune-train` runs, and the training part of a
FineTuneJob spec.

The single source of truth for what the trainer accepts: the FineTuneJob spec embeds these
models and the CRD is generated from them, so a spec the API server accepts is a config the
trainer understands.
"""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

from pydantic import Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from kubetune_api.base import (MAX_COLUMN, MAX_LIST, MAX_PATH, MAX_ROWS, MAX_SEED, MAX_STEPS, MAX_TEMPLATE, MAX_TOKENS, ApiModel,
                               NameList, load_model_file)
from kubetune_api.catalog import Method
from kubetune_api.conversations import ConversationsSpec, check_rows_mode
from kubetune_api.outputs import TrainingOutputSpec
from kubetune_api.sharding import FsdpSpec, check_fsdp
from kubetune_api.sources import check_data_uri, check_model_uri
from kubetune_api.tracking import TrackingSpec


class Dtype(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class ModelSource(ApiModel):
    path: str = Field(
        description=(
            "Where the base model is: a directory with a Hugging Face checkpoint, a .gguf file, "
            "pkg://<python-package>/<file> for a model file shipped inside a Python package installed in the "
            "trainer image, hf://<org>/<name>[@<revision>] for a model repo on the Hugging Face Hub (downloaded "
            "into the runtime's model cache, once per commit), or s3://, gs://, az:// for a checkpoint directory "
            "(a prefix) or a .gguf object in an object store. Relative paths resolve against the container's "
            "working directory."
        ),
        min_length=1, max_length=MAX_PATH,
    )
    dtype: Dtype = Field(Dtype.auto, description="Weight dtype for training; auto picks bfloat16 on GPUs that support it, else float32.")

    @field_validator("path")
    @classmethod
    def _known_source(cls, path: str) -> str:
        return check_model_uri(path, "model.path")


class DataFormat(str, Enum):
    auto = "auto"
    jsonl = "jsonl"
    csv = "csv"
    parquet = "parquet"
    hf = "hf"


class LengthPolicy(str, Enum):
    truncate = "truncate"
    drop = "drop"


def _path_field(what: str, required: bool = True):
    description = (
        f"{what}: a local or PVC path, an http(s):// URL, an object-store URI (s3://, gs://, az://; the image "
        "needs the matching fsspec package: s3fs, gcsfs, adlfs), or hf://<org>/<name>[@<revision>]/<file> for a "
        "file in a Hugging Face Hub dataset repo. Relative paths resolve against the container's working directory."
    )
    return Field(... if required else None, min_length=1, max_length=MAX_PATH, description=description)


def _format_field():
    return Field(
        DataFormat.auto,
        description=(
            "Row format: jsonl (one JSON object per line), csv (a header row, then rows), parquet, hf (a directory "
            "written by the datasets library's save_to_disk), or auto: by extension (.jsonl/.json/.ndjson, .csv, "
            ".parquet/.pq; .gz/.bz2/.xz/.zst decompressed) and hf for a directory. The same format applies to the "
            "explicit validation and test files."
        ),
    )


def _prompt_template_field(required: bool):
    return Field(
        ... if required else None,
        min_length=1, max_length=MAX_TEMPLATE,
        description=(
            "Jinja template that turns a row into the prompt, e.g. 'Summarize:\\n{{ dialogue }}\\nSummary:'. Every "
            "variable must be a column of the data and have a value (not null)."
        ),
    )


def _completion_field_field():
    return Field(None, min_length=1, max_length=MAX_COLUMN, description="Column holding the completion the model learns to produce (set this or completionTemplate).")


def _completion_template_field():
    return Field(None, min_length=1, max_length=MAX_TEMPLATE, description="Jinja template that builds the completion from the row's columns (set this or completionField).")


def _chat_template_field():
    return Field(
        False,
        description=(
            "Wrap the rendered prompt as a user turn in the model tokenizer's chat template (with the assistant "
            "turn opened); the model must ship a chat template."
        ),
    )


def _check_data_uris(spec, where: str) -> None:
    """Every hf:// or object-store URI among the spec's file fields has its shape."""
    for name in ("path", "validation_path", "test_path"):
        check_data_uri(getattr(spec, name, None), f"{where}.{to_camel(name)}")


def _conversations_field():
    return Field(None, description="Rows that are conversations (OpenAI chat format or ShareGPT), rendered with the model's chat template, loss on assistant turns only; instead of promptTemplate, completionField/completionTemplate and chatTemplate (docs/finetunejob.md#conversations-datasetconversations).")


class PromptedRows(ApiModel):
    """Rows from a file and how each becomes a prompt and a completion."""

    path: str = _path_field("The rows")
    format: DataFormat = _format_field()
    prompt_template: Optional[str] = _prompt_template_field(required=False)
    completion_field: Optional[str] = _completion_field_field()
    completion_template: Optional[str] = _completion_template_field()
    chat_template: bool = _chat_template_field()
    conversations: Optional[ConversationsSpec] = _conversations_field()

    def _where(self) -> str:
        raise NotImplementedError

    @model_validator(mode="after")
    def _one_completion(self) -> "PromptedRows":
        check_rows_mode(self, self._where())
        _check_data_uris(self, self._where())
        return self


class TaskSpec(PromptedRows):
    """One task of a multi-task mixture: its own rows, template and weight."""

    name: str = Field(
        min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Task name, unique in the mixture; per-task metrics are reported under it.",
    )
    path: str = _path_field("The task's rows")
    weight: float = Field(
        1.0, gt=0, le=1e6,
        description="Mixing weight: the task gets weight / (sum of weights) of the mixture's training examples.",
    )
    validation_path: Optional[str] = _path_field("Explicit validation rows for this task (not cut from path)", required=False)
    test_path: Optional[str] = _path_field("Explicit test rows for this task (not cut from path)", required=False)
    max_examples: Optional[int] = Field(
        None, ge=1, le=MAX_ROWS,
        description="Cap on the task's training pool (rows after the validation/test cut) before mixing.",
    )

    def _where(self) -> str:
        return f"dataset.tasks[{self.name}]"


class RetentionSpec(PromptedRows):
    """Examples of other tasks, scored before and after training to measure forgetting."""

    path: str = _path_field("Retention rows (examples of other tasks the model should keep doing well)")
    max_examples: int = Field(200, ge=1, le=1_000_000, description="Use at most this many retention rows (the first ones).")

    def _where(self) -> str:
        return "dataset.retention"


_SINGLE_TASK_FIELDS = ("path", "format", "prompt_template", "completion_field", "completion_template", "chat_template",
                       "conversations", "validation_path", "test_path")


class DatasetSpec(ApiModel):
    path: Optional[str] = _path_field("The rows to train on (single task; or use tasks)", required=False)
    format: DataFormat = _format_field()
    prompt_template: Optional[str] = _prompt_template_field(required=False)
    completion_field: Optional[str] = _completion_field_field()
    completion_template: Optional[str] = _completion_template_field()
    chat_template: bool = _chat_template_field()
    conversations: Optional[ConversationsSpec] = _conversations_field()
    validation_path: Optional[str] = _path_field("Explicit validation rows (then none are cut from path)", required=False)
    test_path: Optional[str] = _path_field("Explicit test rows (then none are cut from path)", required=False)
    tasks: Optional[list[TaskSpec]] = Field(
        None, min_length=1, max_length=256,
        description=(
            "A multi-task mixture instead of the single-task fields (path, format, promptTemplate, completionField, "
            "completionTemplate, chatTemplate, conversations, validationPath, testPath). Each task's validation and test rows are "
            "kept apart and scored per task; training examples are mixed by weight."
        ),
    )
    mixture_size: Optional[int] = Field(
        None, ge=1, le=MAX_ROWS,
        description=(
            "Training examples in the mixture (default: the tasks' training pools summed). Each task gets "
            "round(mixtureSize * weight / sum of weights), drawn with training.seed: without replacement when its "
            "pool is large enough, else its whole pool repeated and the rest drawn."
        ),
    )
    validation_ratio: float = Field(0.1, ge=0.0, lt=1.0, description="Fraction of rows held out for validation (when no validationPath).")
    test_ratio: float = Field(0.1, ge=0.0, lt=1.0, description="Fraction of rows held out for the final test (when no testPath).")
    max_length: int = Field(512, ge=8, le=MAX_TOKENS, description="Longest prompt+completion in tokens; see lengthPolicy for longer rows.")
    length_policy: LengthPolicy = Field(
        LengthPolicy.truncate,
        description="Rows longer than maxLength: truncate (prompt/completion rows: cut the prompt's start, keep the completion; conversations: keep the leading whole turns up to the last trained assistant turn that fits, else the first maxLength tokens) or drop (skip the row). Both are counted per split in the summary.",
    )
    retention: Optional[RetentionSpec] = Field(
        None, description="Optional retention set (other tasks) scored before and after training; the change measures forgetting.",
    )

    @model_validator(mode="after")
    def _one_way_to_give_rows(self) -> "DatasetSpec":
        _check_data_uris(self, "dataset")
        if self.validation_ratio + self.test_ratio >= 1.0:
            raise ValueError("dataset.validationRatio + dataset.testRatio must be below 1")
        if self.tasks is not None:
            # Compared with the defaults, not by presence: the API server fills CRD defaults in.
            given = [to_camel(name) for name in _SINGLE_TASK_FIELDS
                     if getattr(self, name) != type(self).model_fields[name].default]
            if given:
                raise ValueError(f"dataset.tasks replaces the single-task fields; move dataset.{', dataset.'.join(given)} into the tasks")
            names = [task.name for task in self.tasks]
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise ValueError(f"dataset.tasks: task names must be unique; repeated: {', '.join(duplicates)}")
            return self
        if self.mixture_size is not None:
            raise ValueError("dataset.mixtureSize applies to dataset.tasks only")
        if self.path is None:
            raise ValueError("dataset needs path and promptTemplate or conversations (or tasks)")
        check_rows_mode(self, "dataset")
        return self


class LoraSpec(ApiModel):
    r: int = Field(8, ge=1, le=1024, description="LoRA rank.")
    alpha: int = Field(16, ge=1, le=4096, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: NameList = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        min_length=1, max_length=MAX_LIST,
        description="Names (suffixes) of the linear modules that get adapters.",
    )
    merge_on_save: bool = Field(
        False, description="Merge the trained adapter into the base weights and save a full model (model/) instead of the adapter."
    )


class PromptTuningSpec(ApiModel):
    num_virtual_tokens: int = Field(20, ge=1, le=1024, description="Trainable soft-prompt tokens prepended to every input.")
    init_text: Optional[str] = Field(
        None, min_length=1, max_length=MAX_TEMPLATE, description="Initialise the soft prompt from the embeddings of this text (repeated or cut to numVirtualTokens); random when unset."
    )


class PrefixTuningSpec(ApiModel):
    num_virtual_tokens: int = Field(20, ge=1, le=1024, description="Trainable key/value prefix length in every attention layer.")


class Ia3Spec(ApiModel):
    target_modules: NameList = Field(
        default_factory=lambda: ["k_proj", "v_proj", "down_proj"], min_length=1, max_length=MAX_LIST,
        description="Names (suffixes) of the modules whose activations get learned scaling vectors.",
    )
    feedforward_modules: NameList = Field(
        default_factory=lambda: ["down_proj"], max_length=MAX_LIST,
        description="The subset of targetModules that are feed-forward layers (scaled at their input, not output).",
    )

    @model_validator(mode="after")
    def _feedforward_are_targets(self) -> "Ia3Spec":
        if not set(self.feedforward_modules) <= set(self.target_modules):
            raise ValueError("ia3.feedforwardModules must be a subset of ia3.targetModules")
        return self


MAX_LAST_LAYERS = 256


class SelectiveSpec(ApiModel):
    patterns: NameList = Field(
        default_factory=list, max_length=MAX_LIST,
        description="Regular expressions (re.search) over parameter names, e.g. 'bias$' or 'norm'; matching parameters train.",
    )
    # The API cannot know the model's depth (the trainer refuses more than it has); 256 is twice
    # the deepest public LLMs (about 126 blocks), so only nonsense is refused here.
    last_layers: Optional[int] = Field(
        None, ge=1, le=MAX_LAST_LAYERS,
        description=f"Also train every parameter of the last N transformer blocks; at most the model's own count (the trainer refuses more), and at most {MAX_LAST_LAYERS}, twice the deepest public LLMs (about 126 blocks).")

    @model_validator(mode="after")
    def _selects_something(self) -> "SelectiveSpec":
        if not self.patterns and self.last_layers is None:
            raise ValueError("selective needs patterns, lastLayers or both")
        return self


class TrainingSpec(ApiModel):
    epochs: float = Field(1.0, gt=0, le=1000, description="Passes over the training split. Not with maxSteps (leave it at its default, 1).")
    max_steps: Optional[int] = Field(None, ge=1, le=MAX_STEPS, description="Stop after this many optimizer steps, instead of epochs (set one of the two).")
    batch_size: int = Field(4, ge=1, le=4096, description="Examples per device per forward pass (with training.fsdp: per forward pass over all ranks, split among them).")
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024, description="Forward passes per optimizer step.")
    learning_rate: float = Field(2e-4, gt=0, le=1.0, description="Peak AdamW learning rate (linear decay after warmup).")
    warmup_steps: int = Field(0, ge=0, le=MAX_STEPS, description="Linear warmup steps.")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    eval_every_steps: int = Field(0, ge=0, le=MAX_STEPS, description="Validate every N optimizer steps; 0 validates only at the end.")
    log_every_steps: int = Field(1, ge=1, le=MAX_STEPS, description="Report progress and loss every N optimizer steps.")
    seed: int = Field(42, ge=0, le=MAX_SEED, description="Seed for the data split, shuffling and initialisation.")
    drift_penalty: float = Field(
        0.0, ge=0.0, le=1e6,
        description="Strength of an L2 penalty on the distance of the trainable weights from their pretrained values (full and selective; against forgetting); 0 disables.",
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: less memory, about a third more compute.")
    group_by_length: bool = Field(True, description="Batch rows of similar length (seeded shuffle of the groups) so little work goes to padding.")
    packing: Optional[bool] = Field(
        None,
        description="Padding-free packing: each batch's rows run as one sequence with per-row position ids and attention confined to each row (flash-attention varlen where the model uses it); the same batches, steps and loss as padded batches. Unset (auto): on with flash-attention (varlen), off with a log line elsewhere (sdpa/eager attention, where the block-diagonal mask is slower than padding; methods prompt-tuning and prefix-tuning; model types other than llama, mistral, qwen2, qwen3); true packs with sdpa/eager too and is refused where packing is not exact; false: padded batches.",
    )
    checkpoint_every_steps: int = Field(0, ge=0, le=MAX_STEPS, description="Save a resumable checkpoint every N optimizer steps (0: only at the end) under output.path/checkpoints/.")
    checkpoints_to_keep: int = Field(2, ge=1, le=100, description="Keep the latest N checkpoints; a restarted run resumes from the latest.")
    prediction_rows: int = Field(5, ge=0, le=1000, description="Test rows to generate predictions for (greedy) into predictions.jsonl.")
    fsdp: FsdpSpec = Field(default_factory=FsdpSpec, description="Fully sharded data parallel training (docs/finetunejob.md#fsdp-trainingfsdp).")

    @model_validator(mode="after")
    def _one_length(self) -> "TrainingSpec":
        # maxSteps alone sets the length: another epochs beside it would be ignored. Compared with
        # the default, not by presence: the API server fills CRD defaults in.
        if self.max_steps is not None and self.epochs != type(self).model_fields["epochs"].default:
            raise ValueError(f"set one of training.epochs and training.maxSteps (epochs {self.epochs:g} with maxSteps {self.max_steps})")
        return self


class TrainingConfig(ApiModel):
    """Everything the trainer needs; the FineTuneJob spec embeds these fields."""

    model: ModelSource = Field(description="The base model to fine-tune.")
    dataset: DatasetSpec = Field(description="Raw rows and how they become prompt/completion pairs.")
    method: Method = Field(
        Method.lora,
        description="Which parameters train: full (all), lora (low-rank adapters), qlora (LoRA on a 4-bit base; CUDA and bitsandbytes), prompt-tuning (soft prompt), prefix-tuning (per-layer key/value prefixes), ia3 (learned activation scales), selective (parameters chosen by name or depth).",
    )
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA settings (methods lora and qlora; refused with other methods unless equal to the defaults).")
    prompt_tuning: Optional[PromptTuningSpec] = Field(None, description="Prompt-tuning settings (method prompt-tuning; defaults when unset).")
    prefix_tuning: Optional[PrefixTuningSpec] = Field(None, description="Prefix-tuning settings (method prefix-tuning; defaults when unset).")
    ia3: Optional[Ia3Spec] = Field(None, description="IA3 settings (method ia3; defaults when unset).")
    selective: Optional[SelectiveSpec] = Field(None, description="Which parameters train (method selective; required there).")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Optimisation settings.")
    output: TrainingOutputSpec = Field(description="Where results are written (and uploaded, with uri).")
    tracking: Optional[TrackingSpec] = Field(None, description="Log the resolved config, lineage, per-step metrics, test metrics and the trained model (then the evaluation's scores and the promoted version) to an MLflow run (docs/tracking.md).")

    @model_validator(mode="after")
    def _method_blocks_match(self) -> "TrainingConfig":
        blocks = {"prompt_tuning": Method.prompt_tuning, "prefix_tuning": Method.prefix_tuning, "ia3": Method.ia3, "selective": Method.selective}
        for name, method in blocks.items():
            if getattr(self, name) is not None and self.method is not method:
                raise ValueError(f"{to_camel(name)}: set but method is {self.method.value} (it applies to method {method.value})")
        # lora has defaults, so a full dump of any config holds it: only a block the user set
        # with other values than the defaults would be ignored.
        if "lora" in self.model_fields_set and self.lora != LoraSpec() and self.method not in (Method.lora, Method.qlora):
            raise ValueError(f"lora: set but method is {self.method.value} (it applies to methods lora and qlora)")
        if self.method is Method.selective and self.selective is None:
            raise ValueError("method selective needs a selective block (patterns and/or lastLayers)")
        if self.training.drift_penalty and self.method not in (Method.full, Method.selective):
            raise ValueError("training.driftPenalty applies to methods full and selective only")
        return self

    @model_validator(mode="after")
    def _packing_fits_method(self) -> "TrainingConfig":
        if self.training.packing and self.method in (Method.prompt_tuning, Method.prefix_tuning):
            raise ValueError(f"training.packing: true, but method {self.method.value} prepends per-row virtual tokens "
                             "(leave packing unset or set it to false)")
        return self

    @model_validator(mode="after")
    def _fsdp_fits(self) -> "TrainingConfig":
        check_fsdp(self.method, self.training)
        return self


TRAINING_FIELDS = tuple(TrainingConfig.model_fields)


def load_config(path: str | Path) -> TrainingConfig:
    return load_model_file(TrainingConfig, path)
