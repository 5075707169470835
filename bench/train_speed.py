"""Training throughput (tokens/s) of both LLM-QL stages with SmolLM2-135M, on the CPU or a GPU, on each attention
route (`llmql.train.attention`: two-pass, dense mask, FlexAttention; padded or packed rows; with and without
torch.compile), fp32 and bf16 autocast where the device has native bf16, each with its share of the device's
measured matmul peak; and how many training tokens/s the host data path (tokenisation, Input Corruption,
collation) produces in one process, so that it can be shown not to be the bottleneck.

    .venv/bin/python -m bench.train_speed [--device auto] [--model smollm2-135m] [--steps 3]
    .venv/bin/python -m bench.train_speed --device cuda --ql-batch 64 --queries 16 --group-size 16 --compile

Each model measurement is a full optimizer step (forward, backward, AdamW) on real SciFact text with the modules
the trainer uses. Share of peak: 6 FLOPs per parameter and token for a full fine-tune, 4 for LoRA (no weight
gradients for the frozen matrices), against the dense matmul rate of the same precision on the same device.
Each row also holds the trainer's memory estimate for its step (`llmql.train.memory`, fitted to a CPU's resident
peaks); on a GPU, the steps' peak allocated memory beside it, the figures a GPU fit of that estimate needs.
Writes bench/results/train_speed.json (train_speed_cuda.json on a GPU).
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from bench.common import SHARED_DATA, matmul_peak_gflops, median, timed, write_results
from llmql.train.memory import GIB, ModelShape, StepShape, step_bytes


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
    peak_bytes: int | None = None  # the last timed step's peak device memory (CUDA only)

    def time(self, step) -> float:
        """Median seconds of a step, each timed to completion (CUDA work is asynchronous); on CUDA also the
        steps' peak allocated memory, to compare with the trainer's memory estimate."""
        from llmql.train.core.device import is_cuda

        cuda = is_cuda(self.device)

        def run() -> None:
            step()
            if cuda:
                torch.cuda.synchronize(self.device)

        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        seconds = median(timed(run, self.steps))
        self.peak_bytes = torch.cuda.max_memory_allocated(self.device) if cuda else None
        return seconds

    def record(
        self, stage: str, path: str, bf16: bool, tokens: int, seconds: float, flops_per_token: float, estimate: int
    ) -> None:
        """One measured row; `estimate`: the trainer's memory estimate for the step (train.memory.step_bytes)."""
        rate = tokens / seconds
        row = {
            "stage": stage,
            "attention": path,
            "precision": "bf16 autocast" if bf16 else "fp32",
            "tokens_per_step": tokens,
            "seconds_per_step": seconds,
            "tokens_per_second": rate,
            "share_of_matmul_peak": flops_per_token * rate / (self.peak[bf16] * 1e9),
            "estimated_memory_gib": estimate / GIB,
        }
        if self.peak_bytes is not None:  # the model's weights are on the device: the estimate counts them
            row |= {"peak_allocated_gib": self.peak_bytes / GIB, "peak_over_estimate": self.peak_bytes / estimate}
        self.rows.append(row)
        print(row, flush=True)


def results_name(model: str, cuda: bool) -> str:
    """train_speed[_cuda], with a named model other than the default after a dash (another backbone's figures
    do not replace SmolLM2's)."""
    name = "train_speed_cuda" if cuda else "train_speed"
    return name if model == "smollm2-135m" else f"{name}-{Path(model).name}"


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
        "--routes",
        default="two-pass,dense,dense+pack,flex+pack",
        help="attention routes to time (ROUTE or ROUTE+pack; llmql.train.attention), comma-separated",
    )
    parser.add_argument(
        "--compile", action="store_true", help="also time stage 1's last route under torch.compile (compiling costs)"
    )
    parser.add_argument("--fp32", default="first", choices=["first", "all", "none"], help="fp32 rows for which routes")
    return parser.parse_args()


@dataclass(frozen=True)
class Variant:
    route: str
    pack: bool
    compiled: bool = False

    @property
    def name(self) -> str:
        return self.route + ("+pack" if self.pack else "") + ("+compile" if self.compiled else "")


