"""The one base type of every error a user can act on (a bad file, a missing input, a setting).

Each module's own error types subclass :class:`SemipkdError` as well as the builtin they were
(``ValueError``, ``OSError``, ...), so callers can catch either; a stage entry point catches this
one type and ends with a one-line message naming what to fix (``semipkd.stage.stage_main``).
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["SemipkdError"]


class SemipkdError(Exception):
    """An error whose message says which file or setting to fix."""
