"""Resumable checkpoints under output.path/checkpoints/step-N.

A checkpoint holds what training changes: the trainable parameters (not the frozen base),
the optimizer and scheduler state, every process's RNG state and the trainer's own state
(step, history, token and time counters). The data position follows from the step, since
batch order depends only on seed and epoch. Each checkpoint is written into a temporary
directory and renamed into place, so a kill mid-write never leaves a half checkpoint that
a restart would pick up.
"""
from __future__ import annotations

import json
import logging
import random
import re
import shutil
from pathlib import Path

import torch

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


class Checkpoints:
    def __init__(self, output_path: Path, keep: int, accelerator):
        self.root = Path(output_path) / "checkpoints"
        self.keep = keep
        self.accelerator = accelerator

    def steps(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir())

    def latest(self) -> Path | None:
        steps = self.steps()
        return self.root / f"step-{steps[-1]}" if steps else None

    def save(self, step: int, model, optimizer, scheduler, trainer_state: dict) -> None:
        """Called on every process (each adds its RNG state); the main process writes the rest."""
        acc = self.accelerator
        tmp, final = self.root / f".tmp-step-{step}", self.root / f"step-{step}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        torch.save(_rng_state(), tmp / f"rng-{acc.process_index}.pt")
        if acc.is_main_process:
            trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
            torch.save({"model": trainable, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                       tmp / STATE_FILE)
            (tmp / TRAINER_FILE).write_text(json.dumps({"step": step, **trainer_state}), encoding="utf-8")
        acc.wait_for_everyone()
        if acc.is_main_process:
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            for old in self.steps()[:-self.keep]:
                shutil.rmtree(self.root / f"step-{old}", ignore_errors=True)
            log.info("checkpoint saved: %s", final)
        acc.wait_for_everyone()

    def load(self, directory: Path, model, optimizer, scheduler) -> dict:
        """Restores a checkpoint into the (unwrapped) model, optimizer, scheduler and RNG; returns the trainer state."""
        state = torch.load(directory / STATE_FILE, weights_only=False)
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
        rng = directory / f"rng-{self.accelerator.process_index}.pt"
        if rng.is_file():  # absent when resuming with more processes than before
            _set_rng_state(torch.load(rng, weights_only=False))
        return json.loads((directory / TRAINER_FILE).read_text(encoding="utf-8"))
