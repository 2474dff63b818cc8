"""Domain names and mixture weights: the one place that says what a valid mixture is.

Every stage (prepare, MixtureData, sample, sweep, fit, optimize) validates names and weights here, so a
mixture accepted by one command is accepted by all of them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

#: A mixture may drift from summing to 1 by this much (rounding in CSVs and YAML); it is then renormalised.
#: Anything further off is a mistake in the input and is refused.
SUM_TOLERANCE = 1e-3

_SAFE = re.compile(r"^[a-z0-9][a-z0-9_]*$")


def normalize_domain(name: str) -> str:
    """Turn a raw domain label into a safe directory name: ``"Pile-CC"`` -> ``"pile_cc"``.

    Lower-cases, replaces every run of characters other than ``[a-z0-9]`` with one ``_`` and strips ``_`` at
    the ends, so ``"Gutenberg (PG-19)"`` -> ``"gutenberg_pg_19"`` (the RegMix/Pile naming).
    """
    out = re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_")
    if not out:
        raise ValueError(f"domain name {name!r} has no letters or digits; rename it (e.g. 'web', 'code').")
    return out


def is_safe_domain(name: str) -> bool:
    """Whether ``name`` is already normalised (usable as a directory name as it is)."""
    return bool(_SAFE.match(name)) and len(name) <= 128


def validate_weights(
    weights: Mapping[str, float],
    known: Iterable[str],
    key: str = "--data.weights",
    tolerance: float = SUM_TOLERANCE,
) -> dict[str, float]:
    """Check a ``{domain: weight}`` mapping against the known domains and return it renormalised.

    Collects every problem (unknown domains, negative or non-finite weights, a sum further than
    ``tolerance`` from 1) and raises one ``ValueError`` naming ``key`` and listing the known domains.
    Domains of ``known`` that are missing from ``weights`` get weight 0.
    """
    known = sorted(known)
    problems = []
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError(f"{key} must be a non-empty mapping of domain -> weight; known domains: {', '.join(known)}")
    unknown = sorted(set(weights) - set(known))
    if unknown:
        problems.append(f"unknown domain(s) {', '.join(repr(u) for u in unknown)}")
    clean: dict[str, float] = {}
    for name, value in weights.items():
        try:
            w = float(value)
        except (TypeError, ValueError):
            problems.append(f"weight of {name!r} is {value!r}, not a number")
            continue
        if not math.isfinite(w):
            problems.append(f"weight of {name!r} is {w}, not finite")
        elif w < 0:
            problems.append(f"weight of {name!r} is negative ({w})")
        clean[name] = w
    if not problems:
        total = sum(clean.values())
        if abs(total - 1.0) > tolerance:
            problems.append(
                f"weights sum to {total:.6g}, not 1 (tolerance {tolerance:g}); scale them so they sum to 1"
            )
    if problems:
        raise ValueError(f"{key}: " + "; ".join(problems) + f". Known domains: {', '.join(known)}")
    total = sum(clean.values())
    return {name: clean.get(name, 0.0) / total for name in known}
