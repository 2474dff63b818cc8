"""The random mixtures of ``regmix sample`` (a sweep's proxies) and ``regmix propose`` (its candidates): one generator.

Dirichlet draws around a prior (:func:`regmix_plugin.weights.dirichlet_draws`), weights below ``minimum`` set to 0,
each stage rounded to ``decimals`` places by largest remainder (rows sum to exactly 1), rows outside per-domain
bounds rejected, exact duplicates (after rounding) dropped. ``sample``'s steps 2-5 (its module docstring) are
:func:`distinct_draws`; :func:`sample_schedules` adds ``sample``'s prior and epoch bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

from regmix_plugin.formats.reuse import ReuseStructure
from regmix_plugin.layout import DEFAULT_MAX_EPOCHS
from regmix_plugin.weights import SamplerArgs, dirichlet_draws, epoch_bounds, largest_remainder


def distinct_draws(
    prior: np.ndarray,
    n: int,
    stages: int = 1,
    sampler: SamplerArgs = SamplerArgs(),
    minimum: float = 2e-4,
    decimals: int = 4,
    seed: int = 42,
    upper: np.ndarray | None = None,
    lower: np.ndarray | None = None,
    max_draws: int | None = None,
    seen: Iterable[tuple[int, ...]] = (),
    accept: Callable[[np.ndarray], bool] | None = None,
    generate: Callable[[np.random.Generator, int], np.ndarray] | None = None,
) -> np.ndarray:
    """Up to ``n`` distinct rounded rows, as integers of ``10**-decimals``: an array (rows x stages x domains).

    Rows are Dirichlet draws around ``prior`` (``sampler``'s strengths), or ``generate(rng, size)`` (size mixtures,
    rows summing to 1) when given: the rules below apply to either.

    A row is kept when every nonzero weight is at least ``minimum``, the mean over its stages is within
    ``[lower, upper]`` (default: no bound) and its units are not in ``seen`` (rows to avoid, as
    ``tuple(units.ravel())``) nor drawn before. Fewer than ``n`` come back when ``max_draws`` (default
    ``1000 * n``) draws run out; the caller decides whether that is an error.
    """
    prior = np.asarray(prior, float)
    unit = 10**decimals
    min_units = math.ceil(minimum * unit - 1e-9)
    hi = np.full(len(prior), np.inf) if upper is None else np.asarray(upper, float) * unit + 1e-9
    lo = np.full(len(prior), -np.inf) if lower is None else np.asarray(lower, float) * unit - 1e-9
    rng = np.random.default_rng(seed)
    avoid = set(seen)
    rows: list[np.ndarray] = []
    max_draws = max_draws or 1000 * n
    drawn = 0
    while len(rows) < n and drawn < max_draws:
        size = min(max(64, 2 * (n - len(rows))), max_draws - drawn)
        raw = (
            generate(rng, size * stages)
            if generate is not None
            else dirichlet_draws(prior, size * stages, sampler, rng)
        )
        batch = raw.reshape(size, stages, len(prior))
        drawn += size
        for draw in batch:
            if len(rows) == n:
                break
            x = np.where(draw < minimum, 0.0, draw)
            if (x.sum(1) <= 0).any():
                continue
            units = np.stack([largest_remainder(row, unit) for row in x])
            mean = units.mean(0)
            if np.any((units > 0) & (units < min_units)) or np.any(mean > hi) or np.any(mean < lo):
                continue
            if accept is not None and not accept(units):
                continue
            key = tuple(int(u) for u in units.ravel())
            if key in avoid:
                continue
            avoid.add(key)
            rows.append(units)
    return np.stack(rows) if rows else np.zeros((0, stages, len(prior)), np.int64)


def sample_schedules(
    train_tokens: dict[str, int],
    n: int,
    stages: int,
    target_tokens: float | None = None,
    temperature: float = 0.5,
    sampler: SamplerArgs = SamplerArgs(),
    max_epochs: float = DEFAULT_MAX_EPOCHS,
    minimum: float = 2e-4,
    decimals: int = 4,
    seed: int = 42,
    max_draws: int | None = None,
    center: dict[str, float] | None = None,
    block_size: int | None = None,
    sizes: dict[str, int] | None = None,
    exclude: list[str] | None = None,
    reuse: ReuseStructure | None = None,
) -> list[list[dict[str, float]]]:
    """``n`` distinct proxy schedules of ``stages`` equal stages: an independent draw per stage (Marin's
    multi-phase swarms, RegMix-D's proxies), each rounded and floored like a static draw; the epoch bound is
    counted over the whole run, on the mean of the stages. ``stages=1`` gives static mixtures (one-stage schedules).

    The bound counts ``sizes`` (blocks of ``block_size + 1`` tokens, :func:`regmix_plugin.weights.train_sizes`)
    when ``block_size`` is given, else ``train_tokens``; the domains in ``exclude`` get weight 0 in every row.
    With ``reuse`` every stage of every row keeps its block's ratios (:func:`reuse_draws`)."""
    domains = sorted(d for d, t in train_tokens.items() if t > 0)
    target = float(target_tokens or sum(float(train_tokens[d]) for d in domains))
    prior = sample_prior(domains, train_tokens, temperature, center, exclude)
    bounds = epoch_bounds({d: (sizes or train_tokens)[d] for d in domains}, target, max_epochs, block_size)
    bound = np.array([0.0 if p == 0 else bounds[d] for d, p in zip(domains, prior, strict=True)])
    max_draws = max_draws or 1000 * n
    if reuse is not None:
        units = reuse_draws(reuse, prior, bound, n, sampler, minimum, decimals, seed, max_draws, stages=stages)
    else:
        units = distinct_draws(prior, n, stages, sampler, minimum, decimals, seed, upper=bound, max_draws=max_draws)
    if len(units) < n:
        what = "mixtures" if stages == 1 else f"{stages}-stage schedules"
        raise ValueError(
            f"only {len(units)} of --n {n} distinct {what} passed the bounds in {max_draws} draws; raise "
            "--constraints.max_epochs, lower --constraints.target_tokens, lower --drop_below, raise --decimals, or ask "
            "for fewer with --n"
        )
    unit = 10**decimals
    return [[{d: int(u) / unit for d, u in zip(domains, st, strict=True)} for st in row] for row in units]


def sample_prior(
    domains: list[str],
    train_tokens: dict[str, int],
    temperature: float = 0.5,
    center: dict[str, float] | None = None,
    exclude: Iterable[str] | None = None,
) -> np.ndarray:
    """``sample``'s Dirichlet base measure over ``domains``: ``center`` when given, else the train-token
    distribution tempered by ``temperature``; excluded domains get 0; normalised."""
    if center is not None:
        prior = np.maximum(np.array([center.get(d, 0.0) for d in domains], float), 1e-12)
    else:
        tokens = np.array([float(train_tokens.get(d, 0)) for d in domains])
        prior = (tokens / tokens.sum()) ** temperature
    prior[[d in set(exclude or ()) for d in domains]] = 0.0
    return prior / prior.sum()


def reuse_draws(
    structure: ReuseStructure,
    prior: np.ndarray,
    bounds: np.ndarray,
    n: int,
    sampler: SamplerArgs = SamplerArgs(),
    minimum: float = 2e-4,
    decimals: int = 4,
    seed: int = 42,
    max_draws: int | None = None,
    lower: np.ndarray | None = None,
    seen: Iterable[tuple[int, ...]] = (),
    stages: int = 1,
    accept: Callable[[np.ndarray], bool] | None = None,
    generate: Callable[[np.random.Generator, int], np.ndarray] | None = None,
) -> np.ndarray:
    """Up to ``n`` distinct full rows (integer units of ``10**-decimals``, rows x ``stages`` x ``structure.domains``)
    that keep the reuse block's ratios in every stage: drawn like :func:`distinct_draws` over the reduced coordinates
    (block total, free domains) around ``structure.reduce(prior)`` (the block's prior is its total prior mass), each
    stage expanded with :meth:`ReuseStructure.expand_units`. ``bounds`` (upper, per full domain: the epoch bound) and
    ``lower`` are checked on every underlying domain of the mean of the rounded full stages (the whole run), not on
    the block total; so is ``seen`` (full rows to avoid, as ``tuple(units.ravel())``). ``minimum`` (``drop_below``)
    applies to the reduced coordinates (a block cell may be smaller: it keeps the previous ratio). ``accept`` and
    ``generate`` are :func:`distinct_draws`' and work in the reduced coordinates."""
    unit = 10**decimals
    upper = np.asarray(bounds, float)
    lower = np.zeros_like(upper) if lower is None else np.asarray(lower, float)
    # the block total a continuous row may take; the rounded row is checked cell by cell below
    lo, hi = structure.reduce_bounds(lower, upper)
    limits = (lower * unit - 1e-9, upper * unit + 1e-9)
    avoid = set(seen)

    def full(units: np.ndarray) -> np.ndarray:
        return np.stack([structure.expand_units(st) for st in units])

    def within(units: np.ndarray) -> bool:
        rows = full(units)
        mean = rows.mean(0)
        inside = bool(np.all((mean >= limits[0]) & (mean <= limits[1])))
        return inside and tuple(map(int, rows.ravel())) not in avoid and (accept is None or accept(units))

    reduced = distinct_draws(
        structure.reduce(prior), n, stages, sampler, minimum, decimals, seed, hi, lo, max_draws, accept=within,
        generate=generate,
    )  # fmt: skip
    return np.array([full(r) for r in reduced], np.int64).reshape(len(reduced), stages, len(structure.domains))
