"""Options and parsers the llmql commands share (one definition each)."""

from __future__ import annotations

import json

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


def backend_options(url: str | None = "./llmql-index", index: str = "llmql", url_note: str = ""):
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


def fusion_option(applies_to: str = ""):
    """--fusion; None means the model's tuned choice (search.json, with its weights), else RRF."""
    return click.option(
        "--fusion",
        type=click.Choice(["rrf", "minmax", "zscore"]),
        default=None,
        help=f"{applies_to}[default: search.json's (with its weights), else rrf]".strip(),
    )


def parse_filter(text: str | None):
    from llmql.connectors.base import check_filter

    if not text:
        return None
    try:
        return check_filter(json.loads(text))
    except json.JSONDecodeError as err:
        raise click.BadParameter(f"not JSON: {err.msg}", param_hint="--filter") from None
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--filter") from None


def parse_floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"expected numbers separated by commas, got {text!r}", param_hint=option) from None
