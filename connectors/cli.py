"""`llmql-sync`: embed a corpus and write it into a search index (embedded, memory, OpenSearch, Elasticsearch).

Each command imports the library it calls inside its body: `--help` and option errors answer at once, and
torch, transformers or an engine's client load only for the command that needs them."""

from __future__ import annotations

import json
import logging
import sys

import click

from llmql.connectors.cli_options import CONTEXT, backend_options
from llmql.train.core.cli import cli_errors, renamed_option, with_renamed


def _shard(value: str | None) -> str | None:
    from llmql.connectors.shards import parse_shard

    try:
        return None if value is None else str(parse_shard(value))
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


@click.command(context_settings=CONTEXT)
@click.argument("corpus", type=click.Path(exists=True))
@click.option(
    "--model", required=True, help="llmql-export directory (ONNX; fastest) or a trained model directory (PyTorch)."
)
@backend_options(index_note=" Ignored with --alias.")
@click.option(
    "--alias",
    default=None,
    help="Build a new index generation ALIAS-<time> and swap ALIAS to it atomically when complete.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=None,
    help="Documents per bulk write and committed step of progress (the engine's batch)  [default: 64 on a CPU, "
    "2,048 on a GPU]",
)
@click.option(
    "--encode-batch-size",
    type=click.IntRange(1, 4096),
    default=None,
    help="Passages per model call, at most  [default: 32 on a CPU, 1,024 on a GPU]",
)
@click.option(
    "--max-padded-tokens",
    type=click.IntRange(1, None),
    default=None,
    help="Padded tokens per model call, at most: short passages go in large batches, long ones in small  "
    "[default: 8,192 on a CPU; on a GPU from its free memory, at most 131,072]",
)
@click.option("--recreate", is_flag=True, help="Drop the index first.")
@click.option("--incremental", is_flag=True, help="Skip documents whose content hash is unchanged.")
@click.option("--delete-missing", is_flag=True, help="Delete indexed documents that are gone from CORPUS.")
@click.option("--resume", is_flag=True, help="Continue an interrupted sync after its last confirmed batch.")
@click.option(
    "--shard",
    default=None,
    metavar="I/N",
    callback=lambda _ctx, _param, value: _shard(value),
    help="Write only shard I of N (0-based, by document id) and resume it on its own. Under torchrun or "
    "accelerate launch each rank takes its own shard and device without this flag, and --recreate, --alias and "
    "--delete-missing run once after every shard is done; with --shard alone they are refused.",
)
@click.option(
    "--on-error",
    type=click.Choice(["fail", "skip"]),
    default="fail",
    help="Bad corpus lines (bad JSON, missing/duplicate id, empty text): stop, or skip and report.",
)
@click.option(
    "--end-states",
    type=click.Choice(["none", "fp16", "int8"]),
    default=None,
    help="Store each document's [E] states for fast QL re-ranking (needs an export with --ql-scorer)  [default: none]",
)
@renamed_option("--ql-cache", "--end-states", type=click.Choice(["none", "fp16", "int8"]))
@renamed_option("--max-batch-tokens", "--max-padded-tokens", type=click.IntRange(1, None))
@click.option(
    "--chunk",
    is_flag=True,
    help="Split documents longer than the model's passage length into passages (each with its vector and [E] "
    "states); a document scores as its best passage and hits say which passage matched. Without it, long "
    "documents are cut and the sync says how many.",
)
@click.option(
    "--chunk-tokens",
    type=click.IntRange(1, None),
    default=None,
    help="Tokens a passage, title and text as the model reads them (implies --chunk)  [default: the model's "
    "passage length]",
)
@click.option(
    "--chunk-overlap",
    type=click.IntRange(0, None),
    default=0,
    help="Tokens neighbouring passages share (implies --chunk when > 0).",
)
@click.option("--id-field", default="_id", help="The corpus field (JSONL key or TSV column) holding each id.")
@click.option("--text-field", default="text", help="The corpus field holding each document's text.")
@click.option("--title-field", default="title", help="The corpus field holding each title (may be absent).")
@click.option("--field", "keep_fields", multiple=True, help="Metadata field to index for filters (repeatable).")
@click.option("--failures", default="llmql-sync-failures.jsonl", help="Where failed documents and reasons go.")
@click.option(
    "--es-quantization",
    type=click.Choice(["none", "int8"]),
    default="none",
    help="Elasticsearch only: int8-quantised HNSW.",
)
@click.option(
    "--shards",
    type=click.IntRange(1, 1024),
    default=1,
    help="OpenSearch / Elasticsearch: primary shards of a new index.",
)
@click.option(
    "--replicas",
    default="auto",
    callback=lambda _ctx, _param, value: _replicas(value),
    help="OpenSearch / Elasticsearch: copies of each shard on other nodes of a new index; auto: none on a single "
    "node, one in a cluster (auto_expand_replicas 0-1), so a node can fail without losing a document.",
)
@click.option("--insecure", is_flag=True, help="Do not verify TLS certificates (warns).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@cli_errors
def main(
    corpus,
    id_field,
    text_field,
    title_field,
    keep_fields,
    failures,
    es_quantization,
    shards,
    replicas,
    quiet,
    **options,
) -> None:
    """Sync CORPUS (BEIR folder or corpus.jsonl, JSONL with chosen fields, or TSV with a header) into an index.

    Idempotent (documents keep their ids), resumable, incremental on request. Exit status 1 when any
    document failed; failures are listed with reasons in --failures.

    Several processes or machines: `torchrun --nproc-per-node N -m llmql.connectors.cli CORPUS ...` (or
    `accelerate launch`); each rank syncs its share of the documents on its own GPU.
    """
    from llmql.connectors.corpus import CorpusFormat
    from llmql.connectors.sync import SyncConfig, sync

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    for noisy in ("opensearch", "elasticsearch", "elastic_transport", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)  # their retries log tracebacks; our errors say it all
    if options["insecure"]:
        click.echo("warning: TLS certificate verification is off (--insecure)", err=True)
    options = with_renamed(options)
    if options["url"] == ":memory:":  # the sync's process ends with the command: nothing would be kept
        raise click.BadParameter(
            "':memory:' keeps nothing once the command ends; give a directory (or sync from Python)", param_hint="--url"
        )
    options["end_states"] = options["end_states"] or "none"
    cfg = SyncConfig(
        corpus=corpus,
        failures_file=failures,
        corpus_format=CorpusFormat(id_field, text_field, title_field, tuple(keep_fields)),
        backend_options=_engine_options(options["backend"], es_quantization, shards, replicas),
        **options,  # the options named as SyncConfig's fields
    )
    report = sync(cfg, progress=not quiet)
    fields = ("index", "alias", "shard", "indexed", "unchanged", "deleted", "failed", "cut")
    fields += ("chunking", "passages", "split") if report.chunking else ()
    fields += tuple(f for f in ("deletions_withheld",) if getattr(report, f))
    summary = {f: getattr(report, f) for f in fields}
    if report.skipped_ids:
        summary["skipped_ids"] = report.skipped_ids[:50]  # all of them, with reasons, in the failures file
    summary["verified"] = report.verified.summary() if report.verified else None
    click.echo(json.dumps({**summary, "seconds": round(report.seconds, 1)}, ensure_ascii=False))
    if report.cut:
        limit = f"{report.cut} document(s) were longer than the model's passage length and were cut"
        click.echo(
            f"note: {limit}: dense search and QL see only their beginning (BM25 sees all); --chunk keeps "
            "all of them as passages",
            err=True,
        )
    if report.verified is not None and not report.verified.ok:
        lost = report.verified.missing + report.verified.stale
        click.echo(
            f"error: after the sync the index does not hold {len(lost)} document(s) of the corpus as written "
            f"({', '.join(map(repr, lost[:5]))}); another writer may have changed it meanwhile: sync again with "
            "--incremental",
            err=True,
        )
    if report.failures_file:
        click.echo(f"{report.failed} document(s) failed; reasons in {report.failures_file}", err=True)
    if not report.ok:
        sys.exit(1)


def _replicas(value: str) -> int | str:
    if value == "auto":
        return value
    if value.isdigit() and int(value) <= 16:
        return int(value)
    raise click.BadParameter(f"auto or a count from 0 to 16, not {value!r}", param_hint="--replicas")


def _engine_options(backend: str, es_quantization: str, shards: int, replicas: int | str) -> dict:
    """What the server engines take at index creation (the directory engines take none of it)."""
    if backend not in ("opensearch", "elasticsearch"):
        return {}
    options = {"shards": shards, "replicas": replicas}
    return {**options, "quantization": es_quantization} if backend == "elasticsearch" else options


if __name__ == "__main__":  # torchrun --nproc-per-node N -m llmql.connectors.cli CORPUS ...
    main()
