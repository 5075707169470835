"""Training throughput (tokens/s) of both LLM-QL stages with SmolLM2-135M: fp32 against bf16 autocast.

    .venv/bin/python bench/train_speed.py [--model smollm2-135m] [--steps 3]

Each measurement is a full optimizer step (forward, backward, AdamW) on real SciFact text, with the same
modules the trainer uses. Writes bench/results/train_speed.json.
"""

from __future__ import annotations

import argparse
import contextlib

import torch

from bench.common import SHARED_DATA, matmul_peak_gflops, median, timed, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration (median reported)")
    parser.add_argument("--ql-batch", type=int, default=8)
    parser.add_argument("--queries", type=int, default=4, help="stage-2 queries per step")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-passage-tokens", type=int, default=200)
    args = parser.parse_args()

    from peft import LoraConfig, get_peft_model

    from llmql.train.collate import ContrastiveExamples, QLExamples, collate_contrastive, collate_ql
    from llmql.train.data import groups_from_qrels, load_beir
    from llmql.train.losses import info_nce, ql_loss
    from llmql.train.modeling import BiEncoder, QLModel, build_model_config, load_for_inference
    from llmql.train.negatives import mine_negatives
    from llmql.train.tokenization import Corruption, PromptTokenizer

    data = load_beir(SHARED_DATA / "scifact", "train")
    groups = groups_from_qrels(data)[:64]
    groups = mine_negatives(groups, data.corpus, per_query=args.group_size - 1, depth=30)
    lm, hf_tok, _ = load_for_inference(args.model)
    config = build_model_config(hf_tok, lm, args.model, max_passage_tokens=args.max_passage_tokens)
    tok = PromptTokenizer(hf_tok.backend_tokenizer, config)
    ql_items = QLExamples([(g.query, g.positives[0]) for g in groups], tok, Corruption(0.6), seed=0)
    ql_batch = collate_ql([ql_items[i] for i in range(args.ql_batch)], config.pad_token_id)
    cl_items = ContrastiveExamples(groups, tok, args.group_size, seed=0)
    cl_batch = collate_contrastive([cl_items[i] for i in range(args.queries)], config.pad_token_id)

    results = {"settings": vars(args), "stages": []}
    results["matmul_gflops"] = {"fp32": matmul_peak_gflops("float32"), "bf16": matmul_peak_gflops("bfloat16")}
    print(
        f"matmul peak: fp32 {results['matmul_gflops']['fp32']:.0f} GFLOP/s, "
        f"bf16 {results['matmul_gflops']['bf16']:.0f} GFLOP/s"
    )

    def record(stage: str, bf16: bool, tokens: int, seconds: float) -> None:
        row = {
            "stage": stage,
            "precision": "bf16 autocast" if bf16 else "fp32",
            "tokens_per_step": tokens,
            "seconds_per_step": seconds,
            "tokens_per_second": tokens / seconds,
        }
        results["stages"].append(row)
        print(row)

    def autocast(bf16: bool):
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    # Stage 1: full fine-tune, as in the paper.
    model = QLModel(lm).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    tokens = int(ql_batch["attention_mask"].sum())
    for bf16 in (False, True):

        def step(bf16: bool = bf16) -> None:
            with autocast(bf16):
                loss = ql_loss(model(**ql_batch), ql_batch["target_mask"])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        record("ql (full fine-tune)", bf16, tokens, median(timed(step, args.steps)))

    # Stage 2: LoRA r32 on all projections, InfoNCE.
    lora = get_peft_model(
        lm,
        LoraConfig(
            r=32,
            lora_alpha=64,
            lora_dropout=0.1,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        ),
    )
    encoder = BiEncoder(lora).train()
    optimizer = torch.optim.AdamW([p for p in encoder.parameters() if p.requires_grad], lr=1e-4)
    tokens = int(cl_batch["query_mask"].sum() + cl_batch["passage_mask"].sum())

    def contrastive_step(bf16: bool) -> None:
        with autocast(bf16):
            q = encoder(cl_batch["query_ids"], cl_batch["query_mask"])
            p = encoder(cl_batch["passage_ids"], cl_batch["passage_mask"])
            loss = info_nce(q, p, args.group_size, 0.01)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    def measure(stage: str, bf16: bool) -> None:
        record(stage, bf16, tokens, median(timed(lambda: contrastive_step(bf16), args.steps)))

    measure("contrastive (LoRA r32)", bf16=False)
    measure("contrastive (LoRA r32)", bf16=True)
    # LoRA dropout: the paper's 0.1 against 0 (what bench/quality.py uses), under bf16 autocast.
    for module in lora.modules():
        if hasattr(module, "lora_dropout"):
            for key in list(module.lora_dropout):
                module.lora_dropout[key] = torch.nn.Identity()  # what peft builds when lora_dropout=0
    measure("contrastive (LoRA r32, dropout 0)", bf16=True)
    for name in ("ql (full fine-tune)", "contrastive (LoRA r32)"):
        fp32, bf16 = (r["tokens_per_second"] for r in results["stages"] if r["stage"] == name)
        print(f"{name}: bf16 autocast / fp32 = {bf16 / fp32:.2f}x")
    write_results("train_speed", results)


if __name__ == "__main__":
    main()
