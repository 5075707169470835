"""`llmql` (the umbrella: quickstart, serve, train, export, sync, search, eval), `llmql-search`, `llmql-eval`."""

from __future__ import annotations

import json
import os

import click

from llmql.train.errors import cli_errors

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


def _backend_options(url: str | None = "./llmql-index", index: str = "llmql", url_note: str = ""):
    """--backend, --url, --index and --runtime, with per-command defaults."""

    def wrap(func):
        options = [
            click.option(
                "--backend", type=click.Choice(["embedded", "opensearch", "elasticsearch"]), default="embedded"
            ),
            click.option("--url", default=url, help=f"Server URL, or the embedded backend's directory.{url_note}"),
            click.option("--index", default=index, help="Index (or alias) name."),
            click.option(
                "--runtime",
                type=click.Choice(["auto", "onnx", "torch"]),
                default="auto",
                help="For exports: ONNX Runtime, or PyTorch on the source model (auto: PyTorch bf16 where "
                "the CPU has native bf16).",
            ),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return wrap


@click.command("search", context_settings=CONTEXT)
@click.argument("query")
@_backend_options()
@click.option("--model", default=None, help="Export (or model) directory to encode the query (dense, hybrid).")
@click.option("--ql-model", default=None, help="Export with --ql-scorer (or model directory) for --rerank.")
@click.option("--mode", type=click.Choice(["hybrid", "bm25", "dense"]), default="hybrid")
@click.option("--k", type=click.IntRange(1, 10_000), default=10, help="Results to show.")
@click.option("--fusion", type=click.Choice(["rrf", "minmax", "zscore"]), default="rrf")
@click.option("--rerank", type=int, default=0, help="QL re-rank the fused top-N (0: off).")
@click.option("--ql-weight", type=float, default=0.5, help="Weight of the QL score against the fused score.")
@click.option("--filter", "filter_json", default=None, help="Metadata filter as JSON, e.g. '{\"year\": [2020, 2021]}'.")
@click.option("--explain", is_flag=True, help="Show every stage's score and time.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--opensearch-hybrid",
    is_flag=True,
    help="Print the equivalent OpenSearch neural-search hybrid query and normalization pipeline instead.",
)
@cli_errors
def search_main(
    query,
    backend,
    url,
    index,
    runtime,
    model,
    ql_model,
    mode,
    k,
    fusion,
    rerank,
    ql_weight,
    filter_json,
    explain,
    as_json,
    opensearch_hybrid,
) -> None:
    """Search an index: BM25, dense kNN, or both fused client-side, optionally QL re-ranked."""
    from llmql.connectors.registry import open_backend
    from llmql.export.runtime import load_encoder, load_ql_scorer
    from llmql.plugin.search import HybridSearcher, SearchConfig

    if not query.strip():
        raise click.BadParameter("the query is empty", param_hint="QUERY")
    flt = _filter(filter_json)
    encoder = load_encoder(model, runtime=runtime) if model else None
    if opensearch_hybrid:
        from llmql.plugin.server_fusion import hybrid_query, normalization_pipeline

        if encoder is None:
            raise click.UsageError("--opensearch-hybrid needs --model to encode the query")
        vector = encoder.encode_queries([query])[0].tolist()
        click.echo(json.dumps({"pipeline": normalization_pipeline(), "query": hybrid_query(query, vector, size=k)}))
        return
    scorer = load_ql_scorer(ql_model, runtime=runtime) if ql_model else None
    cfg = SearchConfig(mode=mode, fusion=fusion, rerank_depth=rerank, ql_weight=ql_weight)
    try:
        searcher = HybridSearcher(open_backend(backend, url), index, encoder, scorer, cfg)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    result = searcher.search(query, k, flt)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "query": query,
                    "timings_ms": result.timings_ms,
                    "ql_path": result.ql_path,
                    "hits": [h.__dict__ for h in result.hits],
                },
                default=float,
            )
        )
        return
    for rank, h in enumerate(result.hits, start=1):
        title = f"{h.title} | " if h.title else ""
        click.echo(f"{rank:>3}. {h.score:9.4f}  {h.id}  {(title + h.text)[:100]}")
        if explain:
            click.echo("       " + "  ".join(f"{s}={v:.4f}" for s, v in h.stages.items()))
    if explain:
        click.echo(
            "timings (ms): "
            + ", ".join(f"{s} {v:.1f}" for s, v in result.timings_ms.items())
            + (f"; QL path: {result.ql_path}" if result.ql_path else "")
        )


def _filter(text: str | None):
    from llmql.connectors.base import check_filter

    if not text:
        return None
    try:
        return check_filter(json.loads(text))
    except json.JSONDecodeError as err:
        raise click.BadParameter(f"not JSON: {err.msg}", param_hint="--filter") from None
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--filter") from None


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"expected numbers separated by commas, got {text!r}", param_hint=option) from None


