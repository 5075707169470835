"""`llmql-export`: a trained retriever -> ONNX graphs, checked for parity before anything is kept.

Each command imports the library it calls inside its body: `--help` and option errors answer at once, and
torch, transformers or an engine's client load only for the command that needs them."""

from __future__ import annotations

import json

import click

from llmql.train.core.cli import Finite, cli_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("model")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option(
    "--quantize",
    type=click.Choice(["none", "int8"]),
    default="none",
    help="Also write encoder.int8.onnx (dynamic int8 via Optimum, for this CPU's instruction set).",
)
@click.option(
    "--ql-scorer",
    is_flag=True,
    help="Also export the QL re-ranker: ql_document.onnx ([E] states) and ql_query.onnx (decoder-with-past).",
)
@click.option(
    "--opensearch-bundle",
    is_flag=True,
    help="Also write ml-commons TEXT_EMBEDDING bundles (query and passage) under OUT_DIR/opensearch.",
)
@click.option(
    "--validation-data",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="BEIR folder: real passages for the parity check and the int8 nDCG@10 slice.",
)
@click.option("--opset", type=click.IntRange(14, 21), default=17, help="ONNX opset (ml-commons takes <= 19).")
@click.option(
    "--int8-min-cosine",
    type=Finite(-1, 1),
    default=0.99,
    help="Refuse the int8 graph below this worst cosine to PyTorch (recorded in the manifest).",
)
@click.option("--overwrite", is_flag=True, help="Replace OUT_DIR if it exists (atomically, once the new one passed).")
@cli_errors
def main(
    model, out_dir, quantize, ql_scorer, opensearch_bundle, validation_data, opset, int8_min_cosine, overwrite
) -> None:
    """Export MODEL (an llmql-train output, a causal-LM directory, or a named model: smollm2-135m, gemma-3-270m) to
    OUT_DIR: encoder.onnx (input_ids, attention_mask -> L2-normalised last-token embedding), tokenizer.json,
    llmql.json and manifest.json with the parity measured against PyTorch. Refuses below cosine 0.9999 (fp32)
    or 0.99 (int8)."""
    from llmql.export.convert import ExportConfig, export_model
    from llmql.export.manifest import read_manifest

    out = export_model(
        ExportConfig(
            model=model,
            out=out_dir,
            quantize=quantize,
            ql_scorer=ql_scorer,
            opensearch_bundle=opensearch_bundle,
            overwrite=overwrite,
            opset=opset,
            validation_data=validation_data,
            min_cosine_int8=int8_min_cosine,
        )
    )
    manifest = read_manifest(out)
    for name, parity in manifest["parity"].items():
        worst = min(v["worst_cosine"] for k, v in parity.items() if k in ("left", "right"))
        click.echo(f"{name}: worst cosine to PyTorch {worst:.6f}")
        if "ndcg@10_slice" in parity:
            click.echo(f"  nDCG@10 on a slice: {json.dumps(parity['ndcg@10_slice'])}")
    if manifest.get("ql_scorer"):
        diff = manifest["ql_scorer"]["parity"]["max_abs_logprob_diff_vs_torch_full_forward"]
        click.echo(f"QL scorer: max |log P difference| to the PyTorch full forward pass {diff:.2e}")
    click.echo(f"export written to {out}")
