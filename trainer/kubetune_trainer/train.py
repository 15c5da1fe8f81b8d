"""The training loop: AdamW with linear warmup/decay, completion-only loss, periodic evaluation.

Runs in one process (the trainer pod's); Accelerate supplies device placement, bf16 autocast
and gradient accumulation.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup

from kubetune_trainer.config import TrainingSpec
from kubetune_trainer.data import IGNORE_INDEX, Collator, PreparedData
from kubetune_trainer.report import Metrics, PodReport, Progress

log = logging.getLogger(__name__)

MAX_GRAD_NORM = 1.0  # clipping keeps an occasional long or odd row from wrecking small models


@dataclass
class TrainResult:
    progress: Progress
    metrics: Metrics
    history: list[dict] = field(default_factory=list)  # one entry per log or evaluation step
    train_tokens: int = 0
    train_seconds: float = 0.0


def completion_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(summed cross-entropy, target count, correct argmax count) over labelled next tokens."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    mask = labels != IGNORE_INDEX
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
    correct = ((logits.argmax(-1) == labels) & mask).sum()
    return loss, mask.sum(), correct


@torch.no_grad()
def evaluate(model, loader) -> tuple[float | None, float | None]:
    """(loss per completion token, next-token accuracy) over a loader; (None, None) if empty."""
    was_training = model.training
    model.eval()
    loss_sum, tokens, correct = 0.0, 0, 0
    for batch in loader:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss, n, c = completion_loss(logits, batch["labels"])
        loss_sum, tokens, correct = loss_sum + loss.item(), tokens + n.item(), correct + c.item()
    model.train(was_training)
    if tokens == 0:
        return None, None
    return loss_sum / tokens, correct / tokens


def total_steps(n_batches: int, spec: TrainingSpec) -> int:
    if spec.max_steps is not None:
        return spec.max_steps
    return max(1, math.ceil(spec.epochs * steps_per_epoch(n_batches, spec)))


def steps_per_epoch(n_batches: int, spec: TrainingSpec) -> int:
    # Accelerate steps the optimizer at the end of each epoch even if the window is short.
    return math.ceil(n_batches / spec.gradient_accumulation_steps)


def train(
    model,
    data: PreparedData,
    pad_id: int,
    spec: TrainingSpec,
    accelerator: Accelerator,
    on_report: Callable[[PodReport], None] = lambda report: None,
) -> TrainResult:
    """Trains `model` in place and returns its progress and metrics; reports every logEverySteps."""
    collate = Collator(pad_id)
    # Seeded shuffling, so a rerun with the same seed sees batches in the same order.
    train_loader = DataLoader(
        data.splits["train"], batch_size=spec.batch_size, shuffle=True, collate_fn=collate,
        generator=torch.Generator().manual_seed(spec.seed),
    )
    val_loader, test_loader = (
        DataLoader(data.splits[name], batch_size=spec.batch_size, collate_fn=collate) for name in ("validation", "test")
    )
    per_epoch = steps_per_epoch(len(train_loader), spec)
    total = total_steps(len(train_loader), spec)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=spec.weight_decay)
    # Stepped by hand once per optimizer step; Accelerate's prepared scheduler counts processes.
    scheduler = get_linear_schedule_with_warmup(optimizer, spec.warmup_steps, total)
    model, optimizer, train_loader, val_loader, test_loader = accelerator.prepare(
        model, optimizer, train_loader, val_loader, test_loader
    )

    result = TrainResult(Progress(total_steps=total), Metrics())
    window_loss, window_batches, step = 0.0, 0, 0
    started, eval_seconds = time.perf_counter(), 0.0

    def progress() -> Progress:
        elapsed = time.perf_counter() - started
        result.train_seconds = elapsed - eval_seconds
        return Progress(
            step=step, total_steps=total, epoch=round(step / per_epoch, 4), percent=round(100 * step / total, 2),
            eta_seconds=round(elapsed / step * (total - step), 1),
            tokens_per_second=round(result.train_tokens / max(result.train_seconds, 1e-9), 1),
        )

    def run_eval(name: str, loader) -> None:
        nonlocal eval_seconds
        t = time.perf_counter()
        loss, accuracy = evaluate(model, loader)
        eval_seconds += time.perf_counter() - t
        if loss is not None:
            setattr(result.metrics, f"{name}_loss", loss)
            setattr(result.metrics, f"{name}_accuracy", accuracy)
            result.history[-1].update({f"{name}Loss": loss, f"{name}Accuracy": accuracy})
            log.info("step %d/%d %s loss %.4f accuracy %.4f", step, total, name, loss, accuracy)

    model.train()
    bar = tqdm(total=total, desc="training", unit="step", file=sys.stderr, disable=None)
    while step < total:
        for batch in train_loader:
            with accelerator.accumulate(model):
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                loss_sum, n_targets, _ = completion_loss(logits, batch["labels"])
                loss = loss_sum / n_targets.clamp(min=1)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, MAX_GRAD_NORM)
                optimizer.step()  # a no-op until the accumulation window is full
                optimizer.zero_grad()
            result.train_tokens += int(batch["attention_mask"].sum())
            window_loss, window_batches = window_loss + loss.item(), window_batches + 1
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            step += 1
            bar.update(1)
            logged = step % spec.log_every_steps == 0 or step == total
            evaluating = step == total or (spec.eval_every_steps and step % spec.eval_every_steps == 0)
            if logged or evaluating:
                result.history.append({"step": step})
            if logged:
                result.metrics.train_loss = window_loss / window_batches
                result.history[-1]["trainLoss"] = result.metrics.train_loss
                window_loss, window_batches = 0.0, 0
                bar.set_postfix(loss=f"{result.metrics.train_loss:.4f}")
                log.info("step %d/%d train loss %.4f", step, total, result.metrics.train_loss)
            if evaluating:
                run_eval("validation", val_loader)
            if logged or evaluating:
                result.progress = progress()
                on_report(PodReport(progress=result.progress, metrics=result.metrics.model_copy()))
            if step == total:
                break
    bar.close()
    run_eval("test", test_loader)
    return result
