"""What every llmql command shares: user errors shown without a traceback, and option types for numbers that
must be finite and in range.

click's FloatRange lets NaN through (every comparison with NaN is false), and a NaN weight, rate or wait then
poisons results or hangs a service silently. These refuse it, and infinities, at parse time: exit status 2,
the option named, nothing read or written.
"""

from __future__ import annotations

import math

import click

from llmql.train.core.device import quiet_accelerator_libraries
from llmql.train.core.errors import LLMQLError


class Finite(click.FloatRange):
    """A float in the range (open or closed ends as FloatRange's), never NaN or infinite."""

    name = "finite float"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


def check_split(data: str, split: str, option: str = "--split") -> None:
    """A split the collection has (qrels/SPLIT.tsv), else a usage error (exit 2) naming the ones it has."""
    from pathlib import Path

    qrels = Path(data) / "qrels"
    if not (qrels / f"{split}.tsv").is_file():
        have = ", ".join(sorted(p.stem for p in qrels.glob("*.tsv"))) or "none"
        raise click.BadParameter(
            f"{data} has no split {split!r} (no qrels/{split}.tsv; its splits: {have})", param_hint=option
        )


def positive(integer_max: int | None = None) -> click.IntRange:
    """An integer of at least 1 (and at most `integer_max`)."""
    return click.IntRange(1, integer_max)


def cli_errors(func):
    """Decorator for click commands: user errors become a one-line message and exit status 1, no traceback.
    Every command runs through it, so it also sets the process environment ML libraries read at import
    (`llmql.train.core.device.quiet_accelerator_libraries`) before the command imports them."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        quiet_accelerator_libraries()
        try:
            return func(*args, **kwargs)
        except (LLMQLError, FileNotFoundError, PermissionError) as err:
            raise click.ClickException(str(err)) from None

    return wrapper


_RENAMED = "llmql.renamed"


def renamed_option(old: str, new: str, **kwargs):
    """`old`, renamed `new`, still accepted for one release: hidden from --help, it warns and its value goes to
    `new` (see `with_renamed`); `new` wins where both are given."""
    dest = new.lstrip("-").replace("-", "_")

    def remember(ctx, _param, value):
        if value is not None:
            click.echo(f"warning: {old} is deprecated and will be removed; use {new}", err=True)
            ctx.meta.setdefault(_RENAMED, {})[dest] = value
        return value

    return click.option(old, hidden=True, expose_value=False, default=None, callback=remember, **kwargs)


def with_renamed(options: dict) -> dict:
    """The command's options with the values given under their old names filled in."""
    renamed = click.get_current_context().meta.get(_RENAMED, {})
    return {**options, **{k: v for k, v in renamed.items() if options.get(k) is None}}
