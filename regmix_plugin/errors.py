"""The project's user-error class: what the ``regmix`` CLI reports as one line instead of a traceback."""

from __future__ import annotations


class RegmixError(ValueError):
    """A mistake in the user's flags, config or files; the message names the flag or key and the fix.

    Subclasses ``ValueError`` so callers that catch ``ValueError`` keep working. Raise it (or a plain
    ``ValueError``/``FileNotFoundError``) from regmix_plugin code; ``regmix`` prints
    ``regmix SUBCOMMAND: error: <message>`` and exits 2.
    """
