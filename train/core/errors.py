"""Errors with messages meant for users; CLIs print them without a traceback and exit non-zero
(`llmql.train.core.cli.cli_errors`)."""


class LLMQLError(Exception):
    """Base of every error llmql reports to the user."""


class DataError(LLMQLError, ValueError):
    """Bad input data; the message names the file and, where it applies, the line."""


class ModelError(LLMQLError, ValueError):
    """A model directory, file or name that llmql cannot use; the message says why."""
