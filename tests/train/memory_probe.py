"""Measure one training step's peak memory in a fresh process (so the peak is the step's own), for the memory
estimate's test and for calibrating it:

    python -m tests.train.memory_probe '{"stage": 2, "hidden": 64, "layers": 2, "rows": 4, "group": 4, "length": 128}'

Prints {"measured": bytes, "estimated": bytes, ...} as JSON.
With MALLOC_MMAP_THRESHOLD_=65536 in its environment, freed blocks go back to the system and the peak is
about the tensors the step holds; without it, the resident peak a training process reaches on this machine.
"""

from __future__ import annotations

import json
import sys

from bench.common import memory_mib, reset_peak_memory


def build(spec: dict):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    hidden = spec["hidden"]
    config = AutoConfig.for_model(
        "llama",
        vocab_size=spec.get("vocab", 1000),
        hidden_size=hidden,
        intermediate_size=spec.get("intermediate", hidden * 8 // 3),
        num_hidden_layers=spec["layers"],
        num_attention_heads=spec.get("heads", 4),
        num_key_value_heads=spec.get("kv_heads", 2),
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")


def step(lm, spec: dict, rows: int, length: int):
    """One training step's forward and backward (stage 1 or 2, as the trainer runs it); returns its StepShape."""
    import torch

    from llmql.train.losses import info_nce, ql_loss
    from llmql.train.memory import StepShape
    from llmql.train.modeling import BiEncoder, QLModel
    from llmql.train.run import ContrastiveModel

    vocab = lm.config.vocab_size
    ids = torch.randint(3, vocab, (rows, length))
    mask = torch.ones_like(ids)
    if spec["stage"] == 2:
        group = spec["group"]
        passages = torch.randint(3, vocab, (rows * group, length))
        q, p = ContrastiveModel(BiEncoder(lm))(ids, mask, passages, torch.ones_like(passages))
        info_nce(q, p, group, 0.01).backward()
        return StepShape(rows * (group + 1), length, lora=spec.get("lora", True))
    query = min(spec["query"], length // 2)
    ends = torch.full((rows,), length - query - 1)
    target = torch.zeros_like(ids)
    target[:, length - query :] = 1
    ql_loss(QLModel(lm, attention_stop=True)(ids, mask, ends, target), target).backward()
    return StepShape(rows, length, scored=rows * query)


def main(spec: dict) -> dict:
    import torch

    from llmql.train.core.config import LoraSettings
    from llmql.train.memory import ModelShape, step_bytes
    from llmql.train.run import _with_lora

    torch.set_num_threads(1)
    lm = build(spec)
    checkpointing = spec.get("checkpointing", False)
    lora = spec["stage"] == 2 and spec.get("lora", True)
    if lora:
        lm = _with_lora(lm, LoraSettings())
    if checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if lora:
            lm.enable_input_require_grads()
    lm.train()
    optimizer = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=1e-5)
    step(lm, spec, 1, 16)  # a run's one-time costs (kernels, thread pools, the autograd engine) paid first
    lm.zero_grad(set_to_none=True)
    reset_peak_memory()  # the peak is then the step's own (getrusage's would be the pytest parent's, if larger)
    before = memory_mib("VmRSS")
    shape = step(lm, spec, spec["rows"], spec["length"])
    optimizer.step()
    peak = memory_mib("VmHWM")
    estimated = step_bytes(ModelShape.of(lm), shape, checkpointing)
    measured = int((peak - before) * 2**20)
    return {"measured": measured, "estimated": estimated, "ratio": measured / estimated, **spec}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
