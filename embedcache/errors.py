"""Errors a user can act on: one family, each carrying the command or step that fixes it as a field.

`UserError` is what the CLI prints as one red message plus its fix (exit 1) and what a pipeline records as a
"missing" row with that fix; anything else is a bug and keeps its traceback. Subclasses also derive from the
builtin they used to be (FileNotFoundError, ValueError, KeyError, RuntimeError), so `except ValueError` and
the tests that expect those keep working.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: the message says what was expected and what was found; `fix` is the command
    or the step that fixes it ("" when the message itself lists the choices, e.g. the known names)."""

    def __init__(self, message: str = "", *, fix: str = "") -> None:
        super().__init__(message)
        self.fix = fix


class BadInputError(UserError, ValueError):
    """An input (option, split, store content) that cannot be used as given; the message says which and why."""


class NotFoundError(UserError, FileNotFoundError):
    """A file, run or store the command needs does not exist; the message says where it looked."""
