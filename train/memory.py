"""How much memory a training step needs, and what to do when it does not fit.

An estimate, checked before the first step, so that a batch too large for the machine is either made to fit
(gradient checkpointing keeps one layer's activations instead of all of them) or refused with a message saying
what to lower, instead of the kernel killing the process mid-run without a word. The activation constants are
per token and layer of a Llama-style block in fp32 autocast-free training (SDPA attention), fitted to measured
peaks and pinned by a test on a tiny model.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30
# Share of the free memory a step may plan to use. A real run holds more than the step alone: the default stage-2
# step on SmolLM2 (GradCache chunks of 16) was estimated at 9.5 GiB (10.3 GiB by the constants below) and peaked
# at 15.9 GB resident in all (about 1.4 GB loaded before it; the rest allocator slack after many chunk-sized
# allocations, data and tokenizers).
HEADROOM = 0.6


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    vocab: int
    params: int  # every parameter
    trainable: int  # those with gradients (LoRA: the adapter's)

    @classmethod
    def of(cls, lm) -> ModelShape:
        config = lm.config
        return cls(
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            intermediate=getattr(config, "intermediate_size", 4 * config.hidden_size),
            heads=config.num_attention_heads,
            vocab=config.vocab_size,
            params=sum(p.numel() for p in lm.parameters()),
            trainable=sum(p.numel() for p in lm.parameters() if p.requires_grad),
        )


@dataclass(frozen=True)
class StepShape:
    """The largest step a stage can take: `rows` sequences of at most `length` tokens; `scored` tokens go through
    the LM head (stage 1: the query tokens; stage 2: none)."""

    rows: int
    length: int
    scored: int = 0
    lora: bool = False


# Activation floats kept per token and layer, in units of the hidden size, fitted to peaks measured with
# `tests/train/memory_probe.py` (SmolLM2-135M's shape and tiny models, SDPA, fp32, glibc on a CPU): stage 1 (full
# fine-tune) 15.6; stage 2 with LoRA 32 on SmolLM2's shape and about 40 on the probe's tiny model; with gradient
# checkpointing 10, and 19 (SmolLM2) to 23 (tiny). Much of a resident peak is what glibc keeps of freed
# activations: with constants fitted to SmolLM2 alone the tiny stage-2 steps measured 1.24x to 1.47x the estimate,
# so stage 2 takes the tiny model's higher readings (now 0.97x-1.14x). The tensors a step holds (the same probe
# with glibc's mmap threshold fixed, so freed blocks go back) came to 0.81x (stage 1), 0.73x and 0.33x (stage 2,
# plain and checkpointed) of the estimate. Rounded up: an estimate that errs high stops a run that would have
# fitted, one that errs low lets the kernel kill it.
PLAIN, PLAIN_LORA = 20, 22
CHECKPOINTED, CHECKPOINTED_LORA = 17, 8


def step_bytes(model: ModelShape, step: StepShape, checkpointing: bool, weights_on_device: bool = False) -> int:
    """Peak bytes a training step adds to the loaded model: gradients of the trainable parameters, and the
    larger of (the activations kept for the backward pass and the LM head's logits) and (AdamW's two moments,
    allocated at the optimizer step once the activations are freed); with `weights_on_device` (a GPU, where
    the model is moved when training starts) the weights too. fp32."""
    lora = int(step.lora)
    per_token_layer = CHECKPOINTED + CHECKPOINTED_LORA * lora if checkpointing else PLAIN + PLAIN_LORA * lora
    activations = step.rows * step.length * model.layers * per_token_layer * model.hidden
    activations += 2 * step.rows * model.layers * model.heads * step.length**2  # attention scores and weights
    logits = 3 * step.scored * model.vocab  # logits, log-softmax, their gradient
    gradients = model.trainable
    moments = 2 * model.trainable
    weights = model.params if weights_on_device else 0
    return 4 * (gradients + max(activations + logits, moments) + weights)


@dataclass(frozen=True)
class MemoryPlan:
    """How a step will run: `chunk` rows a forward (GradCache; None: all at once), with or without gradient
    checkpointing; `need` the estimate for that, `available` the free memory it was compared with."""

    fits: bool
    chunk: int | None
    checkpointing: bool
    need: int
    available: int

    def describe(self) -> str:
        how = [f"GradCache chunks of {self.chunk}"] if self.chunk else []
        how += ["gradient checkpointing"] if self.checkpointing else []
        return f"about {self.need / GIB:.1f} GiB of {self.available / GIB:.1f} GiB free" + (
            f" ({', '.join(how)})" if how else ""
        )


def plan_step(
    model: ModelShape,
    rows: int,
    length: int,
    available: int,
    on_gpu: bool = False,
    checkpointing: bool = False,
    chunk: int | None = None,
    can_chunk: bool = False,
    scored: int = 0,
    lora: bool = False,
) -> MemoryPlan:
    """The first way the step fits in HEADROOM of `available`: as asked; then (when the step may be split,
    `can_chunk`, and no chunk was asked for) in GradCache chunks, largest first; then each with gradient
    checkpointing. `fits` is False, with the smallest need, when nothing does."""
    budget = HEADROOM * available
    chunks: list[int | None] = [chunk] if chunk else [None]
    if can_chunk and not chunk:
        chunks += [c for c in (2**i for i in range(12, -1, -1)) if c < rows]
    options = [(c, checkpointing) for c in chunks] + ([] if checkpointing else [(c, True) for c in chunks])
    plans = []
    for size, ckpt in options:
        shape = StepShape(min(size or rows, rows), length, scored, lora)
        plans.append(MemoryPlan(True, size, ckpt, step_bytes(model, shape, ckpt, on_gpu), available))
        if plans[-1].need <= budget:
            return plans[-1]
    best = min(plans, key=lambda p: p.need)
    return MemoryPlan(False, best.chunk, best.checkpointing, best.need, available)


def available_bytes(device: str) -> int:
    """Free memory where the step runs: the GPU's free memory, or the host's available memory."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    import psutil

    return int(psutil.virtual_memory().available)
