"""`llmql`, the umbrella command: quickstart, serve, tune, and every other command under one name.

Each command imports the library it calls inside its body: `--help` and option errors answer at once, and
torch, transformers or an engine's client load only for the command that needs them."""

from __future__ import annotations

import os

import click

from llmql.plugin.cli_options import CONTEXT, backend_options
from llmql.plugin.search_settings import MAX_K
from llmql.train.core.cli import Finite, cli_errors, renamed_option, with_renamed


@click.command("serve", context_settings=CONTEXT)
@backend_options()
@click.option("--model", default=None, help="Export (or model) directory for query encoding.")
@click.option("--ql-model", default=None, help="Export with --ql-scorer for /rerank and rerank=true.")
@click.option("--model-name", default="llmql", help="The model name the OpenAI-style /v1 endpoints answer to.")
@click.option(
    "--host", default="127.0.0.1", help="Address to listen on (0.0.0.0: every interface; mind who can reach it)."
)
@click.option("--port", type=click.IntRange(1, 65_535), default=8080, help="Port to listen on.")
@click.option(
    "--max-k", type=click.IntRange(1, MAX_K), default=100, help="Largest k (or from + size) a request may ask for."
)
@click.option(
    "--rerank-depth",
    type=click.IntRange(1, MAX_K),
    default=50,
    help="Candidates QL re-ranks when a request asks for it and search.json sets no depth.",
)
@click.option(
    "--allow-index",
    "allowed",
    multiple=True,
    help="Another index (or alias) requests may name besides --index (repeatable); no other is served.",
)
@click.option(
    "--batching/--no-batching",
    default=True,
    help="Concurrent requests share model calls (one call per device at a time).",
)
@click.option(
    "--max-queued-tokens",
    type=click.IntRange(64, None),
    default=None,
    help="Tokens of queued requests one shared model call takes, at most (estimated, before padding)  [default: 16384]",
)
@renamed_option("--max-batch-tokens", "--max-queued-tokens", type=click.IntRange(64, None))
@click.option("--max-wait-ms", type=Finite(0, 1000), default=5.0, help="How long a call waits for others to join.")
@click.option(
    "--max-queue",
    type=click.IntRange(1, 10_000),
    default=32,
    help="Requests waiting for the model; one more is answered 503 with Retry-After.",
)
@click.option(
    "--keep-alive-s",
    type=click.IntRange(1, 3600),
    default=75,
    help="Seconds an idle connection stays open. Longer than a load balancer's idle timeout (60 s on common "
    "ones) and a busy client's pause, so that no request is sent on a connection the server is closing.",
)
@click.option(
    "--request-timeout-s",
    type=Finite(0, 3600, min_open=True),
    default=30.0,
    help="A request's headers, and then its body, must arrive within this many seconds; else 408 and the "
    "connection is closed (a client that never finishes its request holds nothing for long).",
)
@cli_errors
def serve(
    backend,
    url,
    index,
    runtime,
    device,
    model,
    ql_model,
    model_name,
    host,
    port,
    keep_alive_s,
    request_timeout_s,
    max_k,
    rerank_depth,
    allowed,
    **batching,
) -> None:
    """HTTP service: /search, /rerank, /embed, /health, and /v1/embeddings (OpenAI's shape) and /v1/rerank
    (Cohere's); OpenAPI at /openapi.json.

    Refuses to start when --model is not the model a served index was synced with; a --ql-model of another model
    than the index's cached [E] states is served by re-reading the documents (slower; it says so at start-up)."""
    import uvicorn

    from llmql.plugin.http_server import header_deadline_protocol
    from llmql.plugin.service import ServiceConfig, create_app
    from llmql.plugin.service_logs import log_as_json_lines

    log_as_json_lines()
    batching = with_renamed(batching)
    batching["max_queued_tokens"] = batching["max_queued_tokens"] or 16384

    app = create_app(
        ServiceConfig(
            backend=backend,
            url=url,
            index=index,
            model=model,
            ql_model=ql_model,
            max_k=max_k,
            rerank_depth=rerank_depth,
            runtime=runtime,
            device=device,
            indexes=tuple(allowed),
            model_name=model_name,
            request_timeout_s=request_timeout_s,
            **batching,
        )
    )
    protocol = header_deadline_protocol(request_timeout_s, app.state.metrics.timeouts.labels("headers").inc)
    uvicorn.run(
        app, host=host, port=port, timeout_keep_alive=keep_alive_s, http=protocol, access_log=False, log_config=None
    )


