"""Checkpoints of FSDP runs (training.fsdp): sharded, and resumable on another number of ranks.

The trainable parameters and their optimizer state go through torch.distributed.checkpoint
(DCP): every rank writes the shards it holds into step-N/shards/ (one file per rank plus a
metadata file), and on resume every rank reads the pieces its new shards need, whatever the
rank count that wrote them (one process reads them too, without a process group). The frozen
base of a LoRA run is not saved (it is the base model). The scheduler, the trainer state and
the per-rank RNG states are written by the main process as in kubetune_trainer.training.checkpoint,
and a checkpoint still appears by a rename of its temporary directory, whole or not at all.

Every rank writes, so every rank must see the same output.path (one node, or a volume all
pods share): checked before training, with the field named, rather than found at resume.

DCP reads its metadata with pickle and non-tensor values with a full torch.load; here the
metadata goes through an unpickler that builds only DCP's metadata classes, and values
through the weights-only loader, so a planted file is refused unread, as for other checkpoints.
"""
from __future__ import annotations

import json
import logging
import pickle
import secrets
import shutil
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from kubetune_api.errors import ConfigError
from kubetune_trainer.training import rankwire
from kubetune_trainer.training.checkpoint import TRAINER_FILE, Checkpoints, _load, _rng_state, _set_rng_state

log = logging.getLogger(__name__)

SHARDS_DIR, SCHEDULER_FILE = "shards", "scheduler.pt"
OPTIONS = StateDictOptions(ignore_frozen_params=True)  # the frozen base is the base model: not saved
# Loading: the frozen base is absent on purpose; every trainable key is there (DCP fails on a missing one).
LOAD_OPTIONS = StateDictOptions(ignore_frozen_params=True, strict=False)
_METADATA_MODULE = "torch.distributed.checkpoint.metadata"
_METADATA_NAMES = {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
                   ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath")}


def _metadata_classes() -> set[str]:
    """The classes DCP's metadata module defines itself (not what it imports: os, torch)."""
    import torch.distributed.checkpoint.metadata as metadata

    return {name for name, value in vars(metadata).items() if isinstance(value, type) and value.__module__ == _METADATA_MODULE}


class _MetadataUnpickler(pickle.Unpickler):
    """Builds DCP's metadata classes, torch dtypes and sizes, and nothing else. Dotted names are
    refused: pickle protocol 4 follows them, so `<metadata module>.os.system` would be os.system."""

    def find_class(self, module: str, name: str):
        if "." not in name and ((module == _METADATA_MODULE and name in _metadata_classes()) or (module, name) in _METADATA_NAMES
                                or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype))):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint's metadata")


class _Reader(dcp.FileSystemReader):
    def read_metadata(self, *args, **kwargs):
        path = Path(self.path) / ".metadata"
        try:
            with path.open("rb") as f:
                metadata = _MetadataUnpickler(f).load()
        except pickle.UnpicklingError as e:
            raise ValueError(f"{path} holds more than checkpoint metadata, so it was not written by kubetune's "
                             "checkpoints; refusing to load it (delete the checkpoint to start over)") from e
        if getattr(metadata, "storage_meta", None) is not None:
            metadata.storage_meta.load_id = self.load_id
        return metadata


class _Planner(DefaultLoadPlanner):
    def load_bytes(self, read_item, value) -> None:
        loaded = torch.load(value, weights_only=True)  # plain values (learning rates, betas, names)
        if self.flatten_state_dict:
            from torch.distributed.checkpoint._nested_dict import set_element  # as DefaultLoadPlanner does

            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded


class ShardedCheckpoints(Checkpoints):
    """Checkpoints with the same directories, steps, retention and resume as Checkpoints."""

    def require_shared(self) -> None:
        """Every rank sees the main process's files under output.path (a token it just wrote)."""
        acc, token = self.accelerator, None
        probe = self.root / ".ranks"
        if acc.is_main_process:
            token = secrets.token_hex(8)
            self.root.mkdir(parents=True, exist_ok=True)
            probe.write_text(token, encoding="utf-8")
        token = rankwire.broadcast_json(token, acc.device)
        seen = probe.is_file() and probe.read_text(encoding="utf-8") == token
        blind = [rank for rank, ok in enumerate(rankwire.all_gather_json(seen, acc.device)) if not ok]
        if blind:
            raise ConfigError(f"training.fsdp: ranks {blind} do not see output.path {self.root.parent} as rank 0 "
                              "does; every rank writes its shards of a checkpoint there, so all pods need one "
                              "shared volume (ReadWriteMany)")

    def latest(self) -> Path | None:
        self.require_shared()  # called once on every process before training
        return super().latest()

    def save(self, step: int, model, optimizer, scheduler, trainer_state: dict) -> None:
        acc = self.accelerator
        rng_states = rankwire.all_gather_state(_rng_state(), acc.device)
        tmp, final = self.root / f".tmp-step-{step}", self.root / f"step-{step}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        model_state, optimizer_state = get_state_dict(model, optimizer, options=OPTIONS)
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp / SHARDS_DIR)
        if acc.is_main_process:
            torch.save(scheduler.state_dict(), tmp / SCHEDULER_FILE)
            self._publish(tmp, final, rng_states, {"step": step, "ranks": acc.num_processes, **trainer_state},
                          "sharded checkpoint")
        acc.wait_for_everyone()

    def load(self, directory: Path, model, optimizer, scheduler) -> dict:
        if not (directory / SHARDS_DIR).is_dir():
            raise ValueError(f"{directory} is not a sharded checkpoint (it was written without training.fsdp); "
                             "resume it with the settings that wrote it, or delete it to start over")
        reader = _Reader(directory / SHARDS_DIR)
        reader.read_metadata()  # refuses a planted file here, plainly (DCP would wrap the error)
        model_state, optimizer_state = get_state_dict(model, optimizer, options=OPTIONS)
        state = {"model": model_state, "optimizer": optimizer_state}
        try:
            dcp.load(state, storage_reader=reader, planner=_Planner())
        except (RuntimeError, CheckpointException) as e:  # what failed on any rank; keys that do not match
            raise ValueError(f"{directory} does not match this run's trainable parameters "
                             f"(written by a different method or model?): {str(e)[-500:]}") from e
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=LOAD_OPTIONS)
        scheduler.load_state_dict(_load(directory / SCHEDULER_FILE))
        rng = directory / f"rng-{self.accelerator.process_index}.pt"
        if rng.is_file():  # absent: fewer ranks wrote it
            _set_rng_state(_load(rng))
        trainer = json.loads((directory / TRAINER_FILE).read_text(encoding="utf-8"))
        if trainer.get("ranks", self.accelerator.num_processes) != self.accelerator.num_processes:
            log.info("resuming a checkpoint of %d ranks on %d", trainer["ranks"], self.accelerator.num_processes)
        return trainer