@click.command("eval", context_settings=CONTEXT)
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="BEIR collection folder.")
@click.option("--split", default="test")
@_backend_options()
@click.option("--model", default=None, help="Export (or model) directory for query encoding.")
@click.option("--ql-model", default=None, help="Export with --ql-scorer (or model directory) for QL runs.")
@click.option(
    "--runs", default="bm25,dense,hybrid", help="Comma-separated: bm25, dense, hybrid, hybrid+ql, ql, ql-dirichlet."
)
@click.option("--depth", type=int, default=100, help="First-stage candidates and run-file depth (R@1000 needs 1000).")
@click.option("--rerank-depth", type=int, default=100, help="Candidates re-ranked by QL (LLM or Dirichlet).")
@click.option("--fusion", type=click.Choice(["rrf", "minmax", "zscore"]), default="rrf")
@click.option(
    "--ql-weight",
    default="0.5",
    help="hybrid+ql: weight of the QL score in [0, 1] (0: hybrid, 1: QL alone). Several, comma-separated, give one "
    "row each (hybrid+ql@W) from a single QL pass: a cheap sweep on a validation split.",
)
@click.option(
    "--ql-path",
    type=click.Choice(["auto", "cached", "full"]),
    default="auto",
    help="QL from cached [E] states (sync --ql-cache) or by re-reading the documents.",
)
@click.option("--mu", type=float, default=1000.0, help="Dirichlet prior for ql-dirichlet.")
@click.option("--out", default="llmql-eval", help="Folder for TREC run files and summary.json.")
@click.option("--max-queries", type=int, default=None)
@cli_errors
def eval_main(
    data,
    split,
    backend,
    url,
    index,
    runtime,
    model,
    ql_model,
    runs,
    depth,
    rerank_depth,
    fusion,
    ql_weight,
    ql_path,
    mu,
    out,
    max_queries,
) -> None:
    """Evaluate retrieval configurations with ir-measures: nDCG@10, MRR@10, Recall@100 (R@1000 when deep)."""
    from llmql.plugin.evaluate import EvalConfig, evaluate, format_table

    cfg = EvalConfig(
        data=data,
        split=split,
        backend=backend,
        url=url,
        index=index,
        model=model,
        ql_model=ql_model,
        runs=tuple(r.strip() for r in runs.split(",") if r.strip()),
        depth=depth,
        rerank_depth=rerank_depth,
        fusion=fusion,
        ql_weights=_floats(ql_weight, "--ql-weight"),
        ql_path=ql_path,
        dirichlet_mu=mu,
        out_dir=out,
        max_queries=max_queries,
        runtime=runtime,
    )
    try:
        summary = evaluate(cfg)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    click.echo(format_table(summary))
    click.echo(f"run files and summary.json in {out}")


@click.command("serve", context_settings=CONTEXT)
@_backend_options()
@click.option("--model", default=None, help="Export (or model) directory for query encoding.")
@click.option("--ql-model", default=None, help="Export with --ql-scorer for /rerank and rerank=true.")
@click.option("--host", default="127.0.0.1")
@click.option("--port", type=int, default=8080)
@click.option("--max-k", type=click.IntRange(1, 10_000), default=100, help="Largest k a request may ask for.")
@click.option(
    "--allow-index",
    "allowed",
    multiple=True,
    help="Another index (or alias) requests may name besides --index (repeatable); no other is served.",
)
@cli_errors
def serve(backend, url, index, runtime, model, ql_model, host, port, max_k, allowed) -> None:
    """HTTP service: /search, /rerank, /embed, /health; OpenAPI at /openapi.json.

    Refuses to start when --model or --ql-model is not the model a served index was synced with."""
    import uvicorn

    from llmql.plugin.service import ServiceConfig, create_app

    app = create_app(
        ServiceConfig(
            backend=backend,
            url=url,
            index=index,
            model=model,
            ql_model=ql_model,
            max_k=max_k,
            runtime=runtime,
            indexes=tuple(allowed),
        )
    )
    uvicorn.run(app, host=host, port=port)


@click.command("quickstart", context_settings=CONTEXT)
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="BEIR collection (default: ../shared/data/scifact or $LLMQL_DATA).",
)
@click.option("--model", default="smollm2-135m", help="Base model: name, directory or .gguf.")
@click.option(
    "--workdir", default=None, help="Where models, export, index and runs go [default: $LLMQL_CACHE/quickstart]."
)
@click.option(
    "--corpus-docs",
    type=int,
    default=1000,
    help="Search a slice: every test-judged document plus random others up to this size (0: whole corpus).",
)
@click.option("--budget", type=float, default=1.0, help="Scales the training steps (1.0: about 15 min on 2 cores).")
@_backend_options(url=None, index="llmql-quickstart", url_note=" [default: WORKDIR/index]")
@cli_errors
def quickstart_cmd(data, model, workdir, corpus_docs, budget, backend, url, index, runtime) -> None:
    """Train (stage 1 + 2), export, sync and evaluate end to end; reuses whatever is already built."""
    from llmql.plugin.quickstart import QuickstartConfig, default_data, quickstart

    data = data or default_data()
    if data is None:
        raise click.UsageError("no collection found; pass --data BEIR_DIR (or set LLMQL_DATA)")
    if backend != "embedded" and not url:
        url = os.environ.get(f"LLMQL_{backend.upper()}_URL")
        if not url:
            raise click.UsageError(f"--backend {backend} needs --url (or LLMQL_{backend.upper()}_URL)")
    quickstart(
        QuickstartConfig(
            data=str(data),
            model=model,
            workdir=workdir,
            corpus_docs=corpus_docs or None,
            budget=budget,
            runtime=runtime,
            backend=backend,
            url=url,
            index=index,
        ),
        echo=click.echo,
    )


@click.group(context_settings=CONTEXT)
def main() -> None:
    """llmql: LLM-QL retrieval for the search engines you already run.

    Start with `llmql quickstart`; see each command's --help.
    """


def _register() -> None:
    from llmql.connectors.cli import main as sync_cmd
    from llmql.export.cli import main as export_cmd
    from llmql.train.cli import main as train_group

    main.add_command(quickstart_cmd)
    main.add_command(serve)
    main.add_command(train_group, "train")
    main.add_command(export_cmd, "export")
    main.add_command(sync_cmd, "sync")
    main.add_command(search_main, "search")
    main.add_command(eval_main, "eval")


_register()
