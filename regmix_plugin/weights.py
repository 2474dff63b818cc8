"""Mixtures as data: domain names, weight validation, epoch bounds, rounding and the Dirichlet sampler.

Every stage (prepare, MixtureData, sample, sweep, fit, optimize) validates names and weights here, so a
mixture accepted by one command is accepted by all of them; the constraints a mixture must meet (how often a
domain may be repeated, per-domain bounds) and the random mixtures of ``sample`` and ``optimize`` are defined
here once too.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regmix_plugin.counts import TokenCount
from regmix_plugin.errors import RegmixError
from regmix_plugin.layout import DEFAULT_MAX_EPOCHS, epoch_allowance

#: A mixture may drift from summing to 1 by this much (rounding in CSVs and YAML); it is then renormalised.
#: Anything further off is a mistake in the input and is refused.
SUM_TOLERANCE = 1e-3

_SAFE = re.compile(r"^[a-z0-9][a-z0-9_]*$")


def normalize_domain(name: str) -> str:
    """Turn a raw domain label into a safe directory name: ``"Pile-CC"`` -> ``"pile_cc"``.

    Accents are transliterated (Unicode NFKD, combining marks dropped: ``"Ünïcode!"`` -> ``"unicode"``), then
    the label is lower-cased, every run of characters other than ``[a-z0-9]`` becomes one ``_`` and ``_`` is
    stripped at the ends, so ``"Gutenberg (PG-19)"`` -> ``"gutenberg_pg_19"`` (the RegMix/Pile naming). A
    letter or digit with no ASCII form (``"维基"``) is refused rather than dropped, so no label is silently
    cut down to a different one.
    """
    text = "".join(c for c in unicodedata.normalize("NFKD", str(name)) if not unicodedata.combining(c))
    foreign = list(dict.fromkeys(c for c in text if not c.isascii() and c.isalnum()))
    if foreign:
        raise RegmixError(
            f"domain label {name!r} has letters or digits with no ASCII form ({''.join(foreign)}); rename it "
            "with ASCII letters and digits (e.g. 'wiki_zh')"
        )
    out = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    if not out:
        raise RegmixError(f"domain name {name!r} has no letters or digits; rename it (e.g. 'web', 'code').")
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
            problems.append(f"weights sum to {total:.6g}, not 1 (tolerance {tolerance:g}); scale them so they sum to 1")
    if problems:
        raise ValueError(f"{key}: " + "; ".join(problems) + f". Known domains: {', '.join(known)}")
    total = sum(clean.values())
    return {name: clean.get(name, 0.0) / total for name in known}


# ------------------------------------------------------------------------------------------- constraints
#: A planned draw may exceed its allowance by this fraction: weights written to YAML and renormalised by
#: ``validate_weights`` move by a few ulps, which must not turn a mixture planned at the edge into a refusal.
ALLOWANCE_SLACK = 1e-9


@dataclass
class ConstraintArgs:
    """What a planned mixture must respect: how often a domain may repeat, per-domain bounds, excluded domains.

    The ``--constraints.*`` flags of ``regmix sample``, ``optimize``, ``schedule`` and ``entropy``; MixtureData's
    guard and the RegMix-D controller count the same epoch allowance (:func:`epoch_allowance`).
    """

    target_tokens: TokenCount | None = None
    """Tokens the run the mixture is for will train on; with it no domain may be repeated more than
    ``max_epochs`` times: ``weight <= max_epochs * domain_tokens / target_tokens``. ``regmix sample`` defaults to
    the corpus's train tokens (the official sampler's assumption); the other commands apply no bound without it."""
    max_epochs: float = DEFAULT_MAX_EPOCHS
    """Most epochs over any domain's train data over the whole run (with ``target_tokens``). 15, as the paper's
    sampler (MAXIMUM_USAGE) and MixtureData's ``max_epochs``; repeating data more than ~4 times starts to cost
    quality (Muennighoff et al., 2023), so consider lowering it."""
    block_size: int | None = None
    """Count each domain's epoch allowance in blocks of ``block_size + 1`` tokens, as MixtureData's guard does,
    instead of in tokens: give the training recipe's ``model_config.block_size`` (LitGPT's ``max_seq_length``), so
    a mixture at the bound passes the guard with ``on_epoch_limit: error``. Needs ``--data_path``; a domain
    without one whole block is then refused."""
    min_weight: dict[str, float] | None = None
    """Lowest weight per domain (in every stage of a schedule), ``{domain: weight}``."""
    max_weight: dict[str, float] | None = None
    """Highest weight per domain (in every stage of a schedule), ``{domain: weight}``."""
    exclude: list[str] | None = None
    """Domains the mixture must not train on (weight 0; their columns stay, and they may still be in the target)."""

    @classmethod
    def of(cls, value: ConstraintArgs | Mapping | None) -> ConstraintArgs:
        """``value`` as a ``ConstraintArgs``: jsonargparse hands a group over as a mapping when called from Python."""
        if value is None:
            return cls()
        return cls(**value) if isinstance(value, Mapping) else value


#: The prefix of the constraint flags, for messages.
FLAGS = "--constraints."


def exceeds_allowance(samples: float, allowance: float) -> bool:
    """Whether drawing ``samples`` from a domain breaks its ``allowance`` (:func:`epoch_allowance`)."""
    return samples > 0 and (allowance <= 0 or samples > allowance * (1 + ALLOWANCE_SLACK))


def domain_blocks(data_path: str | Path, domains: Iterable[str], block_size: int) -> dict[str, int]:
    """Train blocks per domain as MixtureData reads them: ``sum over chunks of dim // (block_size + 1)``.

    ``block_size`` is the recipe's (the model's ``block_size``, LitGPT's ``max_seq_length``); every sample is
    ``block_size + 1`` tokens, the last one the final target.
    """
    from regmix_plugin.formats.token_chunks import TokenSource

    return {d: TokenSource(Path(data_path) / d / "train", int(block_size) + 1).num_blocks for d in domains}


def train_sizes(
    domains: Iterable[str],
    block_size: int | None = None,
    data_path: str | Path | None = None,
    train_tokens: Mapping[str, int] | None = None,
) -> Mapping[str, int] | None:
    """Each domain's train size in the unit of its epoch allowance, for the planners' ``--constraints.block_size``.

    With ``block_size``: blocks of ``block_size + 1`` tokens counted from the chunks under ``data_path``
    (:func:`domain_blocks`); without: ``train_tokens`` (the manifest's, or ``--domain_tokens``), or None.
    """
    if block_size is None:
        return train_tokens
    if block_size < 1:
        raise ValueError(f"{FLAGS}block_size must be >= 1 (the recipe's model block_size), got {block_size}")
    if data_path is None:
        raise ValueError(
            f"{FLAGS}block_size needs --data_path: the allowance is counted in the blocks of the prepared "
            "chunks (--domain_tokens gives tokens only)"
        )
    from regmix_plugin.formats.manifest import read_manifest

    prepared = read_manifest(data_path, flag="--data_path").domains
    return domain_blocks(data_path, [d for d in domains if d in prepared], block_size)


def run_samples(target_tokens: float, block_size: int | None) -> float:
    """The size of a run of ``target_tokens`` in the unit of the allowance: samples, or tokens without a block size.

    LitGPT counts ``block_size`` tokens per sample against ``train.max_tokens``.
    """
    return float(target_tokens) if block_size is None else float(int(target_tokens) // int(block_size))


def epoch_bounds(
    sizes: Mapping[str, float], target_tokens: float, max_epochs: float, block_size: int | None = None
) -> dict[str, float]:
    """Largest weight per domain such that a run of ``target_tokens`` repeats it at most ``max_epochs`` times.

    ``sizes`` are train blocks of ``block_size + 1`` tokens (:func:`domain_blocks`) when ``block_size`` is
    given, as MixtureData's guard counts them; train tokens otherwise.
    """
    run = run_samples(target_tokens, block_size)
    return {d: min(1.0, epoch_allowance(n, max_epochs) / run) if run > 0 else 1.0 for d, n in sizes.items()}


def too_small(sizes: Mapping[str, float], block_size: int | None) -> list[str]:
    """Domains that hold no whole block: 0 blocks of ``block_size + 1`` tokens, or (no block size) 1 token.

    Without a block size a domain of 0 train tokens is not one of them: it is an evaluation-only domain, which
    the epoch bound already keeps at weight 0."""
    if block_size is not None:
        return [d for d, n in sizes.items() if n < 1]
    return [d for d, n in sizes.items() if 0 < n < 2]


def too_small_message(domains: Sequence[str], block_size: int | None, fix: str) -> str:
    """The refusal of :func:`too_small` domains, naming them and the fix (``fix``: how to leave one out)."""
    unit = (
        f"block of {FLAGS}block_size {block_size} + 1 = {block_size + 1} tokens"
        if block_size is not None
        else "block of any size (2 tokens)"
    )
    return (
        f"domain(s) {', '.join(domains)} hold no whole {unit} of train data, so no run can sample them: prepare "
        f"more data for them, or leave them out with {fix}"
    )


def epochs_used(
    weights: Mapping[str, float], train_tokens: Mapping[str, float], target_tokens: float
) -> dict[str, float]:
    """How many times a run of ``target_tokens`` at ``weights`` passes over each domain's train tokens."""
    return {
        d: (w * target_tokens / train_tokens[d] if train_tokens.get(d) else (math.inf if w > 0 else 0.0))
        for d, w in weights.items()
    }


_FEASIBLE = 1e-9


def constraint_bounds(
    domains: Sequence[str],
    constraints: ConstraintArgs | None = None,
    tokens: Mapping[str, int] | None = None,
    epochs: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-domain lower and upper weight bounds from every constraint; raises once listing all conflicts.

    ``tokens`` is each domain's train size: blocks of ``block_size + 1`` tokens when ``constraints.block_size`` is
    given (:func:`domain_blocks`, the unit of MixtureData's guard), else tokens. With it, a domain holding no block
    that is not excluded is refused, with or without ``target_tokens``. ``epochs=False`` leaves the epoch bound out
    (``regmix schedule`` counts it over the whole run, not per stage).
    """
    c = ConstraintArgs.of(constraints)
    index = {d: i for i, d in enumerate(domains)}
    lower, upper = np.zeros(len(domains)), np.ones(len(domains))
    problems = []
    for flag, mapping, bound in (
        (f"{FLAGS}min_weight", c.min_weight, lower),
        (f"{FLAGS}max_weight", c.max_weight, upper),
    ):
        for d, v in (mapping or {}).items():
            if d not in index:
                problems.append(f"{flag}: unknown domain {d!r}")
            elif not 0 <= float(v) <= 1:
                problems.append(f"{flag}: {d} = {v} is outside [0, 1]")
            else:
                bound[index[d]] = float(v)
    for d in c.exclude or []:
        if d not in index:
            problems.append(f"{FLAGS}exclude: unknown domain {d!r}")
        elif lower[index[d]] > 0:
            problems.append(f"{d} is both excluded and given {FLAGS}min_weight {lower[index[d]]}")
        else:
            upper[index[d]] = 0.0
    if tokens is not None:
        sizes = {d: tokens[d] for d in domains if d in tokens}
        small = [d for d in too_small(sizes, c.block_size) if upper[index[d]] > 0]
        if small:
            problems.append(too_small_message(small, c.block_size, f"{FLAGS}exclude [{','.join(small)}]"))
    if epochs and c.target_tokens is not None:
        if tokens is None:
            problems.append(
                f"{FLAGS}target_tokens needs each domain's train tokens: give --data_path or --domain_tokens"
            )
        elif c.target_tokens <= 0 or c.max_epochs <= 0:
            problems.append(f"{FLAGS}target_tokens and {FLAGS}max_epochs must be positive")
        else:
            missing = [d for d in domains if d not in tokens]
            if missing:
                problems.append(f"no token count for {', '.join(missing)} (from --data_path or --domain_tokens)")
            bound = epoch_bounds(
                {d: tokens[d] for d in domains if d in tokens}, c.target_tokens, c.max_epochs, c.block_size
            )
            for d, b in bound.items():
                upper[index[d]] = min(upper[index[d]], b)
    if not problems:
        for d, i in index.items():
            if lower[i] > upper[i] + _FEASIBLE:
                problems.append(f"{d}: {FLAGS}min_weight {lower[i]:.4g} is above its upper bound {upper[i]:.4g}")
        if lower.sum() > 1 + _FEASIBLE:
            problems.append(f"the {FLAGS}min_weight values sum to {lower.sum():.4g} > 1")
        if upper.sum() < 1 - _FEASIBLE:
            problems.append(
                f"the upper bounds sum to {upper.sum():.4g} < 1, so no mixture fits: raise {FLAGS}max_epochs or "
                f"{FLAGS}max_weight, lower {FLAGS}target_tokens, or exclude fewer domains"
            )
    if problems:
        raise ValueError("infeasible constraints: " + "; ".join(problems) + f". Domains: {', '.join(domains)}")
    return lower, upper


def constraints_record(domains: Sequence[str], lower: np.ndarray, upper: np.ndarray, given: ConstraintArgs) -> dict:
    """The ``constraints:`` block of ``mixture.yaml`` and ``schedule.yaml``: the active bounds and their sources."""
    return {
        "lower": {d: float(v) for d, v in zip(domains, lower, strict=True) if v > 0},
        "upper": {d: float(v) for d, v in zip(domains, upper, strict=True) if v < 1},
        "excluded": sorted(given.exclude or []),
        "target_tokens": given.target_tokens,
        "max_epochs": given.max_epochs if given.target_tokens else None,
        **({"block_size": given.block_size} if given.block_size and given.target_tokens else {}),
    }


def prior_weights(
    domains: Sequence[str], prior: Mapping[str, float] | None, manifest=None
) -> tuple[np.ndarray, str] | None:
    """The centre of a planner's candidate mixtures over ``domains``, and where it came from.

    ``--prior`` when given (validated), else the train-token distribution of ``--data_path``'s manifest over
    ``domains``; None when neither is there (each planner then has its own fallback). Raises when the corpus
    holds no train tokens for any of the domains: an all-zero prior is no distribution to centre draws on.
    """
    if prior is not None:
        weights, source = validate_weights(prior, domains, key="--prior"), "given (--prior)"
    elif manifest is not None:
        natural = manifest.natural_weights()
        total = sum(natural.get(d, 0.0) for d in domains)
        if total <= 0:
            raise ValueError(
                f"--data_path: none of the model's domains ({', '.join(domains)}) has train tokens, so "
                "there is no token distribution to centre on; give --prior {domain: weight}"
            )
        weights, source = {d: natural.get(d, 0.0) / total for d in domains}, "token distribution of --data_path"
    else:
        return None
    return np.array([weights[d] for d in domains], float), source


def project(W: np.ndarray, lower: np.ndarray, upper: np.ndarray, iters: int = 60) -> np.ndarray:
    """Euclidean projection of each row onto ``{lower <= w <= upper, sum(w) = 1}``: ``clip(w - tau)``, bisecting tau."""
    W = np.atleast_2d(W)
    lo = (W - upper).min(1)
    hi = (W - lower).max(1)
    for _ in range(iters):
        tau = (lo + hi) / 2
        above = np.clip(W - tau[:, None], lower, upper).sum(1) > 1
        lo, hi = np.where(above, tau, lo), np.where(above, hi, tau)
    P = np.clip(W - ((lo + hi) / 2)[:, None], lower, upper)
    return P / P.sum(1, keepdims=True)


# ---------------------------------------------------------------------------------------------- rounding
def largest_remainder(weights: Sequence[float] | np.ndarray, total: int) -> np.ndarray:
    """Non-negative integers proportional to ``weights`` that sum to exactly ``total`` (largest remainder).

    Ties are broken by index, so the result is a pure function of the input.
    """
    weights = np.asarray(weights, dtype=np.float64)
    scaled = weights / float(np.sum(weights)) * total
    out = np.floor(scaled).astype(np.int64)
    short = total - int(out.sum())
    if short > 0:
        order = np.lexsort((np.arange(len(scaled)), -(scaled - out)))
        out[order[:short]] += 1
    return out


# ----------------------------------------------------------------------------------------------- sampling
@dataclass
class SamplerArgs:
    """How random mixtures are drawn around a prior (``regmix sample``'s proxies, ``regmix optimize``'s candidates).

    Each draw picks a concentration strength among ``num_strengths`` values log-spaced between ``min_strength``
    and ``max_strength`` and samples ``Dirichlet(strength * prior)``, as RegMix does.
    """

    min_strength: float = 0.1
    """Smallest Dirichlet concentration strength (small: peaked mixtures, far from the prior)."""
    max_strength: float = 5.0
    """Largest Dirichlet concentration strength (large: close to the prior)."""
    num_strengths: int = 15
    """Number of log-spaced strengths between the two; one is drawn per mixture."""

    def problems(self, flag: str = "--sampler") -> list[str]:
        out = []
        if not 0 < self.min_strength <= self.max_strength:
            out.append(
                f"need 0 < {flag}.min_strength <= {flag}.max_strength, got {self.min_strength} and {self.max_strength}"
            )
        if self.num_strengths < 1:
            out.append(f"{flag}.num_strengths must be >= 1, got {self.num_strengths}")
        return out

    def strengths(self) -> np.ndarray:
        return np.logspace(math.log10(self.min_strength), math.log10(self.max_strength), self.num_strengths)


def dirichlet_draws(prior: np.ndarray, n: int, sampler: SamplerArgs, rng: np.random.Generator) -> np.ndarray:
    """``n`` Dirichlet mixtures around ``prior`` (rows sum to 1; domains with prior 0 stay 0).

    A row whose every coordinate underflows (tiny concentrations) is replaced by the prior itself.
    """
    prior = np.asarray(prior, dtype=np.float64)
    active = prior > 0
    base = prior[active] / prior[active].sum()
    strengths = sampler.strengths()
    draws = rng.standard_gamma(base[None, :] * strengths[rng.integers(0, len(strengths), n)][:, None])
    sums = draws.sum(1, keepdims=True)
    empty = sums[:, 0] <= 0
    draws[empty], sums[empty] = base, 1.0
    out = np.zeros((n, len(prior)))
    out[:, active] = draws / sums
    return out


def sample_candidates(
    prior: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    n: int,
    sampler: SamplerArgs,
    seed: int,
    num_threads: int = 2,
    chunk: int = 125_000,
) -> np.ndarray:
    """``n`` Dirichlet mixtures around ``prior`` (:func:`dirichlet_draws`), projected into
    the bounds.

    Rows are drawn in chunks, each from its own generator spawned from ``seed``, so the result does not
    depend on ``num_threads`` (numpy's samplers release the GIL, so threads do help).
    """
    problems = sampler.problems()
    if problems:
        raise ValueError("; ".join(problems))
    active = (prior > 0) & (upper > 0)
    if not active.any():
        active = upper > 0
    base = np.where(active, np.maximum(prior, 1e-12), 0.0)
    bounded = (lower > 0).any() or (upper < 1).any()
    out = np.zeros((n, len(prior)))
    seeds = np.random.SeedSequence(seed).spawn(-(-n // chunk))

    def fill(c: int) -> None:
        rows = slice(c * chunk, min(n, (c + 1) * chunk))
        block = dirichlet_draws(base, rows.stop - rows.start, sampler, np.random.default_rng(seeds[c]))
        if bounded:
            bad = ((block < lower) | (block > upper)).any(1)
            if bad.any():
                block[bad] = project(block[bad], lower, upper)
        out[rows] = block

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, num_threads)) as pool:
        list(pool.map(fill, range(len(seeds))))
    return out