def variants(args: argparse.Namespace) -> list[Variant]:
    out = [Variant(r.split("+")[0], r.endswith("+pack")) for r in args.routes.split(",") if r]
    return out + ([replace(out[-1], compiled=True)] if args.compile and out else [])


def training_items(args: argparse.Namespace, lm, hf_tok):
    """Stage-1 and stage-2 examples of real SciFact text (hard negatives mined with BM25), the pad id, and the
    host data path's tokens/s per worker for each stage."""
    from llmql.train import collate
    from llmql.train.core.tokenization import Corruption, PromptTokenizer
    from llmql.train.data import groups_from_qrels, load_beir
    from llmql.train.modeling import build_model_config
    from llmql.train.negatives import mine_negatives

    data = load_beir(SHARED_DATA / "scifact", "train")
    count = max(64, args.ql_batch, args.queries)
    groups = mine_negatives(groups_from_qrels(data)[:count], data.corpus, per_query=args.group_size - 1, depth=30)
    config = build_model_config(hf_tok, lm, args.model, max_passage_tokens=args.max_passage_tokens)
    tok = PromptTokenizer(hf_tok.backend_tokenizer, config)
    ql_items = collate.QLExamples([(g.query, g.positives[0]) for g in groups], tok, Corruption(0.6), seed=0)
    cl_items = collate.ContrastiveExamples(groups, tok, args.group_size, seed=0)
    pad_id = config.pad_token_id
    ql_rate = data_path_rate(ql_items, lambda i: collate.collate_ql(i, pad_id), args.ql_batch, collate.ql_tokens)
    cl_rate = data_path_rate(
        cl_items, lambda i: collate.collate_contrastive(i, pad_id), args.queries, collate.contrastive_tokens
    )
    rates = {"ql": ql_rate, "contrastive": cl_rate}
    ql = [ql_items[i] for i in range(args.ql_batch)]
    cl = [cl_items[i] for i in range(args.queries)]
    return ql, cl, pad_id, rates


def prepared(lm, variant: Variant, device: str):
    """A copy of the model on `device` set up for the variant (route, compile), and the packed row length."""
    from llmql.train.attention import prepare

    model = copy.deepcopy(lm).to(device).train()
    _, pack = prepare(model, variant.route, variant.pack, variant.compiled, device)
    return model, pack


def time_ql(lm, items: list, pad_id: int, runs: list[tuple[Variant, bool]], timing: Timing, params: int) -> None:
    """Stage 1: a full fine-tune step (as in the paper) with Attention Stop, per variant and precision."""
    from llmql.train.collate import collate_ql, ql_tokens
    from llmql.train.core.device import autocast
    from llmql.train.losses import ql_loss
    from llmql.train.modeling import QLModel

    for variant, bf16 in runs:
        model, pack = prepared(lm, variant, timing.device)
        batch = {k: v.to(timing.device) for k, v in collate_ql(items, pad_id, "query", pack).items()}
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=timing.device.startswith("cuda"))
        ql = QLModel(model, right_padded=True, route=variant.route)

        def step(bf16: bool = bf16, ql=ql, batch=batch, optimizer=optimizer) -> None:
            with autocast(bf16, timing.device):
                loss = ql_loss(ql(**batch), batch["target_mask"])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        tokens = ql_tokens(batch)
        rows, length = batch["input_ids"].shape
        shape = StepShape(rows, length, scored=int(batch["target_mask"].sum()))
        estimate = step_bytes(ModelShape.of(model), shape, False, weights_on_device=True)
        timing.record("ql (full fine-tune)", variant.name, bf16, tokens, timing.time(step), 6 * params, estimate)


