"""What the plain causal forward (embeddings, stage 2, stage 1 without Attention Stop) pays when transformers is
given no 2D mask: it then reads the position ids as possibly packed rows and builds a [B, 1, L, L] mask through
vmap, where an all-ones 2D mask lets it hand the kernel none (SDPA's is_causal; FlashAttention on a GPU). Both
forms timed alternately in one process, on the same rows, with the outputs compared.

    .venv/bin/python -m bench.causal_mask [--model smollm2-135m] [--device auto] [--repeats 5]

Writes bench/results/causal_mask.json (causal_mask_cuda.json on a GPU).
"""

from __future__ import annotations

import argparse

import torch

from bench.common import median, timed, write_results
from llmql.train.core.device import resolve_device
from llmql.train.core.model_sources import resolve_model
from llmql.train.modeling import causal_states, decoder_of, load_causal_lm

SHAPES = ((1, 16), (16, 200), (64, 200))  # a one-query encode, a CPU passage batch, a larger one


def time_pair(lm, ids: torch.Tensor, repeats: int) -> dict:
    """Median seconds of the no-mask and all-ones-mask forwards, run alternately after a warm-up of each."""
    device = ids.device

    def bare() -> torch.Tensor:
        return decoder_of(lm)(input_ids=ids, use_cache=False).last_hidden_state

    def ones() -> torch.Tensor:
        return causal_states(lm, ids)

    times: dict[str, list[float]] = {"no_mask": [], "ones_mask": []}
    with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
        difference = (bare().float() - ones().float()).abs().max().item()
        for _ in range(repeats):
            for name, fn in (("no_mask", bare), ("ones_mask", ones)):
                times[name].append(timed(lambda fn=fn: _finished(fn, device), 1, warmup=0)[0])
    bare_s, ones_s = median(times["no_mask"]), median(times["ones_mask"])
    return {
        "no_mask_ms": 1000 * bare_s,
        "ones_mask_ms": 1000 * ones_s,
        "speedup": bare_s / ones_s,
        "max_abs_diff": difference,
    }


def _finished(fn, device: torch.device) -> None:
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each form per shape (median)")
    args = parser.parse_args()
    device = torch.device(resolve_device(args.device))
    lm = load_causal_lm(resolve_model(args.model)).to(device).eval()
    rows = []
    for batch, length in SHAPES:
        ids = torch.randint(3, lm.config.vocab_size, (batch, length), device=device)
        row = {"batch": batch, "tokens": length, **time_pair(lm, ids, args.repeats)}
        rows.append(row)
        print(row, flush=True)
    name = "causal_mask_cuda" if device.type == "cuda" else "causal_mask"
    write_results(name, {"settings": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
