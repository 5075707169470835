"""`llmql-search`, `llmql-eval` and `llmql tune`: searching an index, measuring it, and tuning how to search it.

Each command imports the library it calls inside its body: `--help` and option errors answer at once, and
torch, transformers or an engine's client load only for the command that needs them."""

from __future__ import annotations

import json

import click

from llmql.plugin.cli_options import CONTEXT, backend_options, fusion_option, parse_filter, parse_floats
from llmql.train.core.cli import Finite, check_split, cli_errors, renamed_option, with_renamed


@click.command("search", context_settings=CONTEXT)
@click.argument("query")
@backend_options()
@click.option("--model", default=None, help="Export (or model) directory to encode the query (dense, hybrid).")
@click.option("--ql-model", default=None, help="Export with --ql-scorer (or model directory) for --rerank.")
@click.option(
    "--mode",
    type=click.Choice(["hybrid", "bm25", "dense"]),
    default=None,
    help="[default: the model's search.json (llmql tune), else hybrid]",
)
@click.option("--k", type=click.IntRange(1, 10_000), default=10, help="Results to show.")
@click.option(
    "--depth",
    type=click.IntRange(1, 10_000),
    default=None,
    help="Candidates from each first stage, the list pages come from [default: search.json's, else 100].",
)
@click.option("--from", "offset", type=click.IntRange(0, None), default=0, help="Skip this many results (paging).")
@fusion_option()
@click.option(
    "--rerank-depth",
    type=click.IntRange(0, 1000),
    default=None,
    help="QL re-rank the fused top-N (0: off) [default: search.json's when --ql-model is given, else 0].",
)
@renamed_option("--rerank", "--rerank-depth", type=click.IntRange(0, 1000))
@click.option(
    "--ql-weight",
    type=Finite(0, 1),
    default=None,
    help="Weight of the QL score against the fused score [default: search.json's, else 0.5].",
)
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
    device,
    model,
    ql_model,
    mode,
    k,
    depth,
    offset,
    fusion,
    rerank_depth,
    ql_weight,
    filter_json,
    explain,
    as_json,
    opensearch_hybrid,
) -> None:
    """Search an index: BM25, dense kNN, or both fused client-side, optionally QL re-ranked."""
    from llmql.connectors.registry import open_backend
    from llmql.export.runtime import load_encoder, load_ql_scorer
    from llmql.plugin.search import HybridSearcher
    from llmql.plugin.search_settings import search_config
    from llmql.train.core.device import resolve_device

    if not query.strip():
        raise click.BadParameter("the query is empty", param_hint="QUERY")
    flt = parse_filter(filter_json)
    device = resolve_device(device)  # a GPU that is not here is refused before anything is loaded
    engine = None if opensearch_hybrid else open_backend(backend, url, create=False)  # before loading models
    encoder = load_encoder(model, runtime=runtime, device=device) if model else None
    if opensearch_hybrid:
        from llmql.plugin.server_fusion import hybrid_query, normalization_pipeline

        if encoder is None:
            raise click.UsageError("--opensearch-hybrid needs --model to encode the query")
        vector = encoder.encode_queries([query])[0].tolist()
        click.echo(json.dumps({"pipeline": normalization_pipeline(), "query": hybrid_query(query, vector, size=k)}))
        return
    scorer = load_ql_scorer(ql_model, runtime=runtime, device=device) if ql_model else None
    rerank_depth = with_renamed({"rerank_depth": rerank_depth})["rerank_depth"]
    overrides = {"mode": mode, "fusion": fusion, "rerank_depth": rerank_depth if scorer else 0, "ql_weight": ql_weight}
    overrides |= {"bm25_k": depth, "knn_k": depth} if depth else {}
    cfg = search_config(model, **overrides)
    try:
        searcher = HybridSearcher(engine, index, encoder, scorer, cfg)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    try:
        result = searcher.search(query, k, flt, offset=offset)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    _echo_result(result, as_json, explain, offset)


def _echo_result(result, as_json: bool, explain: bool, offset: int = 0) -> None:
    if as_json:
        hits = [h.__dict__ for h in result.hits]
        payload = {"query": result.query, "timings_ms": result.timings_ms, "ql_path": result.ql_path, "hits": hits}
        click.echo(json.dumps(payload, default=float))
        return
    for rank, h in enumerate(result.hits, start=offset + 1):
        title = f"{h.title} | " if h.title else ""
        text = f"[{h.passage[0]}:{h.passage[1]}] " + h.text[slice(*h.passage)] if h.passage else h.text
        click.echo(f"{rank:>3}. {h.score:9.4f}  {h.id}  {(title + text)[:100]}")
        if explain:
            click.echo("       " + "  ".join(f"{s}={v:.4f}" for s, v in h.stages.items()))
    if explain:
        click.echo(
            "timings (ms): "
            + ", ".join(f"{s} {v:.1f}" for s, v in result.timings_ms.items())
            + (f"; QL path: {result.ql_path}" if result.ql_path else "")
        )


def _runs(text: str) -> tuple[str, ...]:
    """--runs as names, each known; none at all is refused (an empty table says nothing)."""
    from llmql.plugin.evaluate import RUNS

    runs = tuple(dict.fromkeys(r.strip() for r in text.split(",") if r.strip()))
    unknown = [r for r in runs if r not in RUNS]
    if not runs or unknown:
        raise click.BadParameter(
            f"{'unknown run(s) ' + ', '.join(unknown) if unknown else 'no runs'}; choose from {', '.join(RUNS)}",
            param_hint="--runs",
        )
    return runs


