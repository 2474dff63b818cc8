"""Mixture reuse (``regmix sample --reuse``): the block of unchanged domains with fixed ratios, and its maths.

When a corpus changes, the domains whose content did not change keep their previous ratios to each other as one
*block*; only the block's total and the changed, new (or user-freed) domains vary. A full mixture ``W`` over the
new domain set and its *reduced coordinates* ``R = [block total, free domains...]`` map onto each other::

    reduce(W) = [sum of W's block cells, W's free cells]
    expand(R) = block cells R[0] * ratio[d], free cells R[1:]

:class:`ReuseStructure` is recorded with the mixtures (``mixtures.csv``'s ``# reuse:`` header line, see
:mod:`regmix_plugin.formats.mixture_table`), the results the sweep writes from them, and a model fitted on them
(``model.json``'s ``reuse`` key). :func:`compare_domains` decides which domains are unchanged, by name and content
fingerprint (:meth:`regmix_plugin.formats.manifest.Manifest.fingerprints`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from regmix_plugin.weights import largest_remainder

#: Name of the block-total coordinate. Not a valid domain name (:func:`regmix_plugin.weights.normalize_domain`
#: never yields ``@``), so it cannot collide with one.
BLOCK = "@block"


@dataclass(frozen=True)
class ReuseStructure:
    """Which domains form the reused block, with their fixed ratios; the other domains of ``domains`` are free.

    ``domains`` is the full (new) domain set in the column order of the matrices :meth:`reduce` and :meth:`expand`
    take and return (sorted, like every mixtures table). ``ratios`` maps each block domain to its share of the block
    (summing to 1; an unchanged domain that had weight 0 keeps ratio 0, so it stays at 0).
    """

    domains: tuple[str, ...]
    ratios: dict[str, float]
    source: str = ""
    """Where the block came from (the previous ``mixture.yaml``), for messages and provenance."""
    decimals: int | None = None
    """Decimal places the sampled rows were rounded to (None: unrounded); sets the ratio check's tolerance."""
    _index: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        domains = tuple(self.domains)
        object.__setattr__(self, "domains", domains)
        problems = []
        unknown = sorted(set(self.ratios) - set(domains))
        if unknown:
            problems.append(f"block domain(s) {', '.join(unknown)} are not among the domains {', '.join(domains)}")
        if not self.ratios:
            problems.append("the block has no domain")
        values = np.array([float(self.ratios.get(d, 0.0)) for d in self.block], float)
        if self.ratios and (not np.all(np.isfinite(values)) or np.any(values < 0) or values.sum() <= 0):
            problems.append(f"block ratios must be >= 0 with a positive sum, got {dict(self.ratios)}")
        if problems:
            where = f" (from {self.source})" if self.source else ""
            raise ValueError(f"reuse structure{where}: " + "; ".join(problems))
        total = float(values.sum())
        object.__setattr__(self, "ratios", {d: float(self.ratios[d]) / total for d in self.block})
        object.__setattr__(self, "_index", np.array([domains.index(d) for d in self.block], int))

    # ------------------------------------------------------------------ names
    @property
    def block(self) -> list[str]:
        """The block's domains, in ``domains`` order."""
        return [d for d in self.domains if d in self.ratios]

    @property
    def free(self) -> list[str]:
        """The domains that vary on their own (changed, new, or freed with ``--reuse_free``), in ``domains`` order."""
        return [d for d in self.domains if d not in self.ratios]

    @property
    def coordinates(self) -> list[str]:
        """Names of the reduced coordinates: :data:`BLOCK`, then the free domains."""
        return [BLOCK, *self.free]

    def ratio_vector(self) -> np.ndarray:
        """The block ratios in :attr:`block` order."""
        return np.array([self.ratios[d] for d in self.block], float)

    # ------------------------------------------------------------------ maths
    def reduce(self, weights: np.ndarray) -> np.ndarray:
        """Full mixtures (rows x ``domains``, or one row) -> reduced coordinates (rows x ``coordinates``)."""
        w = np.asarray(weights, float)
        total = w[..., self._index].sum(-1, keepdims=True)
        return np.concatenate([total, w[..., self._free_index()]], -1)

    def expand(self, reduced: np.ndarray) -> np.ndarray:
        """Reduced coordinates (rows x ``coordinates``, or one row) -> full mixtures keeping the block's ratios."""
        r = np.asarray(reduced, float)
        out = np.zeros(r.shape[:-1] + (len(self.domains),))
        out[..., self._index] = r[..., :1] * self.ratio_vector()
        out[..., self._free_index()] = r[..., 1:]
        return out

    def reduce_bounds(self, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-domain bounds (over ``domains``) -> bounds on the reduced coordinates: the block total ``T`` must
        keep every block domain inside its own bounds, ``lower_d <= T * ratio_d <= upper_d``; free domains keep
        theirs. A block domain of ratio 0 is at 0 whatever ``T`` is (its lower bound must allow 0)."""
        lower, upper = np.asarray(lower, float), np.asarray(upper, float)
        r = self.ratio_vector()
        pos = r > 0
        lo_b, hi_b = lower[self._index][pos] / r[pos], upper[self._index][pos] / r[pos]
        block_lo = max(0.0, float(lo_b.max())) if pos.any() else 0.0
        block_hi = min(1.0, float(hi_b.min())) if pos.any() else 1.0
        free = self._free_index()
        return np.concatenate([[block_lo], lower[free]]), np.concatenate([[block_hi], upper[free]])

    def reduce_mixture(self, weights: Mapping[str, float]) -> dict[str, float]:
        """One ``{domain: weight}`` -> ``{coordinate: value}``."""
        r = self.reduce(np.array([float(weights.get(d, 0.0)) for d in self.domains]))
        return dict(zip(self.coordinates, map(float, r), strict=True))

    def expand_mixture(self, reduced: Mapping[str, float]) -> dict[str, float]:
        """One ``{coordinate: value}`` -> ``{domain: weight}`` over every domain."""
        w = self.expand(np.array([float(reduced.get(c, 0.0)) for c in self.coordinates]))
        return dict(zip(self.domains, map(float, w), strict=True))

    def round_units(self, reduced: np.ndarray, decimals: int) -> np.ndarray:
        """One reduced row -> the full row in integer units of ``10**-decimals``, summing to exactly ``10**decimals``.

        The reduced row is rounded by largest remainder (block total and free domains), then the block's units are
        split among its domains by largest remainder of the ratios. So every block cell is within one unit of
        ``total * ratio`` and the cells are a pure function of the rounded block total: what :meth:`broken` checks.
        """
        return self.expand_units(largest_remainder(np.asarray(reduced, float), 10**decimals))

    def expand_units(self, reduced_units: np.ndarray) -> np.ndarray:
        """A reduced row already in integer units -> the full row in units (the block split by largest remainder)."""
        r = np.asarray(reduced_units, np.int64)
        out = np.zeros(len(self.domains), np.int64)
        out[self._index] = self._block_units(int(r[0]))
        out[self._free_index()] = r[1:]
        return out

    def broken(self, weights: np.ndarray, tolerance: float | None = None) -> np.ndarray:
        """Boolean per row of full mixtures: True where the block's cells are not ``total * ratio`` within
        ``tolerance`` (default: one unit of :attr:`decimals`, the most :meth:`round_units` can move a cell, or
        1e-9 for unrounded rows)."""
        w = np.atleast_2d(np.asarray(weights, float))
        tol = tolerance if tolerance is not None else (10.0**-self.decimals if self.decimals else 0.0) + 1e-9
        expected = self.expand(self.reduce(w))
        return np.any(np.abs(w - expected) > tol, axis=1)

    def _block_units(self, units: int) -> np.ndarray:
        ratios = self.ratio_vector()
        return largest_remainder(ratios, units) if units > 0 else np.zeros(len(ratios), np.int64)

    def _free_index(self) -> np.ndarray:
        return np.array([self.domains.index(d) for d in self.free], int)

    # ------------------------------------------------------------------ record
    def to_dict(self) -> dict:
        """The record written into a mixtures table's header and a model's ``model.json``."""
        return {
            "block": dict(self.ratios),
            "free": self.free,
            "source": self.source,
            **({"decimals": self.decimals} if self.decimals is not None else {}),
        }

    @classmethod
    def from_dict(cls, record: object, domains: Sequence[str], where: str) -> ReuseStructure:
        """Read :meth:`to_dict`'s record back for ``domains`` (the table's or model's); errors name ``where``."""
        if not isinstance(record, Mapping) or not isinstance(record.get("block"), Mapping):
            raise ValueError(f"{where}: the reuse record needs a 'block: {{domain: ratio}}' mapping, got {record!r}")
        try:
            return cls(
                tuple(domains),
                {str(d): float(r) for d, r in record["block"].items()},
                str(record.get("source", "")),
                None if record.get("decimals") is None else int(record["decimals"]),
            )
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None


@dataclass
class DomainComparison:
    """How a previous mixture's domains relate to a new corpus (:func:`compare_domains`)."""

    unchanged: list[str]
    """Same name and same content fingerprint (or same name only, when :attr:`by_name` lists it)."""
    changed: list[str]
    """Same name, different fingerprint."""
    new: list[str]
    """In the new corpus only."""
    dropped: list[str]
    """In the previous mixture only."""
    by_name: list[str] = field(default_factory=list)
    """Unchanged domains matched by name alone (the previous file, or the corpus, has no fingerprint for them)."""

    def summary(self) -> str:
        parts = [f"{k}: {', '.join(v) if v else '-'}" for k, v in vars(self).items() if k != "by_name"]
        return "; ".join(parts) + (f" (matched by name only: {', '.join(self.by_name)})" if self.by_name else "")


def compare_domains(
    previous: Mapping[str, str | None], current: Mapping[str, str | None], domains: Sequence[str] | None = None
) -> DomainComparison:
    """Compare ``{domain: fingerprint or None}`` of a previous mixture with the new corpus's.

    A domain is unchanged when its name is in both and the fingerprints match; when either side has no
    fingerprint it is matched by name (listed in :attr:`DomainComparison.by_name`; the caller warns).
    ``domains`` restricts the new side (default: every domain of ``current``).
    """
    now = sorted(current if domains is None else domains)
    unchanged, changed, by_name = [], [], []
    for d in now:
        if d not in previous:
            continue
        a, b = previous[d], current.get(d)
        if a is None or b is None:
            unchanged.append(d)
            by_name.append(d)
        elif a == b:
            unchanged.append(d)
        else:
            changed.append(d)
    new = [d for d in now if d not in previous]
    dropped = sorted(d for d in previous if d not in set(now))
    return DomainComparison(unchanged, changed, new, dropped, by_name)
