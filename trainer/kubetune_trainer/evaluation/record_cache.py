"""Reused predictions: a model's records on a task, cached by everything that decides them.

Generating (or scoring options) is the cost of an evaluation; scoring records is cheap. So the
records of one model on one task are kept under a key made of the model's and adapter's digests
and dtype, the task's data digests, the config that shapes prompts and decoding, the library
versions and the device kind. A second evaluation with the same key (the same base model on the
same eval set, as in every FineTuneJob from that base) reuses them and scores them again with
its own metrics. The cache is the runtime's shared model cache when it has one (shared by the
jobs that use it), else the pod's own.

What the cache holds was written by some pod: it is read as data, checked against the items
(the same lines, model outputs of the right types), and the item's own fields replace the
cached copies; anything else is a miss.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Optional

from kubetune_api.catalog import EvalTask
from kubetune_api.evaluation import EvalModel
from kubetune_api.reports import Lineage
from kubetune_api.wire import ENV_MODEL_CACHE
from kubetune_trainer.evaluation.tasks import Item
from kubetune_trainer.model.loading import cache_root

log = logging.getLogger(__name__)

FORMAT = 1  # of a cache file; a new layout gets a new number (old files simply miss)
MAX_FILE_BYTES = 256 * 2**20
# What shapes the records (prompts, outputs); metric settings only shape their scores.
DECIDING_FIELDS = {"task", "dataset", "generation"}
ITEM_FIELDS = ("prompt", "references", "choices", "answer", "text")
# The model outputs in a record, by task, and their types.
OUTPUTS = {EvalTask.generation: {"prediction": (str,)},
           EvalTask.multiple_choice: {"prediction": (int,), "predictionNorm": (int,), "loglikelihoods": (list,)},
           EvalTask.perplexity: {"nll": (int, float), "tokens": (int,)}}


def cache_directory() -> Path:
    shared = os.environ.get(ENV_MODEL_CACHE)
    return Path(shared) / "kubetune-eval-records" if shared else cache_root() / "eval-records"


def record_key(task_name: Optional[str], config, spec: EvalModel, lineage: Lineage, device: str) -> str:
    """sha256 of what decides one model's records on one task (`config`: the task's EvalConfig)."""
    roles = ("eval", "few-shot") if task_name is None else (f"task:{task_name}", f"task:{task_name}/few-shot")
    deciding = config.model_dump(by_alias=True, mode="json", include=DECIDING_FIELDS)
    deciding["dataset"].pop("path")  # the same bytes (data, below) under another name decide the same
    if deciding["dataset"].get("fewShot"):
        deciding["dataset"]["fewShot"].pop("path", None)
    payload = {
        "format": FORMAT,
        "models": [m.digest for m in lineage.models or [] if m.name == spec.name],
        "dtype": spec.dtype.value,
        "data": [d.sha256 for d in lineage.datasets if d.role in roles],
        "config": deciding,
        "versions": lineage.versions,
        "device": device,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _checked(records: object, items: list[Item], task: EvalTask) -> Optional[list[dict]]:
    """The cached records with the items' own fields, or None unless they fit the items."""
    if not isinstance(records, list) or len(records) != len(items):
        return None
    out = []
    for record, item in zip(records, items):
        if not isinstance(record, dict) or record.get("line") != item.line:
            return None
        for name, types in OUTPUTS[task].items():
            value = record.get(name)
            if not isinstance(value, types) or isinstance(value, bool):
                return None
        if task == EvalTask.multiple_choice and not (0 <= record["prediction"] < len(item.choices)
                                                      and 0 <= record["predictionNorm"] < len(item.choices)):
            return None
        # A chat row's prompt is its render with the model's template (decided by the key), not an item field.
        fields = [k for k in ITEM_FIELDS if k in record and not (k == "prompt" and item.conversation is not None)]
        if item.conversation is not None and not isinstance(record.get("prompt"), str):
            return None
        out.append({**record, **{k: getattr(item, k) for k in fields}})
    return out


class RecordCache:
    """Records by key in one directory; `directory` None turns it off."""

    def __init__(self, directory: Optional[Path]):
        self.directory = directory

    def load(self, key: str, items: list[Item], task: EvalTask) -> Optional[tuple[list[dict], int]]:
        """(records, truncated prompts) cached under `key` for these items, or None."""
        if self.directory is None:
            return None
        path = self.directory / f"{key}.json"
        try:
            if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
                return None
            cached = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            log.warning("cached records %s unreadable (%s); evaluating again", path, error)
            return None
        truncated = cached.get("truncatedPrompts") if isinstance(cached, dict) else None
        records = _checked(cached.get("records"), items, task) if isinstance(truncated, int) else None
        if records is None:
            log.warning("cached records %s do not fit this evaluation's rows; evaluating again", path)
            return None
        return records, truncated

    def save(self, key: str, records: list[dict], truncated: int) -> None:
        """Writes atomically (two pods may race on one key); a cache that cannot be written is skipped."""
        if self.directory is None:
            return
        temporary = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.directory, suffix=".tmp", delete=False, encoding="utf-8") as f:
                temporary = f.name
                json.dump({"records": records, "truncatedPrompts": truncated}, f, ensure_ascii=False)
            os.replace(temporary, self.directory / f"{key}.json")
        except OSError as error:
            log.warning("cannot cache records in %s: %s", self.directory, error)
            if temporary:
                Path(temporary).unlink(missing_ok=True)
