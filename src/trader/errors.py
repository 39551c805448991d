"""Errors that the command line turns into one-line messages with a stable exit code.

Exit codes: 0 success, 1 the operation failed, 2 bad usage or bad configuration, 3 the feature is not
built yet. Anything else that escapes is an internal error: the CLI logs its traceback to a file and
prints one line.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (database and parser errors append the statement
    or a context dump), or its class name when it has no message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class TraderError(Exception):
    """Base class of errors meant for the user: the message says what is wrong and how to fix it."""

    exit_code = 1


class ConfigError(TraderError):
    """A configuration value (environment, ``.env``, flag) is invalid."""

    exit_code = 2


class UsageError(TraderError):
    """A command was called with arguments that cannot work."""

    exit_code = 2


class DatabaseError(TraderError):
    """The database cannot be reached or is not at the schema version the code needs."""

    exit_code = 1
