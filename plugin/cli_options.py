"""Options and parsers the llmql commands share (one definition each)."""

from __future__ import annotations

import json
import math

import click

from llmql.connectors.base import check_filter
from llmql.connectors.cli_options import CONTEXT, backend_options, device_option

__all__ = ["CONTEXT", "backend_options", "device_option", "fusion_option", "parse_filter", "parse_floats"]


def fusion_option(applies_to: str = ""):
    """--fusion; None means the model's tuned choice (search.json, with its weights), else RRF."""
    return click.option(
        "--fusion",
        type=click.Choice(["rrf", "minmax", "zscore"]),
        default=None,
        help=f"{applies_to}[default: search.json's (with its weights), else rrf]".strip(),
    )


def parse_filter(text: str | None):

    if not text:
        return None
    try:
        return check_filter(json.loads(text))
    except json.JSONDecodeError as err:
        raise click.BadParameter(f"not JSON: {err.msg}", param_hint="--filter") from None
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--filter") from None


def parse_floats(text: str, option: str, low: float = 0.0, high: float = 1.0) -> tuple[float, ...]:
    """Comma-separated finite numbers in [low, high], at least one."""
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"expected numbers separated by commas, got {text!r}", param_hint=option) from None
    if not values or not all(math.isfinite(v) and low <= v <= high for v in values):
        raise click.BadParameter(f"expected finite numbers in [{low:g}, {high:g}], got {text!r}", param_hint=option)
    return values
