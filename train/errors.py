"""Errors with messages meant for users; CLIs print them without a traceback and exit non-zero."""


class LLMQLError(Exception):
    """Base of every error llmql reports to the user."""


class DataError(LLMQLError, ValueError):
    """Bad input data; the message names the file and, where it applies, the line."""


class ModelError(LLMQLError, ValueError):
    """A model directory, file or name that llmql cannot use; the message says why."""


def cli_errors(func):
    """Decorator for click commands: user errors become a one-line message and exit status 1, no traceback.
    Every command runs through it, so it also sets the process environment ML libraries read at import
    (`llmql.train.device.quiet_accelerator_libraries`) before the command imports them."""
    import functools

    import click

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from llmql.train.device import quiet_accelerator_libraries

        quiet_accelerator_libraries()
        try:
            return func(*args, **kwargs)
        except (LLMQLError, FileNotFoundError, PermissionError) as err:
            raise click.ClickException(str(err)) from None

    return wrapper
