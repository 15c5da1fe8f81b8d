"""The training loop: AdamW with linear warmup/decay, completion-only loss, periodic evaluation,
checkpoints and resume.

Runs in one process or several (`accelerate launch`): Accelerate supplies device placement,
bf16 autocast and DDP. Every process takes its own share of each epoch's batches
(kubetune_trainer.batching), losses and token counts are reduced across processes, and only
the main process writes checkpoints and reports.
"""
from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup

from kubetune_trainer.batching import epoch_batches, shard
from kubetune_trainer.checkpoint import Checkpoints
from kubetune_api.training import TrainingSpec
from kubetune_trainer.data import Collator, PreparedData, Tokenized
from kubetune_api.errors import ConfigError
from kubetune_trainer.loss import batch_loss
from kubetune_api.reports import Metrics, PodReport, Progress

log = logging.getLogger(__name__)

MAX_GRAD_NORM = 1.0  # clipping keeps an occasional long or odd row from wrecking small models


@dataclass
class TrainResult:
    progress: Progress
    metrics: Metrics
    history: list[dict] = field(default_factory=list)  # one entry per log or evaluation step
    train_tokens: int = 0  # over all processes
    train_seconds: float = 0.0
    resumed_from: int | None = None  # the checkpoint step this run continued from


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def evaluate(model, items: list[Tokenized], collate: Collator, batch_size: int, accelerator: Accelerator) -> tuple[float | None, float | None]:
    """(loss per completion token, next-token accuracy) over a split, each process taking a
    share; (None, None) if the split has no completion tokens."""
    was_training = model.training
    model.eval()
    inner = accelerator.unwrap_model(model)
    mine = items[accelerator.process_index::accelerator.num_processes]
    sums = torch.zeros(3, dtype=torch.float64, device=accelerator.device)  # loss, tokens, correct
    for start in range(0, len(mine), batch_size):
        with accelerator.autocast():
            loss, n, c = batch_loss(model, inner, _to_device(collate(mine[start:start + batch_size]), accelerator.device))
        sums += torch.stack([loss.double(), n.double(), c.double()])
    model.train(was_training)
    loss_sum, tokens, correct = accelerator.reduce(sums, "sum").tolist()
    if tokens == 0:
        return None, None
    return loss_sum / tokens, correct / tokens


def drift_penalty(model, initial: dict[str, torch.Tensor], strength: float) -> torch.Tensor:
    """strength/2 * squared L2 distance of the trainable parameters from their initial values."""
    total = sum(((p - initial[n]) ** 2).sum() for n, p in model.named_parameters() if n in initial)
    return 0.5 * strength * total


def total_steps(n_batches: int, spec: TrainingSpec) -> int:
    if spec.max_steps is not None:
        return spec.max_steps
    return max(1, math.ceil(spec.epochs * steps_per_epoch(n_batches, spec)))


def steps_per_epoch(n_batches: int, spec: TrainingSpec) -> int:
    # A short last accumulation window still makes an optimizer step.
    return math.ceil(n_batches / spec.gradient_accumulation_steps)


