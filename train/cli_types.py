"""Option types every llmql command shares: numbers that must be finite and in range.

click's FloatRange lets NaN through (every comparison with NaN is false), and a NaN weight, rate or wait then
poisons results or hangs a service silently. These refuse it, and infinities, at parse time: exit status 2,
the option named, nothing read or written.
"""

from __future__ import annotations

import math

import click


class Finite(click.FloatRange):
    """A float in the range (open or closed ends as FloatRange's), never NaN or infinite."""

    name = "finite float"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


def positive(integer_max: int | None = None) -> click.IntRange:
    """An integer of at least 1 (and at most `integer_max`)."""
    return click.IntRange(1, integer_max)