@click.command("quickstart", context_settings=CONTEXT)
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="BEIR collection (default: ../shared/data/scifact or $LLMQL_DATA).",
)
@click.option(
    "--model", default="smollm2-135m", help="Base model: a name (smollm2-135m, gemma-3-270m), directory or .gguf."
)
@click.option(
    "--workdir",
    default=None,
    help="Where models, export, index and runs go [default: $LLMQL_CACHE/quickstart/VERSION-KEY, one folder per "
    "checkout, llmql version and model; it is printed at the start and a rerun reuses what it holds].",
)
@click.option(
    "--corpus-docs",
    type=click.IntRange(0, None),
    default=300,
    help="Search a slice: every document judged for the evaluated test queries (and the tuning queries) plus "
    "random others up to this size (0: whole corpus, every test query).",
)
@click.option(
    "--test-queries",
    type=click.IntRange(0, None),
    default=100,
    help="Evaluate a random share of this many test queries on a slice (0: all of them).",
)
@click.option(
    "--budget",
    type=Finite(0, 1000, min_open=True),
    default=1.0,
    help="Scales the training steps (1.0: the 2-core CPU's; a GPU runs 8x as many in the same time).",
)
@click.option(
    "--smoke",
    is_flag=True,
    help="A check that every step runs on the real model, in about 10 minutes on 2 cores: 3 + 2 training steps, "
    "100 documents, 20 test and 20 tuning queries, in a work folder of its own. Its figures mean nothing; CI runs "
    "it. Options given explicitly still win.",
)
@backend_options(url=None, index="llmql-quickstart", url_note=" [default: WORKDIR/index]")
@cli_errors
def quickstart_cmd(
    data, model, workdir, corpus_docs, test_queries, budget, smoke, backend, url, index, runtime, device
) -> None:
    """Train (stage 1 + 2), export, sync and evaluate end to end; reuses whatever is already built."""
    from llmql.plugin.quickstart import SMOKE, QuickstartConfig, default_data, quickstart

    sizes = {"corpus_docs": corpus_docs, "test_queries": test_queries, "budget": budget} | _preset(
        SMOKE if smoke else {}
    )

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
            corpus_docs=sizes["corpus_docs"] or None,
            test_queries=(sizes["test_queries"] or None) if sizes["corpus_docs"] else None,
            budget=sizes["budget"],
            tune_queries=sizes.get("tune_queries", QuickstartConfig.tune_queries),
            runtime=runtime,
            device=device,
            backend=backend,
            url=url,
            index=index,
            smoke=smoke,
        ),
        echo=click.echo,
    )


def _preset(values: dict) -> dict:
    """A preset's values for the options the user left at their defaults (what is given explicitly wins)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    return {k: v for k, v in values.items() if ctx.get_parameter_source(k) in (None, ParameterSource.DEFAULT)}


@click.group(context_settings=CONTEXT)
def main() -> None:
    """llmql: LLM-QL retrieval for the search engines you already run.

    Start with `llmql quickstart`; see each command's --help.
    """


def _register() -> None:
    from llmql.connectors.cli import main as sync_cmd
    from llmql.export.cli import main as export_cmd
    from llmql.plugin.search_cli import eval_main, search_main, tune_cmd
    from llmql.train.cli import main as train_group

    main.add_command(quickstart_cmd)
    main.add_command(tune_cmd)
    main.add_command(serve)
    main.add_command(train_group, "train")
    main.add_command(export_cmd, "export")
    main.add_command(sync_cmd, "sync")
    main.add_command(search_main, "search")
    main.add_command(eval_main, "eval")


_register()


if __name__ == "__main__":  # python -m llmql.plugin.cli (where the console scripts are not installed)
    main()
