"""Errors meant for people: the CLI prints them without a traceback and exits 2."""

from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """Bad input (a file, a field, a value). The CLI prints it and exits with code 2."""

    exit_code = 2


class ConfigError(UserError):
    """A config or sweep file is wrong. `source` names the file, `field` the dotted key."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        where = ", ".join(part for part in (source and f"file {source}", field and f"field '{field}'") if part)
        super().__init__(f"{where}: {message}" if where else message)


class StageFailed(RuntimeError):
    """A pipeline stage failed for a reason that belongs in the results table (e.g. a NaN loss)."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest candidate, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
