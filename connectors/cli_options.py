"""Options every llmql command that reaches an index or runs a model shares, declared once (llmql-sync here;
llmql-search, llmql-eval, llmql tune, llmql serve and llmql quickstart through `llmql.plugin.cli_options`)."""

from __future__ import annotations

import click

from llmql.connectors.registry import BACKENDS
from llmql.train.core.device import DEVICE_CHOICES

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


def backend_options(url: str | None = "./llmql-index", index: str = "llmql", url_note: str = "", index_note: str = ""):
    """--backend, --url, --index, --runtime and --device, with per-command defaults."""

    def wrap(func):
        options = [
            click.option(
                "--backend",
                type=click.Choice(list(BACKENDS)),
                default="embedded",
                help="The engine: embedded (LanceDB in a directory, no server), memory (exact, in process; a "
                "directory keeps it), opensearch or elasticsearch (a server's --url).",
            ),
            click.option(
                "--url",
                default=url,
                help="Server URL, or the embedded backend's directory. Credentials come from "
                f"LLMQL_<ENGINE>_USERNAME/PASSWORD/API_KEY or $LLMQL_CREDENTIALS, never from the URL.{url_note}",
            ),
            click.option("--index", default=index, help=f"Index (or alias) name.{index_note}"),
            click.option(
                "--runtime",
                type=click.Choice(["auto", "onnx", "torch"]),
                default="auto",
                help="For exports: ONNX Runtime, or PyTorch on the source model (auto: PyTorch on a GPU, or bf16 "
                "where the CPU has native bf16; else ONNX).",
            ),
            device_option(),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return wrap


def device_option():
    return click.option(
        "--device",
        default="auto",
        help=f"Where models run: {DEVICE_CHOICES} (auto: this process's GPU when there is one, else the CPU; under "
        "torchrun each process takes its LOCAL_RANK GPU).",
    )