def train(
    model,
    data: PreparedData,
    pad_id: int,
    spec: TrainingSpec,
    accelerator: Accelerator,
    on_report: Callable[[PodReport], None] = lambda report: None,
    checkpoints: Checkpoints | None = None,
) -> TrainResult:
    """Trains `model` in place and returns its progress and metrics; reports every logEverySteps.

    With `checkpoints`, saves every checkpointEverySteps and at the end, and first resumes
    from the latest checkpoint there if one exists.
    """
    collate = Collator(pad_id)
    items = data.splits["train"]
    lengths = [len(x.input_ids) for x in items]

    def my_batches(epoch: int) -> list[list[int]]:
        return shard(epoch_batches(lengths, spec.batch_size, spec.seed, epoch, spec.group_by_length),
                     accelerator.process_index, accelerator.num_processes)

    n_batches = len(my_batches(0))
    if n_batches == 0:
        raise ConfigError(f"{len(items)} training rows make fewer batches of {spec.batch_size} than the {accelerator.num_processes} processes")
    per_epoch = steps_per_epoch(n_batches, spec)
    total = total_steps(n_batches, spec)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=spec.weight_decay)
    # Stepped by hand once per optimizer step; Accelerate's prepared scheduler counts processes.
    scheduler = get_linear_schedule_with_warmup(optimizer, spec.warmup_steps, total)
    model, optimizer = accelerator.prepare(model, optimizer)
    inner = accelerator.unwrap_model(model)
    # The drift penalty's anchor: the pretrained weights (taken before a resume loads any).
    initial = ({n: p.detach().clone() for n, p in inner.named_parameters() if p.requires_grad}
               if spec.drift_penalty else {})

    result = TrainResult(Progress(total_steps=total), Metrics())
    step, seconds_before = 0, 0.0
    latest = checkpoints.latest() if checkpoints else None
    if latest is not None:
        state = checkpoints.load(latest, inner, optimizer, scheduler)
        step, result.resumed_from = state["step"], state["step"]
        result.history, result.train_tokens, seconds_before = state["history"], state["trainTokens"], state["trainSeconds"]
        result.metrics = Metrics.model_validate(state["metrics"])
        log.info("resuming from %s at step %d/%d", latest, step, total)
    start_step = step
    window_loss, window_batches = 0.0, 0
    started, eval_seconds = time.perf_counter(), 0.0  # eval_seconds: evaluation and checkpoints, not training

    def progress() -> Progress:
        elapsed = time.perf_counter() - started
        result.train_seconds = seconds_before + elapsed - eval_seconds
        return Progress(
            step=step, total_steps=total, epoch=round(step / per_epoch, 4), percent=round(100 * step / total, 2),
            eta_seconds=round(elapsed / max(step - start_step, 1) * (total - step), 1),
            tokens_per_second=round(result.train_tokens / max(result.train_seconds, 1e-9), 1),
        )

    def run_eval(name: str, split: list[Tokenized]) -> None:
        nonlocal eval_seconds
        t = time.perf_counter()
        loss, accuracy = evaluate(model, split, collate, spec.batch_size, accelerator)
        eval_seconds += time.perf_counter() - t
        if loss is not None:
            setattr(result.metrics, f"{name}_loss", loss)
            setattr(result.metrics, f"{name}_accuracy", accuracy)
            result.history[-1].update({f"{name}Loss": loss, f"{name}Accuracy": accuracy})
            log.info("step %d/%d %s loss %.4f accuracy %.4f", step, total, name, loss, accuracy)

    def save_checkpoint() -> None:
        nonlocal eval_seconds
        t = time.perf_counter()
        result.progress = progress()
        checkpoints.save(step, inner, optimizer, scheduler, {
            "history": result.history, "trainTokens": result.train_tokens, "trainSeconds": result.train_seconds,
            "metrics": result.metrics.model_dump(mode="json"),
        })
        eval_seconds += time.perf_counter() - t

    model.train()
    bar = tqdm(total=total, initial=step, desc="training", unit="step", file=sys.stderr,
               disable=None if accelerator.is_main_process else True)
    while step < total:
        batches = my_batches(step // per_epoch)
        windows = [batches[i:i + spec.gradient_accumulation_steps] for i in range(0, len(batches), spec.gradient_accumulation_steps)]
        for window in windows[step % per_epoch:]:  # on resume, skips the windows already trained on
            tokens = 0
            for i, rows in enumerate(window):
                last = i == len(window) - 1
                # Gradients are all-reduced once per optimizer step, on the window's last batch.
                with contextlib.nullcontext() if last else accelerator.no_sync(model):
                    batch = _to_device(collate([items[j] for j in rows]), accelerator.device)
                    with accelerator.autocast():
                        loss_sum, n_targets, _ = batch_loss(model, inner, batch)
                        loss = loss_sum / n_targets.clamp(min=1)
                        objective = loss / len(window)
                        if last and spec.drift_penalty:
                            objective = objective + drift_penalty(inner, initial, spec.drift_penalty)
                    accelerator.backward(objective)
                tokens += int(batch["attention_mask"].sum())
                window_loss, window_batches = window_loss + loss.item(), window_batches + 1
            accelerator.clip_grad_norm_(params, MAX_GRAD_NORM)
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()
            step += 1
            bar.update(1)
            result.train_tokens += int(accelerator.reduce(torch.tensor(tokens, device=accelerator.device), "sum"))
            logged = step % spec.log_every_steps == 0 or step == total
            evaluating = step == total or (spec.eval_every_steps and step % spec.eval_every_steps == 0)
            if logged or evaluating:
                result.history.append({"step": step})
            if logged:
                mean = torch.tensor(window_loss / window_batches, device=accelerator.device)
                result.metrics.train_loss = float(accelerator.reduce(mean, "mean"))
                result.history[-1]["trainLoss"] = result.metrics.train_loss
                window_loss, window_batches = 0.0, 0
                bar.set_postfix(loss=f"{result.metrics.train_loss:.4f}")
                log.info("step %d/%d train loss %.4f", step, total, result.metrics.train_loss)
            if evaluating:
                run_eval("validation", data.splits["validation"])
            if logged or evaluating:
                result.progress = progress()
                on_report(PodReport(progress=result.progress, metrics=result.metrics.model_copy()))
            if checkpoints and (step == total or (spec.checkpoint_every_steps and step % spec.checkpoint_every_steps == 0)):
                save_checkpoint()
            if step == total:
                break
    bar.close()
    run_eval("test", data.splits["test"])
    result.progress = progress()
    return result
