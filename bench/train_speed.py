"""Training throughput (tokens/s) of both LLM-QL stages with SmolLM2-135M, on the CPU or a GPU, fp32 and bf16
autocast where the device has native bf16, each with its share of the device's measured matmul peak; and how
many training tokens/s the host data path (tokenisation, Input Corruption, collation) produces in one process,
so that it can be shown not to be the bottleneck.

    .venv/bin/python -m bench.train_speed [--device auto] [--model smollm2-135m] [--steps 3]

Each model measurement is a full optimizer step (forward, backward, AdamW) on real SciFact text with the modules
the trainer uses. Share of peak: 6 FLOPs per parameter and token for a full fine-tune, 4 for LoRA (no weight
gradients for the frozen matrices), against the dense matmul rate of the same precision on the same device.
Writes bench/results/train_speed.json (train_speed_cuda.json on a GPU).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import torch

from bench.common import SHARED_DATA, matmul_peak_gflops, median, timed, write_results


def data_path_rate(dataset, collate, batch: int, tokens_of, seconds: float = 5.0) -> float:
    """Training tokens/s one process prepares: examples drawn, tokenised, corrupted and collated."""
    done, start, index = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        items = [dataset[(index + i) % len(dataset)] for i in range(batch)]
        done += tokens_of(collate(items))
        index += batch
    return done / (time.perf_counter() - start)


@dataclass
class Timing:
    """Where and how steps are timed, and the rows measured so far (each with its share of the matmul peak)."""

    device: str
    steps: int
    precisions: list[bool]  # bf16 autocast off / on (on only where the device has native bf16)
    peak: dict[bool, float]  # GFLOP/s of a dense matmul, by precision
    rows: list[dict] = field(default_factory=list)

    def time(self, step) -> float:
        """Median seconds of a step, each timed to completion (CUDA work is asynchronous)."""
        from llmql.train.device import is_cuda

        def run() -> None:
            step()
            if is_cuda(self.device):
                torch.cuda.synchronize(self.device)

        return median(timed(run, self.steps))

    def record(self, stage: str, path: str, bf16: bool, tokens: int, seconds: float, flops_per_token: float) -> None:
        rate = tokens / seconds
        row = {
            "stage": stage,
            "attention": path,
            "precision": "bf16 autocast" if bf16 else "fp32",
            "tokens_per_step": tokens,
            "seconds_per_step": seconds,
            "tokens_per_second": rate,
            "share_of_matmul_peak": flops_per_token * rate / (self.peak[bf16] * 1e9),
        }
        self.rows.append(row)
        print(row, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration (median reported)")
    parser.add_argument("--ql-batch", type=int, default=8)
    parser.add_argument("--queries", type=int, default=4, help="stage-2 queries per step")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-passage-tokens", type=int, default=200)
    parser.add_argument(
        "--attention",
        choices=["fused", "dense", "both"],
        default="both",
        help="fused: training's mask-free kernels (two passes for Attention Stop); dense: the per-example masks",
    )
    return parser.parse_args()


def contrastive_tokens(batch: dict) -> int:
    return int(batch["query_mask"].sum() + batch["passage_mask"].sum())


def training_batches(args: argparse.Namespace, lm, hf_tok) -> tuple[dict, dict, dict]:
    """One stage-1 and one stage-2 batch of real SciFact text (hard negatives mined with BM25), collated as the
    trainer does, and the host data path's tokens/s per worker for each stage."""
    from llmql.train.collate import ContrastiveExamples, QLExamples, collate_contrastive, collate_ql
    from llmql.train.data import groups_from_qrels, load_beir
    from llmql.train.modeling import build_model_config
    from llmql.train.negatives import mine_negatives
    from llmql.train.tokenization import Corruption, PromptTokenizer

    data = load_beir(SHARED_DATA / "scifact", "train")
    groups = mine_negatives(groups_from_qrels(data)[:64], data.corpus, per_query=args.group_size - 1, depth=30)
    config = build_model_config(hf_tok, lm, args.model, max_passage_tokens=args.max_passage_tokens)
    tok = PromptTokenizer(hf_tok.backend_tokenizer, config)
    ql_items = QLExamples([(g.query, g.positives[0]) for g in groups], tok, Corruption(0.6), seed=0)
    cl_items = ContrastiveExamples(groups, tok, args.group_size, seed=0)

    def ql_collate(items):
        return collate_ql(items, config.pad_token_id)

    def cl_collate(items):
        return collate_contrastive(items, config.pad_token_id)

    rates = {
        "ql": data_path_rate(ql_items, ql_collate, args.ql_batch, lambda b: int(b["attention_mask"].sum())),
        "contrastive": data_path_rate(cl_items, cl_collate, args.queries, contrastive_tokens),
    }
    ql_batch = ql_collate([ql_items[i] for i in range(args.ql_batch)])
    cl_batch = cl_collate([cl_items[i] for i in range(args.queries)])
    return ql_batch, cl_batch, rates


