"""``TokenCount``: the type of every token-count flag and key, so large budgets are written the way people write them.

``--constraints.target_tokens 25e9``, ``25_000_000_000`` and ``2.5e10`` all mean
25,000,000,000; so do the same values in a ``--config`` YAML or in ``--data.init_args.max_tokens``. A value
that is not a whole, non-negative number of tokens (``2.5e0``, ``-1``, ``lots``) is refused in one line that
names the flag (:func:`token_count_error`, used by the ``regmix`` parser).

Importing this module registers the type with jsonargparse; modules whose signatures use it import it, so
the registration happens before any parser reads those signatures (LitGPT's included, for ``MixtureData``).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from jsonargparse.typing import register_type


class TokenCount(int):
    """A whole, non-negative number of tokens; ``25e9``, ``25_000_000_000`` and ``2.5e10`` are all accepted."""


_EXAMPLE = "write it as 25e9, 25_000_000_000 or 2.5e10"


def parse_token_count(value: object) -> int:
    """``value`` (an int, a float, or a string such as ``"25e9"`` / ``"25_000_000_000"``) as an exact ``int``.

    Exact: ``"2.5e10"`` is read as a decimal, not a binary float, so no large count is rounded. Returns a plain
    ``int`` (what the code and the YAML writers expect), never a ``TokenCount``.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number of tokens; {_EXAMPLE}")
    if isinstance(value, int):
        number = Decimal(int(value))
    else:
        text = str(value).strip()
        try:
            # underscores only between digits, as in Python literals
            if re.search(r"(^|[^0-9])_|_($|[^0-9])", text):
                raise InvalidOperation
            number = Decimal(text.replace("_", ""))
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a number of tokens; {_EXAMPLE}") from None
    if not number.is_finite() or number != number.to_integral_value():
        raise ValueError(f"{value!r} is not a whole number of tokens")
    if number < 0:
        raise ValueError(f"{value!r} is negative; a number of tokens is >= 0")
    return int(number)


register_type(TokenCount, serializer=int, deserializer=parse_token_count)

_TYPE_ERROR = re.compile(r"Not of type TokenCount: (.+)")
_KEY = re.compile(r'Parser key "([^"]+)"')


def token_count_error(message: str) -> str | None:
    """The one-line form of a jsonargparse error about a ``TokenCount`` value, or None for any other error.

    jsonargparse reports a bad value of an optional flag as several lines (one per member of ``X | None``);
    the user needs the flag and what is wrong with the value: ``--constraints.target_tokens: '2.5e0' is not a whole
    number of tokens``.
    """
    found = _TYPE_ERROR.search(message)
    if found is None:
        return None
    key = _KEY.search(message)
    return f"--{key.group(1)}: {found.group(1).strip()}" if key else found.group(1).strip()
