"""The training loop: AdamW with linear warmup/decay, completion-only loss, periodic evaluation,
checkpoints and resume.

Runs in one process or several (`accelerate launch`): Accelerate supplies device placement,
bf16 autocast and DDP. Every process takes its own share of each epoch's batches
(kubetune_trainer.data.batching), losses and token counts are reduced across processes, and only
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

from kubetune_api.errors import ConfigError
from kubetune_api.reports import Metrics, PodReport, Progress
from kubetune_api.training import TrainingSpec
from kubetune_trainer.data.batching import epoch_batches, shard
from kubetune_trainer.training import fsdp, rankwire
from kubetune_trainer.training.checkpoint import Checkpoints
from kubetune_trainer.training.lean import lean_training
from kubetune_trainer.training.loss import batch_loss
from kubetune_trainer.data.packing import PackedCollator, batch_tokens, prepare_packed_attention, resolve_packing
from kubetune_trainer.training.stopping import StopRequest, Stopped
from kubetune_trainer.data.tokenization import Collator, PreparedData, Tokenized

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
    state_bytes: list[int] | None = None  # per process: parameters, gradients and optimizer state held


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def evaluate(model, items: list[Tokenized], collate: Collator, batch_size: int, accelerator: Accelerator) -> tuple[float | None, float | None]:
    """(loss per completion token, next-token accuracy) over a split, each process taking a
    share; (None, None) if the split has no completion tokens."""
    was_training = model.training
    model.eval()
    inner = accelerator.unwrap_model(model)
    sums = torch.zeros(3, dtype=torch.float64, device=accelerator.device)  # loss, tokens, correct
    for rows, weight in fsdp.rank_batches(len(items), batch_size, fsdp.is_sharded(model)):
        with accelerator.autocast():
            loss, n, c = batch_loss(model, inner, _to_device(collate([items[i] for i in rows]), accelerator.device))
        sums += torch.stack([loss.double(), n.double(), c.double()]) * weight
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


def _fused_adam_supported(params: list[torch.Tensor]) -> bool:
    """torch's fused AdamW: one pass over each tensor instead of a dozen (3x faster on CPU for
    135M parameters), for floating-point parameters on CPU or CUDA."""
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def _every(step: int, interval: int | None) -> bool:
    return bool(interval) and step % interval == 0


class TrainingLoop:
    """One call of `train`: the model, optimizer and schedule, and the counters a checkpoint keeps."""

    def __init__(self, model, data: PreparedData, pad_id: int, spec: TrainingSpec, accelerator: Accelerator,
                 on_report: Callable[[PodReport], None], checkpoints: Checkpoints | None):
        self.data, self.spec, self.accelerator = data, spec, accelerator
        self.on_report, self.checkpoints = on_report, checkpoints
        self.stop, self.stopping = StopRequest(), False
        self.checkpoint_step: int | None = None  # the latest checkpoint saved or resumed from
        self.collate = Collator(pad_id)
        self.items = data.splits["train"]
        self.lengths = [len(x.input_ids) for x in self.items]
        n_batches = len(self.my_batches(0))
        if n_batches == 0:
            raise ConfigError(f"{len(self.items)} training rows make fewer batches of {spec.batch_size} "
                              f"than the {accelerator.num_processes} processes")
        self.per_epoch = steps_per_epoch(n_batches, spec)
        self.total = total_steps(n_batches, spec)
        self._prepare(model)
        # Packing changes only how a batch's rows are laid out (kubetune_trainer.data.packing): the batches,
        # steps, tokens per step and losses stay those of the unpacked run. Evaluation stays padded.
        packed = resolve_packing(spec.packing, self.inner)
        self.train_collate = PackedCollator(varlen=prepare_packed_attention(self.inner)) if packed else self.collate
        self.result = TrainResult(Progress(total_steps=self.total), Metrics())
        self.step = self.start_step = 0
        self.resumed_tokens: int | None = None  # trainTokens restored from a checkpoint
        self.seconds_before = 0.0  # training time of the runs this one resumes
        self.paused_seconds = 0.0  # evaluation and checkpoints: not training time
        self.window_loss, self.window_batches = 0.0, 0  # since the last logged step
        self.started = 0.0  # set by run(): loading a checkpoint is not training time
        self.bar: tqdm | None = None

    def _prepare(self, model) -> None:
        spec = self.spec
        if spec.fsdp.enabled and fsdp.world()[1] > 1:  # in place (run.py shards before its retention score)
            model = fsdp.shard_model(model, spec, self.accelerator.device)
        self.sharded = fsdp.is_sharded(model)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=spec.learning_rate, weight_decay=spec.weight_decay,
                                           fused=not self.sharded and _fused_adam_supported(self.params))
        # Stepped by hand once per optimizer step; Accelerate's prepared scheduler counts processes.
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, spec.warmup_steps, self.total)
        if not self.sharded:  # Accelerate would wrap a sharded model in DDP
            model, self.optimizer = self.accelerator.prepare(model, self.optimizer)
        self.model = model
        self.inner = self.accelerator.unwrap_model(self.model)
        # The drift penalty's anchor: the pretrained weights (taken before a resume loads any).
        self.initial = ({n: p.detach().clone() for n, p in self.inner.named_parameters() if p.requires_grad}
                        if spec.drift_penalty else {})

    def my_batches(self, epoch: int) -> list[list[int]]:
        """This process's share of the epoch's batches (row indices), the same on every resume."""
        spec, acc = self.spec, self.accelerator
        batches = epoch_batches(self.lengths, spec.batch_size, spec.seed, epoch, spec.group_by_length)
        if spec.fsdp.enabled:  # every rank takes a share of every batch (_optimizer_step)
            return batches
        return shard(batches, acc.process_index, acc.num_processes)

    def resume(self) -> None:
        """Continues from the latest checkpoint, if there is one."""
        latest = self.checkpoints.latest() if self.checkpoints else None
        if latest is None:
            return
        state = self.checkpoints.load(latest, self.inner, self.optimizer, self.scheduler)
        result = self.result
        self.step = self.start_step = result.resumed_from = self.checkpoint_step = state["step"]
        result.history, result.train_tokens = state["history"], state["trainTokens"]
        self.resumed_tokens = result.train_tokens
        self.seconds_before = state["trainSeconds"]
        result.metrics = Metrics.model_validate(state["metrics"])
        log.info("resuming from %s at step %d/%d", latest, self.step, self.total)

    def run(self) -> TrainResult:
        self.started = time.perf_counter()
        self.model.train()
        acc_steps = self.spec.gradient_accumulation_steps
        self.bar = tqdm(total=self.total, initial=self.step, desc="training", unit="step", file=sys.stderr,
                        disable=None if self.accelerator.is_main_process else True)
        # The lean forwards are left out under FSDP, whose hooks gather each layer's parameters.
        with self.stop.installed(), contextlib.nullcontext() if self.sharded else lean_training(self.inner):
            while self.step < self.total:
                batches = self.my_batches(self.step // self.per_epoch)
                windows = [batches[i:i + acc_steps] for i in range(0, len(batches), acc_steps)]
                for window in windows[self.step % self.per_epoch:]:  # on resume, skips the windows already trained on
                    self._optimizer_step(window)
                    self._after_step()
                    if self.stopping:
                        self._stop()
                    if self.step == self.total:
                        break
        self.bar.close()
        self._evaluate("test", self.data.splits["test"])
        self.result.progress = self._progress()
        return self.result

    def _optimizer_step(self, window: list[list[int]]) -> None:
        """Accumulates the window's batches into one optimizer step."""
        acc, tokens = self.accelerator, 0
        for i, rows in enumerate(window):
            last = i == len(window) - 1
            weight = 1.0
            if self.sharded:  # this rank's share of the batch; gradients reduce-scattered every batch
                rows, weight = fsdp.rank_rows(rows, acc.process_index, acc.num_processes)
            # Under DDP gradients are all-reduced once per optimizer step, on the window's last batch.
            with contextlib.nullcontext() if last or self.sharded else acc.no_sync(self.model):
                batch = _to_device(self.train_collate([self.items[j] for j in rows]), acc.device)
                with acc.autocast():
                    loss_sum, n_targets, _ = batch_loss(self.model, self.inner, batch)
                    if self.sharded:
                        total, targets = fsdp.batch_sums(loss_sum, n_targets, weight)
                        loss, objective = total / targets.clamp(min=1), fsdp.objective(loss_sum, weight, targets) / len(window)
                    else:
                        loss = loss_sum / n_targets.clamp(min=1)
                        objective = loss / len(window)
                    if last and self.spec.drift_penalty:
                        objective = objective + drift_penalty(self.inner, self.initial, self.spec.drift_penalty)
                acc.backward(objective)
            tokens += batch_tokens(batch) * int(weight)
            self.window_loss, self.window_batches = self.window_loss + loss.item(), self.window_batches + 1
        acc.clip_grad_norm_(self.params, MAX_GRAD_NORM)  # on DTensors under FSDP: the whole model's norm
        self.optimizer.step()
        if self.result.state_bytes is None:  # measured once, with gradients and optimizer state in place
            self.result.state_bytes = rankwire.all_gather_json(fsdp.state_bytes(self.model, self.optimizer), acc.device)
        self.optimizer.zero_grad()
        self.scheduler.step()
        self.step += 1
        self.bar.update(1)
        # One all-reduce for both: the tokens, and whether any process got SIGTERM (all stop together).
        counts = acc.reduce(torch.tensor([tokens, int(self.stop.requested)], device=acc.device), "sum")
        self.result.train_tokens += int(counts[0])
        self.stopping = bool(counts[1])

    def _after_step(self) -> None:
        """Logs, evaluates, reports and checkpoints as the spec's intervals say."""
        spec, step, result = self.spec, self.step, self.result
        final = step == self.total
        logged = final or _every(step, spec.log_every_steps)
        evaluating = final or _every(step, spec.eval_every_steps)
        if logged or evaluating:
            result.history.append({"step": step})
        if logged:
            self._log_train_loss()
        if evaluating:
            self._evaluate("validation", self.data.splits["validation"])
        if self.checkpoints and (final or _every(step, spec.checkpoint_every_steps)):
            self._save_checkpoint()  # before the report, which then names it (progress.checkpointStep)
        if logged or evaluating:
            result.progress = self._progress()
            self.on_report(PodReport(progress=result.progress, metrics=result.metrics.model_copy()))

    def _log_train_loss(self) -> None:
        """The mean training loss since the last logged step, over all processes."""
        mean = torch.tensor(self.window_loss / self.window_batches, device=self.accelerator.device)
        metrics = self.result.metrics
        metrics.train_loss = float(self.accelerator.reduce(mean, "mean"))
        self.result.history[-1]["trainLoss"] = metrics.train_loss
        self.window_loss, self.window_batches = 0.0, 0
        self.bar.set_postfix(loss=f"{metrics.train_loss:.4f}")
        log.info("step %d/%d train loss %.4f", self.step, self.total, metrics.train_loss)

    @contextlib.contextmanager
    def _paused(self):
        """Time spent in the block does not count as training time (throughput, ETA)."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.paused_seconds += time.perf_counter() - t

    def _progress(self) -> Progress:
        elapsed = time.perf_counter() - self.started
        result, step, total = self.result, self.step, self.total
        result.train_seconds = self.seconds_before + elapsed - self.paused_seconds
        return Progress(
            step=step, total_steps=total, epoch=round(step / self.per_epoch, 4), percent=round(100 * step / total, 2),
            eta_seconds=round(elapsed / max(step - self.start_step, 1) * (total - step), 1),
            tokens_per_second=round(result.train_tokens / max(result.train_seconds, 1e-9), 1),
            train_tokens=result.train_tokens, train_seconds=round(result.train_seconds, 1), resumed_from_step=result.resumed_from,
            resumed_tokens=self.resumed_tokens, checkpoint_step=self.checkpoint_step,
        )

    def _evaluate(self, name: str, split: list[Tokenized]) -> None:
        with self._paused():
            loss, accuracy = evaluate(self.model, split, self.collate, self.spec.batch_size, self.accelerator)
        if loss is None:
            return
        setattr(self.result.metrics, f"{name}_loss", loss)
        setattr(self.result.metrics, f"{name}_accuracy", accuracy)
        self.result.history[-1].update({f"{name}Loss": loss, f"{name}Accuracy": accuracy})
        log.info("step %d/%d %s loss %.4f accuracy %.4f", self.step, self.total, name, loss, accuracy)

    def _stop(self) -> None:
        """SIGTERM: a checkpoint at this step (unless one was just saved), then Stopped."""
        saved = self.checkpoints is not None and _every(self.step, self.spec.checkpoint_every_steps)
        if self.checkpoints is not None and not saved:
            self._save_checkpoint()
        self.bar.close()
        where = "checkpoint saved" if self.checkpoints is not None else "no checkpoints configured"
        raise Stopped(f"stopped by SIGTERM after step {self.step}/{self.total}; {where}")

    def _save_checkpoint(self) -> None:
        with self._paused():
            result = self.result
            result.progress = self._progress()
            self.checkpoint_step = self.step
            self.checkpoints.save(self.step, self.inner, self.optimizer, self.scheduler, {
                "history": result.history, "trainTokens": result.train_tokens, "trainSeconds": result.train_seconds,
                "metrics": result.metrics.model_dump(mode="json"),
            })


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
    loop = TrainingLoop(model, data, pad_id, spec, accelerator, on_report, checkpoints)
    loop.resume()
    return loop.run()