def time_contrastive(lm, items, pad_id, runs: list[tuple[Variant, bool]], timing: Timing, params, group_size) -> None:
    """Stage 2: LoRA r32 on all projections, InfoNCE over the batch's queries and groups, per variant."""
    from peft import LoraConfig, get_peft_model

    from llmql.train.collate import collate_contrastive, contrastive_tokens
    from llmql.train.core.device import autocast
    from llmql.train.losses import info_nce
    from llmql.train.modeling import BiEncoder
    from llmql.train.run import ContrastiveModel

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    for variant, bf16 in runs:
        model, pack = prepared(lm, variant, timing.device)
        lora = get_peft_model(model, LoraConfig(r=32, lora_alpha=64, lora_dropout=0.1, target_modules=targets))
        batch = {k: v.to(timing.device) for k, v in collate_contrastive(items, pad_id, pack).items()}
        params_lora = [p for p in lora.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params_lora, lr=1e-4, fused=timing.device.startswith("cuda"))
        both = ContrastiveModel(BiEncoder(lora, right_padded=True, route=variant.route))

        def step(bf16: bool = bf16, both=both, batch=batch, optimizer=optimizer) -> None:
            with autocast(bf16, timing.device):
                loss = info_nce(*both(**batch), group_size, 0.01)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        tokens = contrastive_tokens(batch)
        rows = len(batch["query_ids"]) + len(batch["passage_ids"])
        length = max(batch["query_ids"].shape[1], batch["passage_ids"].shape[1])
        estimate = step_bytes(ModelShape.of(lora), StepShape(rows, length, lora=True), False, weights_on_device=True)
        timing.record("contrastive (LoRA r32)", variant.name, bf16, tokens, timing.time(step), 4 * params, estimate)


def print_ratios(rows: list[dict]) -> None:
    """Each route against the first one timed, per stage and precision."""
    for name in ("ql (full fine-tune)", "contrastive (LoRA r32)"):
        for precision in ("fp32", "bf16 autocast"):
            rate = {
                r["attention"]: r["tokens_per_second"]
                for r in rows
                if (r["stage"], r["precision"]) == (name, precision)
            }
            if len(rate) > 1:
                first = next(iter(rate))
                print(f"{name}, {precision}: " + ", ".join(f"{k} {v / rate[first]:.2f}x" for k, v in rate.items()))


def main() -> None:
    args = parse_args()
    from llmql.train.attention import fast_math
    from llmql.train.core.device import bf16_supported, is_cuda, resolve_device
    from llmql.train.modeling import load_for_inference

    device = resolve_device(args.device)
    precisions = [False, True] if bf16_supported(device) else [False]
    lm, hf_tok, _ = load_for_inference(args.model)
    ql_items, cl_items, pad_id, rates = training_items(args, lm, hf_tok)
    print("data path, tokens/s per worker:", rates, flush=True)
    fast_math(device)  # TF32, as the trainer sets it: the fp32 peak is then the TF32 one
    peak = {bf16: matmul_peak_gflops("bfloat16" if bf16 else "float32", device=device) for bf16 in precisions}
    matmul = {("bf16" if k else "fp32"): v for k, v in peak.items()}
    print(f"matmul peak on {device}: {matmul} GFLOP/s", flush=True)
    timing = Timing(device, args.steps, precisions, peak)
    chosen = variants(args)
    fp32 = {"first": chosen[:1], "all": chosen, "none": []}[args.fp32]
    runs = [(v, True) for v in chosen if True in precisions] + [(v, False) for v in fp32]
    if True not in precisions:
        runs = [(v, False) for v in chosen]
    params = sum(p.numel() for n, p in lm.named_parameters() if "embed_tokens" not in n)
    for stage, fn in (("ql", time_ql), ("contrastive", time_contrastive)):
        extra = (args.group_size,) if stage == "contrastive" else ()
        for variant, bf16 in runs:
            if variant.compiled and stage == "contrastive":
                continue  # one compiled row (stage 1) keeps the lease short
            try:
                fn(lm, ql_items if stage == "ql" else cl_items, pad_id, [(variant, bf16)], timing, params, *extra)
            except Exception as err:  # one route failing (a kernel missing on this device) leaves the others
                print(f"{stage} {variant.name} bf16={bf16}: failed: {type(err).__name__}: {err}", flush=True)
                timing.rows.append({"stage": stage, "attention": variant.name, "error": f"{type(err).__name__}: {err}"})
            results = {"settings": vars(args), "device": device, "stages": timing.rows}  # written after every row
            results |= {"data_path_tokens_per_s_per_worker": rates, "matmul_gflops": matmul}
            write_results(results_name(args.model, is_cuda(device)), results)
    print_ratios([r for r in timing.rows if "error" not in r])


if __name__ == "__main__":
    main()
