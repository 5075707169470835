"""One training loop for both stages, on accelerate: CPU or GPU, one process or many (torchrun,
`accelerate launch`), bf16 autocast where supported, atomic resumable checkpoints."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from llmql.train.collate import EpochDataset
from llmql.train.core.config import OptimConfig
from llmql.train.core.device import resolve_bf16

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"


class Backward:
    """How a loss function back-propagates: `backward(loss)` (accelerate's), and `no_sync()` to hold back a
    multi-process run's gradient all-reduce while a step back-propagates in parts (GradCache)."""

    def __init__(self, accelerator, module: nn.Module):
        self.accelerator, self.module = accelerator, module

    def __call__(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def no_sync(self):
        return self.accelerator.no_sync(self.module)


# loss_fn(module, batch, backward) -> (loss, number of real tokens in the batch); it calls backward itself
LossFn = Callable[[nn.Module, dict[str, torch.Tensor], Backward], tuple[torch.Tensor, int]]


@dataclass
class FitResult:
    module: nn.Module  # unwrapped, on the main process
    steps: int
    seconds: float
    tokens_per_second: float
    last_loss: float
    is_main: bool


def loader_workers(asked: int | None, cuda: bool) -> int:
    """DataLoader worker processes: as asked, else 4 with a GPU (the host prepares the next batches while it
    trains: one worker makes about 83,000 stage-1 tokens/s, bench/train_speed.py, and the GPU target is 200,000)
    and none on a CPU (every core is the model's; workers would take them)."""
    return asked if asked is not None else (4 if cuda else 0)


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint (a folder is complete once renamed from its temporary name)."""
    root = Path(out_dir) / CHECKPOINTS
    done = sorted(p for p in root.glob("step-*") if (p / STATE_FILE).is_file()) if root.is_dir() else []
    return done[-1] if done else None


def fit(
    module: nn.Module,
    dataset: EpochDataset,
    collate: Callable,
    loss_fn: LossFn,
    optim: OptimConfig,
    out_dir: Path,
    resume: bool = False,
    desc: str = "train",
) -> FitResult:
    """Train `module` for `optim.max_steps` (or `optim.epochs`) optimizer steps; resumable from checkpoints."""
    run = _Run.prepare(module, dataset, collate, optim)
    accelerator = run.accelerator
    step = _restore(accelerator, Path(out_dir), run.total) if resume else 0
    bar = tqdm(
        total=run.total,
        initial=step,
        desc=desc,
        unit="step",
        disable=not accelerator.is_local_main_process,
        dynamic_ncols=True,
    )
    start, tokens, last_loss = time.perf_counter(), 0, float("nan")
    epoch, skip = divmod(step, run.steps_per_epoch)
    run.module.train()
    while step < run.total:
        run.loader.set_epoch(epoch)
        dataset.set_epoch(epoch)
        batches = accelerator.skip_first_batches(run.loader, skip * optim.grad_accum) if skip else run.loader
        for batch in batches:
            loss, n_tokens = run.update(batch, loss_fn)
            tokens += n_tokens * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            step += 1
            last_loss = float(loss.detach())
            rate = tokens / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(loss=f"{last_loss:.4f}", tok_s=f"{rate:,.0f}", lr=f"{run.scheduler.get_last_lr()[0]:.2e}")
            bar.update(1)
            if step % optim.save_every == 0 and step < run.total:
                _save_checkpoint(accelerator, Path(out_dir), step)
            if step >= run.total:
                break
        epoch, skip = epoch + 1, 0
    bar.close()
    seconds = time.perf_counter() - start
    accelerator.wait_for_everyone()
    run.module.eval()
    return FitResult(
        accelerator.unwrap_model(run.module),
        step,
        seconds,
        tokens / max(seconds, 1e-9),
        last_loss,
        accelerator.is_main_process,
    )


def _restore(accelerator, out_dir: Path, total: int) -> int:
    """Load the newest checkpoint under `out_dir` into the prepared run; the step it was taken at, 0 if none."""
    checkpoint = latest_checkpoint(out_dir)
    if checkpoint is None:
        return 0
    accelerator.load_state(str(checkpoint))
    step = json.loads((checkpoint / STATE_FILE).read_text())["step"]
    log.info("resumed from %s (step %d of %d)", checkpoint, step, total)
    return step


@dataclass
class _Run:
    """What accelerate prepared for one training: the wrapped module, optimizer, loader and schedule."""

    accelerator: Any
    module: nn.Module
    optimizer: torch.optim.Optimizer
    loader: Any
    scheduler: Any
    params: list[nn.Parameter]
    optim: OptimConfig
    total: int  # optimizer steps
    steps_per_epoch: int

    @classmethod
    def prepare(cls, module: nn.Module, dataset: EpochDataset, collate: Callable, optim: OptimConfig) -> _Run:
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from accelerate.utils import DataLoaderConfiguration, set_seed
        from transformers import get_linear_schedule_with_warmup

        cuda = torch.cuda.is_available()
        bf16 = resolve_bf16(optim.bf16, "cuda" if cuda else "cpu")
        # AcceleratorState is a process-wide singleton: a second training in the same process (stage 1 then
        # stage 2, or another precision) must start from a fresh one. The process group (PartialState) is kept.
        AcceleratorState._reset_state(reset_partial_state=False)
        accelerator = Accelerator(
            mixed_precision="bf16" if bf16 else "no",
            gradient_accumulation_steps=optim.grad_accum,
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
            cpu=not cuda,
        )
        set_seed(optim.seed)
        if len(dataset) < optim.batch_size * accelerator.num_processes:
            raise ValueError(
                f"{len(dataset)} training examples is fewer than one batch ({optim.batch_size} per process)"
            )
        loader = DataLoader(
            dataset,
            batch_size=optim.batch_size,
            shuffle=True,
            collate_fn=collate,
            drop_last=True,
            num_workers=loader_workers(optim.num_workers, cuda),
            pin_memory=cuda,  # host-to-GPU copies from pinned pages, without blocking
        )
        params = [p for p in module.parameters() if p.requires_grad]
        # fused AdamW on a GPU: one kernel for every parameter's update instead of several per tensor
        optimizer = torch.optim.AdamW(params, lr=optim.learning_rate, weight_decay=optim.weight_decay, fused=cuda)
        batches_per_epoch = math.ceil(len(loader) / accelerator.num_processes)
        steps_per_epoch = max(1, batches_per_epoch // optim.grad_accum)
        total = optim.max_steps or max(1, math.ceil(optim.epochs * steps_per_epoch))
        warmup = optim.warmup_steps if optim.warmup_steps is not None else int(optim.warmup_ratio * total)
        scheduler = get_linear_schedule_with_warmup(optimizer, min(warmup, total), total)
        module, optimizer, loader, scheduler = accelerator.prepare(module, optimizer, loader, scheduler)
        return cls(accelerator, module, optimizer, loader, scheduler, params, optim, total, steps_per_epoch)

    def update(self, batch: dict[str, torch.Tensor], loss_fn: LossFn) -> tuple[torch.Tensor, int]:
        """Forward, backward and (when the accumulation window closes) one optimizer step."""
        accelerator = self.accelerator
        with accelerator.accumulate(self.module), accelerator.autocast():
            loss, n_tokens = loss_fn(self.module, batch, Backward(accelerator, self.module))
            if accelerator.sync_gradients and self.optim.max_grad_norm:
                accelerator.clip_grad_norm_(self.params, self.optim.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        return loss, n_tokens


def _save_checkpoint(accelerator, out_dir: Path, step: int) -> None:
    """Write `checkpoints/step-N` via a temporary folder and a rename; keep only the newest."""
    root = out_dir / CHECKPOINTS
    tmp = root / f".step-{step:07d}.tmp"
    final = root / f"step-{step:07d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=False)
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps({"step": step}))
        os.replace(tmp, final)
        for old in root.glob("step-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def remove_checkpoints(out_dir: Path) -> None:
    shutil.rmtree(Path(out_dir) / CHECKPOINTS, ignore_errors=True)