@click.command("eval", context_settings=CONTEXT)
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="BEIR collection folder.")
@click.option("--split", default="test", help="Judged queries to evaluate (qrels/SPLIT.tsv).")
@backend_options()
@click.option("--model", default=None, help="Export (or model) directory for query encoding.")
@click.option("--ql-model", default=None, help="Export with --ql-scorer (or model directory) for QL runs.")
@click.option(
    "--runs",
    default="bm25,dense,hybrid",
    callback=lambda _ctx, _param, value: _runs(value),
    help="Comma-separated: bm25, dense, hybrid, hybrid+ql, ql, ql-dirichlet, tuned.",
)
@click.option(
    "--depth",
    type=click.IntRange(1, 10_000),
    default=100,
    help="First-stage candidates and run-file depth (R@1000 needs 1000).",
)
@click.option(
    "--rerank-depth",
    type=click.IntRange(1, 1000),
    default=None,
    help="Candidates re-ranked by QL (LLM or Dirichlet) [default: search.json's, else 100].",
)
@fusion_option("hybrid runs ")
@click.option(
    "--ql-weight",
    default=None,
    help="hybrid+ql: weight of the QL score in [0, 1] (0: hybrid, 1: QL alone). Several, comma-separated, give one "
    "row each (hybrid+ql@W) from a single QL pass: a cheap sweep on a validation split [default: search.json's, "
    "else 0.5].",
)
@click.option(
    "--tune-on",
    default=None,
    help="First tune fusion and QL settings on this split's judged queries (never the --split you evaluate) and "
    "write them to search.json beside --model; see `llmql tune`.",
)
@click.option(
    "--tune-queries",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="With --tune-on: only these query ids.",
)
@click.option(
    "--ql-path",
    type=click.Choice(["auto", "cached", "full"]),
    default="auto",
    help="QL from the [E] states stored at sync (--end-states) or by re-reading the documents.",
)
@click.option("--mu", type=Finite(0, None, min_open=True), default=1000.0, help="Dirichlet prior for ql-dirichlet.")
@click.option("--out", default="llmql-eval", help="Folder for TREC run files and summary.json.")
@click.option("--max-queries", type=click.IntRange(1, None), default=None, help="Only the first N judged queries.")
@cli_errors
def eval_main(ql_weight, mu, out, tune_on, tune_queries, **options) -> None:
    """Evaluate retrieval configurations with ir-measures: nDCG@10, MRR@10, Recall@100 (R@1000 when deep); each
    row shows its paired nDCG@10 difference from BM25 with a 95% bootstrap interval."""
    from llmql.plugin.evaluate import EvalConfig, evaluate, format_table

    ql_weights = parse_floats(ql_weight, "--ql-weight") if ql_weight else None  # option values first
    check_split(options["data"], options["split"])
    if tune_on is not None:
        _tune_before_eval(tune_on, tune_queries, options)
    cfg = EvalConfig(**options, ql_weights=ql_weights, dirichlet_mu=mu, out_dir=out)
    try:
        summary = evaluate(cfg)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    click.echo(format_table(summary))
    click.echo(f"run files and summary.json in {out}")


def _tune_before_eval(tune_on: str, tune_queries: str | None, options: dict) -> None:
    """`eval --tune-on`: tune on another split (or held-out queries of the same one) and save it beside --model."""
    if tune_on == options["split"] and not tune_queries:
        raise click.BadParameter(
            f"tuning on the split you evaluate ({tune_on!r}) would overstate it", param_hint="--tune-on"
        )
    if not options["model"]:
        raise click.UsageError("--tune-on needs --model")
    where = {key: options[key] for key in ("backend", "url", "index", "runtime", "device")}
    _run_tune(
        options["data"], tune_on, tune_queries, options["model"], options["ql_model"], options["depth"], None, where
    )


@click.command("tune", context_settings=CONTEXT)
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="BEIR collection folder.")
@click.option("--split", default="dev", help="Judged queries to tune on: a dev split, never the test split.")
@click.option(
    "--queries",
    "queries_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Only these query ids (one per line), e.g. training queries held out of training.",
)
@backend_options()
@click.option("--model", required=True, help="Export (or model) directory; search.json is written beside it.")
@click.option("--ql-model", default=None, help="Export with --ql-scorer: also tune the QL weight and re-rank depth.")
@click.option("--depth", type=click.IntRange(10, 1000), default=100, help="Candidates from each first stage.")
@click.option("--out", default=None, help="Folder for search.json [default: the --model directory].")
@cli_errors
def tune_cmd(data, split, queries_file, backend, url, index, runtime, device, model, ql_model, depth, out) -> None:
    """Choose the fusion (BM25 alone ... dense alone, or RRF), the QL weight and the re-rank depth by nDCG@10 on
    held-out queries, and write them to search.json, which llmql-search, llmql serve, llmql-eval and
    HybridSearcher then use by default. A setting that does not beat BM25 there leaves BM25 at weight 1."""
    check_split(data, split)
    where = {"backend": backend, "url": url, "index": index, "runtime": runtime, "device": device}
    report = _run_tune(data, split, queries_file, model, ql_model, depth, out, where)
    click.echo(json.dumps(report["search"]))
    figures, queries = report["figures"], report["tuned_on"]["queries"]
    click.echo(f"nDCG@10 on {queries} queries: BM25 {figures['bm25']:.4f}, chosen {figures['chosen']:.4f}")
    for note in report["notes"]:
        click.echo(f"note: {note}")


def _run_tune(data, split, queries_file, model, ql_model, depth, out, where: dict) -> dict:
    """`where`: backend, url, index, runtime and device, as the command was given them."""
    from llmql.plugin.tune import TuneConfig, tune

    cfg = TuneConfig(
        data=data,
        model=model,
        split=split,
        queries_file=queries_file,
        ql_model=ql_model,
        depth=depth,
        out=out,
        **where,
    )
    return tune(cfg)
