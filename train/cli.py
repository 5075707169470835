"""`llmql-train`: stage 1 (query likelihood), stage 2 (contrastive), and BM25 negative mining.

Each command imports the library it calls inside its body: `--help` and option errors answer at once, and
torch, transformers or an engine's client load only for the command that needs them."""

from __future__ import annotations

import logging

import click

from llmql.train.core.cli import Finite, check_split, cli_errors, positive

_BOOL_AUTO = click.Choice(["auto", "on", "off"])


def _is_main_process() -> bool:
    """Under torchrun or accelerate launch only rank 0 reports."""
    import os

    return os.environ.get("RANK", "0") == "0"


def _io_options(model_help: str):
    """What both stages read and write: the starting model, the collection, the split and the output."""

    def decorate(func):
        options = [
            click.option("--model", required=True, help=model_help),
            click.option(
                "--data", required=True, type=click.Path(exists=True, file_okay=False), help="BEIR collection folder."
            ),
            click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory."),
            click.option("--split", default="train", help="qrels split to train on (qrels/SPLIT.tsv)."),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _optim_options(lr: float, warmup: str, batch_size: int):
    """Options shared by both stages, with each stage's own defaults: the schedule, then how it runs."""

    def decorate(func):
        for option in reversed(_schedule_options(lr, warmup, batch_size) + _run_options()):
            func = option(func)
        return func

    return decorate


def _schedule_options(lr: float, warmup: str, batch_size: int) -> list:
    """Steps, epochs, learning rate and warm-up, batch and accumulation, seed."""
    return [
        click.option(
            "--max-steps", type=positive(), default=None, help="Stop after N optimizer steps (overrides --epochs)."
        ),
        click.option(
            "--epochs",
            type=Finite(0, None, min_open=True),
            default=1.0,
            show_default=True,
            help="Passes over the training data.",
        ),
        click.option(
            "--lr",
            type=Finite(0, 1, min_open=True),
            default=lr,
            show_default=True,
            help="Peak learning rate (AdamW).",
        ),
        click.option(
            "--warmup",
            default=warmup,
            show_default=True,
            help="Linear warm-up: a fraction of the steps (0.1) or a step count (100).",
        ),
        click.option(
            "--batch-size",
            type=positive(),
            default=batch_size,
            show_default=True,
            help="Examples (stage 1) or queries (stage 2) per process per micro-batch.",
        ),
        click.option(
            "--grad-accum",
            type=positive(),
            default=1,
            show_default=True,
            help="Micro-batches per optimizer step (adds no in-batch negatives).",
        ),
        click.option(
            "--seed",
            type=click.IntRange(0, 2**32 - 1),
            default=42,
            show_default=True,
            help="Seeds the shuffling, Input Corruption, negatives' order and the model's new weights.",
        ),
    ]


def _run_options() -> list:
    """Precision, memory, checkpoints, data workers, lengths, attention route, packing, compile, held-out queries,
    resume."""
    return [
        click.option(
            "--bf16",
            type=_BOOL_AUTO,
            default="auto",
            show_default=True,
            help="bf16 autocast; auto = where the CPU/GPU supports it.",
        ),
        click.option(
            "--gradient-checkpointing",
            is_flag=True,
            help="Trade compute for activation memory (turned on by itself when a step would not fit otherwise).",
        ),
        click.option(
            "--save-every",
            type=positive(),
            default=50,
            show_default=True,
            help="Steps between resumable checkpoints.",
        ),
        click.option(
            "--num-workers",
            type=click.IntRange(0, 64),
            default=None,
            help="DataLoader processes preparing batches (tokenisation, Input Corruption) while the model trains "
            "[default: 4 on a GPU, 0 on a CPU, whose cores the model needs].",
        ),
        click.option(
            "--max-passage-tokens",
            type=positive(32_768),
            default=200,
            show_default=True,
            help="Body tokens a passage keeps (the rest is cut); saved with the model, so sync and search use it.",
        ),
        click.option(
            "--max-query-tokens",
            type=positive(32_768),
            default=200,
            show_default=True,
            help="Tokens a query keeps (the rest is cut); saved with the model like --max-passage-tokens.",
        ),
        click.option(
            "--attention",
            type=click.Choice(["auto", "dense", "flex", "two-pass"]),
            default="auto",
            show_default=True,
            help="How attention runs (llmql.train.attention): the dense mask, FlexAttention (GPU), or Attention "
            "Stop's two passes; auto: the one measured fastest on this device (dense on a CPU and on an H200).",
        ),
        click.option(
            "--pack/--no-pack",
            default=None,
            help="Several examples a row, each under its own mask [default: with --attention flex].",
        ),
        click.option(
            "--compile",
            is_flag=True,
            help="torch.compile the decoder (slower start; measure before relying on it).",
        ),
        click.option(
            "--exclude-queries",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="File of query ids to leave out (a validation split).",
        ),
        click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint."),
    ]


def parse_warmup(text: str) -> tuple[float, int | None]:
    """'100' -> 100 steps; '0.1' or '1e-3' -> that fraction of the steps. Anything else is a usage error."""
    text = str(text).strip()
    if text.isdigit():
        return 0.0, int(text)
    try:
        ratio = float(text)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio < 1.0:
        raise click.BadParameter(
            f"{text!r} is neither a step count (100) nor a fraction of the steps in [0, 1) (0.1)", param_hint="--warmup"
        )
    return ratio, None


def _optim(kw: dict):
    from llmql.train.core.config import OptimConfig

    ratio, steps = parse_warmup(kw.pop("warmup"))
    bf16 = kw.pop("bf16")
    return OptimConfig(
        learning_rate=kw.pop("lr"),
        warmup_ratio=ratio,
        warmup_steps=steps,
        batch_size=kw.pop("batch_size"),
        grad_accum=kw.pop("grad_accum"),
        max_steps=kw.pop("max_steps"),
        epochs=kw.pop("epochs"),
        seed=kw.pop("seed"),
        bf16=None if bf16 == "auto" else bf16 == "on",
        gradient_checkpointing=kw.pop("gradient_checkpointing"),
        save_every=kw.pop("save_every"),
        num_workers=kw.pop("num_workers"),
        attention=kw.pop("attention"),
        pack=kw.pop("pack"),
        compile=kw.pop("compile"),
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def main(verbose: bool) -> None:
    """Train an LLM-QL retriever: `ql` (stage 1), then `contrastive` (stage 2).

    MODEL is a named offline model (smollm2-135m, gemma-3-270m), a Hugging Face causal-LM directory, a .gguf
    file, or the output of an earlier stage. Every output directory carries llmql.json and loads with no other
    arguments.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")


@main.command()
@_io_options(model_help="Base model: name, directory or .gguf.")
@click.option(
    "--train-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Extra Tevatron-style JSONL (query, positive_passages).",
)
@click.option(
    "--pseudo-queries",
    type=click.Choice(["none", "titles"]),
    default="none",
    help="titles: add each document title as a pseudo-query for its own text (labelled extra data).",
)
@click.option(
    "--mask-prob",
    type=Finite(0, 1, max_open=True),
    default=0.6,
    help="Input Corruption: share of document words masked.",
)
@click.option(
    "--corruption", type=click.Choice(["word", "token"]), default="word", help="Mask whole words (paper) or tokens."
)
@click.option(
    "--attention-stop/--no-attention-stop",
    default=True,
    help="Query tokens see the document only through [E] (ablate with --no-attention-stop).",
)
@click.option(
    "--ql-loss-on",
    type=click.Choice(["query", "all"]),
    default="query",
    help="Loss on query tokens (paper) or on all tokens (reference code).",
)
@click.option("--lora", is_flag=True, help="Train a LoRA (merged at the end) instead of a full fine-tune.")
@click.option("--lora-r", type=positive(1024), default=32, help="LoRA rank with --lora (alpha = 2r).")
@_optim_options(lr=1e-5, warmup="0.1", batch_size=8)
@cli_errors
def ql(**kw) -> None:
    """Stage 1: query-likelihood learning with Attention Stop and Input Corruption."""
    from llmql.train.core.config import LoraSettings, QLTrainConfig
    from llmql.train.run import train_ql

    check_split(kw["data"], kw["split"])
    resume = kw.pop("resume")
    optim = _optim(kw)
    lora_r = kw.pop("lora_r")
    lora = LoraSettings(r=lora_r, alpha=2 * lora_r) if kw.pop("lora") else None
    out = train_ql(QLTrainConfig(loss_on=kw.pop("ql_loss_on"), lora=lora, optim=optim, **kw), resume=resume)
    if _is_main_process():
        click.echo(f"stage-1 model written to {out}")


@main.command()
@_io_options(model_help="Stage-1 output (LLM-QL) or any base model (contrastive-only baseline).")
@click.option(
    "--negatives",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Tevatron-style JSONL with hard negatives; mined with BM25 into OUT when absent.",
)
@click.option("--group-size", type=positive(1024), default=16, help="Passages per query: 1 positive + n-1 negatives.")
@click.option("--temperature", type=Finite(0, 100, min_open=True), default=0.01, help="InfoNCE temperature.")
@click.option("--lora-r", type=click.IntRange(0, 1024), default=32, help="LoRA rank (alpha = 2r); 0 = full fine-tune.")
@click.option(
    "--lora-dropout", type=Finite(0, 1, max_open=True), default=0.1, help="Dropout on the LoRA layers' input."
)
@click.option("--merge", is_flag=True, help="Also write OUT/merged with the adapter merged in.")
@click.option(
    "--grad-cache-chunk",
    type=click.IntRange(1, None),
    default=None,
    help="Encode a step's queries and passages this many at a time (GradCache: the same gradients as one large "
    "batch, one chunk's memory). Default: only when the step would not fit in memory, then chosen for it.",
)
@_optim_options(lr=1e-4, warmup="100", batch_size=8)
@cli_errors
def contrastive(**kw) -> None:
    """Stage 2: contrastive bi-encoder (InfoNCE, last-token pooling, LoRA)."""
    from llmql.train.core.config import ContrastiveTrainConfig, LoraSettings
    from llmql.train.run import train_contrastive

    if not kw.get("negatives"):  # mined from the split's judgements
        check_split(kw["data"], kw["split"])
    resume = kw.pop("resume")
    optim = _optim(kw)
    r, dropout = kw.pop("lora_r"), kw.pop("lora_dropout")
    lora = LoraSettings(r=r, alpha=2 * r, dropout=dropout) if r > 0 else None
    out = train_contrastive(ContrastiveTrainConfig(lora=lora, optim=optim, **kw), resume=resume)
    if _is_main_process():
        click.echo(f"retriever written to {out} (base = QL scorer, adapter = retriever)")


@main.command("hold-out")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="BEIR collection folder.")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Id file to write; one that exists is kept if drawn with the same settings (or written by hand), "
    "else refused.",
)
@click.option("--share", type=Finite(0, 1, min_open=True, max_open=True), default=0.2, help="Of the training queries.")
@click.option("--most", type=positive(), default=200, help="At most this many queries.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=42, help="Seeds which queries are drawn.")
@cli_errors
def hold_out_cmd(data, out, share, most, seed) -> None:
    """Hold some training queries out: give the file to both stages (--exclude-queries) and tune the search
    settings on them (`llmql tune --split train --queries FILE`), so that tuning never sees a test query."""
    from pathlib import Path

    from llmql.train.data import hold_out_queries, read_id_file

    existed = Path(out).exists()
    path = hold_out_queries(data, out, share, most, seed)
    count = len(read_id_file(path))
    kept = f"kept the existing {path}: {count} training queries held out"
    click.echo(kept if existed else f"{count} training queries held out in {path}")


@main.command("mine-negatives")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="BEIR collection folder.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Training JSONL to write.")
@click.option("--split", default="train", help="qrels split whose queries get negatives (qrels/SPLIT.tsv).")
@click.option("--per-query", type=positive(), default=15, help="Negatives kept per query.")
@click.option("--depth", type=positive(10_000), default=100, help="Sample negatives from BM25's top DEPTH.")
@click.option(
    "--exclude-queries",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="File of query ids to leave out (the held-out tuning queries).",
)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=42, help="Seeds which negatives are sampled.")
@cli_errors
def mine_negatives_cmd(data, out, split, per_query, depth, exclude_queries, seed) -> None:
    """Mine BM25 hard negatives (bm25s) and write Tevatron-style training JSONL."""
    from pathlib import Path

    check_split(data, split)
    from llmql.train.data import groups_from_qrels, load_beir, read_id_file, write_training_jsonl
    from llmql.train.negatives import mine_negatives

    beir = load_beir(Path(data), split)
    groups = mine_negatives(
        groups_from_qrels(beir, read_id_file(exclude_queries)), beir.corpus, per_query, depth, seed=seed
    )
    write_training_jsonl(Path(out), groups)
    click.echo(f"{len(groups)} queries with negatives written to {out}")
