"""Errors that end a command with one clear line and exit status 2.

Anything the user can get wrong (a flag value, a data file, an output directory that
already holds a run) raises :class:`UsageError` with a message that names what is wrong
and what was expected. The command-line entry points turn it into a single line on
stderr and exit status 2; nothing on disk is touched before validation succeeds.
"""

from __future__ import annotations


class UsageError(Exception):
    """A user-facing mistake: bad flag value, bad input file, refused output path."""

    exit_code = 2


class DataFileError(UsageError):
    """A data file that breaks the contract of docs/data-file.md."""

    def __init__(self, path: str, key: str, expected: str):
        self.path, self.key, self.expected = path, key, expected
        super().__init__(f"{path}: key '{key}': {expected}")