def time_ql(lm, batch: dict, paths: list[str], timing: Timing, params: int) -> None:
    """Stage 1: a full fine-tune step (as in the paper) with Attention Stop, on each attention path."""
    from llmql.train.device import autocast
    from llmql.train.losses import ql_loss
    from llmql.train.modeling import QLModel

    optimizer = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=1e-5)
    tokens = int(batch["attention_mask"].sum())
    for path, bf16 in [(path, bf16) for path in paths for bf16 in timing.precisions]:
        model = QLModel(lm, right_padded=path == "fused", two_pass=path == "fused").train()

        def step(bf16: bool = bf16, model=model) -> None:
            with autocast(bf16, timing.device):
                loss = ql_loss(model(**batch), batch["target_mask"])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        timing.record("ql (full fine-tune)", path, bf16, tokens, timing.time(step), 6 * params)


def time_contrastive(lm, batch: dict, paths: list[str], timing: Timing, params: int, group_size: int) -> None:
    """Stage 2: LoRA r32 on all projections, InfoNCE over the batch's queries and groups, on each path."""
    from peft import LoraConfig, get_peft_model

    from llmql.train.device import autocast
    from llmql.train.losses import info_nce
    from llmql.train.modeling import BiEncoder

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = get_peft_model(lm, LoraConfig(r=32, lora_alpha=64, lora_dropout=0.1, target_modules=targets))
    optimizer = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-4)
    for path, bf16 in [(path, bf16) for path in paths for bf16 in timing.precisions]:
        encoder = BiEncoder(lora, right_padded=path == "fused").train()

        def step(bf16: bool = bf16, encoder=encoder) -> None:
            with autocast(bf16, timing.device):
                q = encoder(batch["query_ids"], batch["query_mask"])
                p = encoder(batch["passage_ids"], batch["passage_mask"])
                loss = info_nce(q, p, group_size, 0.01)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        timing.record("contrastive (LoRA r32)", path, bf16, contrastive_tokens(batch), timing.time(step), 4 * params)


def print_ratios(rows: list[dict]) -> None:
    for name in ("ql (full fine-tune)", "contrastive (LoRA r32)"):
        rate = {(r["attention"], r["precision"]): r["tokens_per_second"] for r in rows if r["stage"] == name}
        for precision in ("fp32", "bf16 autocast"):
            if ("fused", precision) in rate and ("dense", precision) in rate:
                ratio = rate[("fused", precision)] / rate[("dense", precision)]
                print(f"{name}, {precision}: fused / dense masks = {ratio:.2f}x")


def main() -> None:
    args = parse_args()
    from llmql.train.device import bf16_supported, is_cuda, resolve_device
    from llmql.train.modeling import load_for_inference

    device = resolve_device(args.device)
    precisions = [False, True] if bf16_supported(device) else [False]
    lm, hf_tok, _ = load_for_inference(args.model)
    ql_batch, cl_batch, rates = training_batches(args, lm, hf_tok)
    print("data path, tokens/s per worker:", rates, flush=True)
    peak = {bf16: matmul_peak_gflops("bfloat16" if bf16 else "float32", device=device) for bf16 in precisions}
    matmul = {("bf16" if k else "fp32"): v for k, v in peak.items()}
    print(f"matmul peak on {device}: {matmul} GFLOP/s", flush=True)
    timing = Timing(device, args.steps, precisions, peak)
    paths = ["fused", "dense"] if args.attention == "both" else [args.attention]
    lm = lm.to(device)
    params = sum(p.numel() for n, p in lm.named_parameters() if "embed_tokens" not in n)
    time_ql(lm, {k: v.to(device) for k, v in ql_batch.items()}, paths, timing, params)
    cl_batch = {k: v.to(device) for k, v in cl_batch.items()}
    time_contrastive(lm, cl_batch, paths, timing, params, args.group_size)
    print_ratios(timing.rows)
    results = {"settings": vars(args), "device": device, "stages": timing.rows}
    results |= {"data_path_tokens_per_s_per_worker": rates, "matmul_gflops": matmul}
    write_results("train_speed_cuda" if is_cuda(device) else "train_speed", results)


if __name__ == "__main__":
    main()
