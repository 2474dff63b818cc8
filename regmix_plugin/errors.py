"""The project's user-error class: what the ``regmix`` CLI reports as one line instead of a traceback."""

from __future__ import annotations


class RegmixError(ValueError):
    """A mistake in the user's flags, config or files; the message names the flag or key and the fix.

    Subclasses ``ValueError`` so callers that catch ``ValueError`` keep working. Raise it (or a plain
    ``ValueError``/``FileNotFoundError``) from regmix_plugin code; ``regmix`` prints
    ``regmix SUBCOMMAND: error: <message>`` and exits 2.
    """


class DeprecatedFlag(UserWarning):
    """An old spelling of a renamed flag or subcommand: it still works for one release."""


def deprecated(old: str, new: str) -> None:
    """Warn that ``old`` is going; the CLI prints it as ``regmix SUB: warning: --old is deprecated ...``."""
    import warnings

    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new}", DeprecatedFlag, stacklevel=3
    )
