"""Resumable checkpoints under output.path/checkpoints/step-N.

A checkpoint holds what training changes: the trainable parameters (not the frozen base),
the optimizer and scheduler state, every process's RNG state and the trainer's own state
(step, history, token and time counters). Only the main process writes checkpoints (the
other processes' RNG states are gathered to it), and on resume it decides which one and sends
it to processes that cannot read it (pods of a multi-node job on other nodes, without a shared
volume). Files are read with torch's weights-only loader (tensors and plain values: a file that
holds anything else, say a planted pickle, is refused unread), and nothing travels between
processes as a pickle (rankwire). The data position follows from the step, since batch order
depends only on seed and epoch. Each checkpoint is written into a temporary directory and
renamed into place, so a kill mid-write never leaves a half checkpoint that a restart would
pick up.
"""
from __future__ import annotations

import json
import logging
import pickle
import random
import re
import shutil
from pathlib import Path

import torch

from kubetune_api import layout
from kubetune_trainer.training import rankwire

log = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE, TRAINER_FILE = "state.pt", "trainer_state.json"


def _rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _load(path: Path):
    """A checkpoint file, by the weights-only loader: the checkpoints directory may be on a
    volume others write, and a full unpickle would run whatever code a planted file names."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path} holds more than tensors and plain values, so it was not written by kubetune's "
                         "checkpoints; refusing to load it (delete the checkpoint to start over)") from e


class Checkpoints:
    def __init__(self, output_path: Path, keep: int, accelerator):
        self.root = Path(output_path) / layout.CHECKPOINTS_DIR
        self.keep = keep
        self.accelerator = accelerator

    def steps(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir())

    def latest(self) -> Path | None:
        """The latest checkpoint as the main process sees it, on every process: a worker on
        another node may have no such directory, yet all processes must resume together."""
        steps = self.steps() if self.accelerator.is_main_process else []
        latest = rankwire.broadcast_json(f"step-{steps[-1]}" if steps else None, self.accelerator.device)
        return self.root / latest if latest else None

    def save(self, step: int, model, optimizer, scheduler, trainer_state: dict) -> None:
        """Called on every process; the main process writes everything, every process's RNG
        state included (gathered), so other processes need no disk of their own (other pods)."""
        acc = self.accelerator
        rng_states = rankwire.all_gather_state(_rng_state(), acc.device)
        if acc.is_main_process:
            tmp, final = self.root / f".tmp-step-{step}", self.root / f"step-{step}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
            torch.save({"model": trainable, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                       tmp / STATE_FILE)
            self._publish(tmp, final, rng_states, {"step": step, **trainer_state}, "checkpoint")
        acc.wait_for_everyone()

    def _publish(self, tmp: Path, final: Path, rng_states: list, trainer_state: dict, kind: str) -> None:
        """Main process: every process's RNG state and the trainer state into `tmp`, then `tmp`
        becomes `final` in one rename (a checkpoint is whole or absent) and the oldest beyond
        `keep` go."""
        for rank, state in enumerate(rng_states):
            torch.save(state, tmp / f"rng-{rank}.pt")
        (tmp / TRAINER_FILE).write_text(json.dumps(trainer_state), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in self.steps()[:-self.keep]:
            shutil.rmtree(self.root / f"step-{old}", ignore_errors=True)
        log.info("%s saved: %s", kind, final)

    def _read(self, directory: Path, ranks: list[int]) -> dict:
        """A checkpoint's files: the state, the trainer state, and the RNG states of `ranks`."""
        rng = {rank: _load(path) for rank in ranks
               if (path := directory / f"rng-{rank}.pt").is_file()}  # absent: fewer processes before
        return {"state": _load(directory / STATE_FILE), "rng": rng,
                "trainer": json.loads((directory / TRAINER_FILE).read_text(encoding="utf-8"))}

    def _read_everywhere(self, directory: Path) -> dict:
        """Each process reads the checkpoint itself when all of them see it (one node, or a
        shared volume); else the main process reads it and sends it to the others."""
        acc = self.accelerator
        if all(rankwire.all_gather_json((directory / STATE_FILE).is_file(), acc.device)):
            return self._read(directory, [acc.process_index])
        payload = self._read(directory, list(range(acc.num_processes))) if acc.is_main_process else None
        return rankwire.broadcast_state(payload, acc.device)

    def load(self, directory: Path, model, optimizer, scheduler) -> dict:
        """Restores a checkpoint into the (unwrapped) model, optimizer, scheduler and RNG; returns the trainer state."""
        if (directory / "shards").is_dir():  # sharded_checkpoint.SHARDS_DIR
            raise ValueError(f"{directory} is a sharded checkpoint (written with training.fsdp.enabled); resume it "
                             "with the settings that wrote it, or delete it to start over")
        checkpoint = self._read_everywhere(directory)
        state = checkpoint["state"]
        params = dict(model.named_parameters())
        missing = set(state["model"]) ^ {n for n, p in params.items() if p.requires_grad}
        if missing:
            raise ValueError(f"{directory} does not match this run's trainable parameters (e.g. {sorted(missing)[:3]}); "
                             "was it written by a different method or model?")
        with torch.no_grad():
            for name, value in state["model"].items():
                params[name].copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng = checkpoint["rng"].get(self.accelerator.process_index)
        if rng is not None:
            _set_rng_state(rng)
        return checkpoint["trainer"]
