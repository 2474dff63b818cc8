"""Choosing the next proxy mixtures to train: a lower confidence bound batched by the kriging believer.

One engine for ``regmix propose`` and the active sweep loop (``regmix sweep --active``); see
:mod:`regmix_plugin.commands.propose` for the user-facing description of the candidates, the acquisition and the
batch rule.

Batch rule: the **kriging believer** (Ginsbourger, Le Riche & Carraro, 2010) with a **minimum-distance
exclusion** (ours). After each pick the GP is conditioned on that mixture at its own predicted mean, with the
fitted kernel hyperparameters kept (no refit, :meth:`GPRegressor.condition_on`), and every candidate closer than
``min_l1`` in L1 to a pick is excluded. The promise: no two rows of a batch are closer than ``min_l1`` in L1.

Why the exclusion: the believer alone spreads a batch only where the fitted length scales are short next to the
promising region. On a 24-run, 4-domain synthetic GP they are 0.6-1.9 in sqrt-weight units, so the 20 best
candidates by the bound (all within L1 0.3 of the first pick) have prior correlation >= 0.98 with it; conditioning
on the first pick lowers their std alike (0.017 -> 0.012) and the ranking, set by the mean, barely moves: the
batch's closest pair was the top-8's (L1 0.0574), with noisy or noise-free conditioning alike.
``DEFAULT_MIN_L1`` = 0.1 is fixed on principle, not tuned: two mixtures within L1 0.1 share at least 95% of their
tokens (L1 / 2 is the share moved between domains), too close to tell apart with one proxy each.

Candidates: a **trust region** (TuRBO: Eriksson, Pearce, Gardner, Turner & Poloczek, "Scalable Global Optimization
via Local Bayesian Optimization", NeurIPS 2019), unless ``trust_length`` is None. Why: with few runs the GP's
posterior std at mixtures far from every run (corners of the simplex) dwarfs its mean differences near the optimum,
so a bound over the whole simplex picks the least-known corners round after round (measured on 12 runs in 4
domains: std 0.05-0.37 there against ~0.02 mean differences; 10 of 12 first picks had a zero weight). As TuRBO:
the region is a box in the GP's input space (sqrt weights, the unit cube) around the centre, the trained run with
the best posterior mean (TuRBO's release notes that noisy observations call for the posterior mean), with sides
``L * w_i``, ``w`` the ARD length scales over their mean, rescaled to geometric mean 1 (:func:`trust_box`).
Generated candidates inside it come from TuRBO's perturbation of the centre (:meth:`TrustBox.perturbations`),
pool rows by membership. Its length ``L`` is adapted from round to round by :class:`TrustRegion` (TuRBO's rules and
defaults). Ours: when the box cannot give a full batch at ``min_l1`` spacing it doubles, until it does or covers
the cube (then the whole candidate space is used).

Uncertainty: a GP's posterior std, or an ensemble's spread (the std of its members' z-scored predictions,
:mod:`regmix_plugin.models.ensemble`); the model kinds with one are ``formats.model_dir.STD_KINDS``.

An ensemble believes its own mean at each pick the same way, member by member
(:meth:`EnsembleRegressor.condition_on`: the GP member conditioned, LightGBM refitted with the pick appended at
that value as scikit-optimize's ``Optimizer.ask(n_points)`` does, the laws kept).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from regmix_plugin.counts import TokenCount
from regmix_plugin.draws import distinct_draws, reuse_draws, sample_prior
from regmix_plugin.formats.mixture_table import read_mixtures, write_mixtures
from regmix_plugin.formats.model_dir import STD_KINDS, load_fitted, read_model_meta
from regmix_plugin.formats.results import finished_ids
from regmix_plugin.weights import (
    FLAGS,
    ConstraintArgs,
    SamplerArgs,
    constraint_bounds,
    largest_remainder,
    project,
    train_sizes,
)

DEFAULT_KAPPA = 1.96
DEFAULT_MIN_L1 = 0.1
_FEASIBLE = 1e-9
#: TuRBO's trust-region length: initial, smallest (below it: restart at the initial), largest; in the unit cube.
TRUST_INIT, TRUST_MIN, TRUST_MAX = 0.8, 0.5**7, 1.6
#: TuRBO's GP length-scale interval in the unit cube: the box's shape reads the length scales clipped to it.
TRUST_SCALES = (0.005, 2.0)
#: TuRBO's successes in a row that double the length (failures that halve it: ``TrustRegion.failure_tolerance``).
SUCCESS_TOLERANCE = 3
#: TuRBO's share of coordinates perturbed per candidate: min(1, PERTURB_DIMS / d).
PERTURB_DIMS = 20


def propose_batch(
    model: Path,
    results: Path,
    out: Path = Path("proposed.csv"),
    n: int = 16,
    kappa: float = DEFAULT_KAPPA,
    min_l1: float = DEFAULT_MIN_L1,
    pending: Path | None = None,
    candidates: Path | None = None,
    data_path: Path | None = None,
    domain_tokens: dict[str, TokenCount] | None = None,
    constraints: ConstraintArgs = ConstraintArgs(),
    temperature: float = 0.5,
    sampler: SamplerArgs = SamplerArgs(),
    drop_below: float = 2e-4,
    decimals: int = 4,
    n_candidates: int = 10_000,
    maximize: bool = False,
    id_prefix: str = "prop-",
    seed: int = 0,
    trust_length: float | None = TRUST_INIT,
) -> list[str]:
    """Propose ``n`` new mixtures from the model at ``model`` and append them to ``out``; returns their run ids.

    The arguments are ``regmix propose``'s (:func:`regmix_plugin.commands.propose.propose`).
    """
    meta = read_model_meta(model)
    if meta["regressor"] not in STD_KINDS:
        raise ValueError(
            f"--model {str(model)!r} holds a {meta['regressor']!r} model, which has no uncertainty: fit one with "
            "`regmix fit --regressor gp` (posterior std) or `--regressor ensemble` (its members' spread)"
        )
    c = ConstraintArgs.of(constraints)
    sampler = SamplerArgs(**sampler) if isinstance(sampler, dict) else sampler
    problems = _problems(n, kappa, min_l1, n_candidates, decimals, drop_below, sampler, id_prefix, trust_length)
    if problems:
        raise ValueError("regmix propose: " + "; ".join(problems))
    fitted = load_fitted(model)
    domains = fitted.domains
    known = [read_mixtures(results, "--results", known=domains, known_from="--model")]
    if pending is not None:
        known.append(read_mixtures(pending, "--pending", known=domains, known_from="--model"))
    existing = None
    if Path(out).exists():
        existing = read_mixtures(out, "--out", known=domains, known_from="--model")
        if existing.stages is not None:
            raise ValueError(f"--out {str(out)!r} holds staged mixtures; propose appends static ones: choose another")
        known.append(existing)
    unit = 10**decimals
    taken = {_key(w, unit) for m in known for w in m.weights}
    used_ids = {i for m in known for i in m.ids}

    prior, lower, upper = candidate_space(meta, c, data_path, domain_tokens, temperature)

    if candidates is not None:
        pool = read_mixtures(candidates, "--candidates", known=domains, known_from="--model")
        if fitted.reuse is not None:
            broken = fitted.reuse.broken(pool.weights)
            if broken.any():
                print(f"note: {int(broken.sum())} --candidates row(s) break the model's reuse block ratios; left out")
            pool = replace(
                pool, ids=[i for i, b in zip(pool.ids, broken, strict=True) if not b], weights=pool.weights[~broken]
            )
        P, pool_ids = _pool_rows(pool, lower, upper, taken, unit)
        if len(P) < n:
            print(f"note: only {len(P)} pool row(s) are new and inside the constraints; proposing them all")

        def choose(box: TrustBox | None) -> tuple[np.ndarray, list[str | None]]:
            keep = np.ones(len(P), bool) if box is None else box.contains(fitted.features(P))
            return P[keep], [i for i, k in zip(pool_ids, keep, strict=True) if k]

        wanted = min(n, len(P))
    else:
        hi = upper if fitted.reuse is None else fitted.reuse.reduce_bounds(lower, upper)[1]

        def choose(box: TrustBox | None) -> tuple[np.ndarray, list[str | None]]:
            local = {} if box is None else {"generate": box.perturbations(hi > 0), "accept": box.accepts(unit)}
            units = draw_candidates(
                prior, lower, upper, n_candidates, sampler, drop_below, decimals, seed, taken, fitted.reuse, **local
            )
            if box is None and len(units) < n:
                raise ValueError(
                    f"only {len(units)} new candidates inside the constraints (of --n {n} needed) in "
                    f"{20 * n_candidates} draws: loosen {FLAGS}min_weight/max_weight, lower --drop_below, raise "
                    "--decimals, or ask for fewer with --n"
                )
            return units / unit, [None] * len(units)

        wanted = n
    sign = -1.0 if maximize else 1.0
    finished = finished_ids(results)  # the trust region's centre is a run that finished, never a failed one
    runs = known[0].weights[[finished is None or i in finished for i in known[0].ids]]
    # Reduced coordinates (a reuse block) keep L1 distances: the block's cells move by its total times fixed ratios.
    C, ids, picks, mean, std, used = trust_region_batch(
        fitted.regressor, fitted.features, runs, wanted, kappa, sign, min_l1, trust_length, choose, (lower, upper)
    )
    if len(picks) < wanted:
        print(f"note: only {len(picks)} candidate(s) are at least --min_l1 {min_l1:g} apart; proposing them")
    new_ids = _fresh_ids([ids[i] for i in picks], used_ids, id_prefix)
    rows = dict(existing.as_dict()) if existing is not None else {}
    rows.update({r: dict(zip(domains, C[i].tolist(), strict=True)) for r, i in zip(new_ids, picks, strict=True)})
    reuse = replace(fitted.reuse, decimals=decimals) if fitted.reuse is not None else None  # rows rounded so
    write_mixtures(out, rows, domains, reuse=reuse)
    bound = "mean + kappa*std" if maximize else "mean - kappa*std"
    print(f"{'run_id':<14} {'mean':>10} {'std':>10} {bound:>16}")
    for r, m, s in zip(new_ids, mean, std, strict=True):
        print(f"{r:<14} {m:>10.4f} {s:>10.4f} {m - sign * kappa * s:>16.4f}")
    what = f"pool rows of {len(C)}" if candidates is not None else f"of {len(C)} candidates"
    rule = "kriging believer" + (" on each member" if meta["regressor"] == "ensemble" else "")
    region = "whole space" if used is None else f"trust region L {used:g}"
    if used is not None and trust_length is not None and used > trust_length:
        region += f" (grown from --trust_length {trust_length:g} to fit the batch at --min_l1)"
    print(
        f"proposed {len(new_ids)} mixtures ({what} in the {region}, kappa {kappa:g}, {rule}, min L1 {min_l1:g}); "
        f"wrote {out}"
    )
    return new_ids


def candidate_space(
    meta: dict, constraints: ConstraintArgs, data_path: Path | None, domain_tokens, temperature: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidates' Dirichlet prior and their per-domain ``lower``/``upper`` bounds, over the model's domains.

    The prior is ``sample``'s (the tempered token distribution of ``data_path``), or without a corpus the mean
    mixture of the fitted runs; the bounds are every ``--constraints.*`` bound, the epoch bound included.
    """
    domains, c = meta["domains"], ConstraintArgs.of(constraints)
    manifest = None
    if data_path is not None:
        from regmix_plugin.formats.manifest import read_manifest

        manifest = read_manifest(data_path)
    tokens = domain_tokens if domain_tokens is not None else (manifest.train_tokens() if manifest else None)
    lower, upper = constraint_bounds(domains, c, train_sizes(domains, c.block_size, data_path, tokens))
    center = meta["run_mean_mixture"] if manifest is None else None
    prior = sample_prior(domains, tokens or {}, temperature, center, c.exclude)
    return np.where(upper > 0, prior, 0.0), lower, upper


def draw_candidates(
    prior,
    lower,
    upper,
    n_candidates: int,
    sampler,
    drop_below: float,
    decimals: int,
    seed: int,
    taken=(),
    reuse=None,
    generate=None,
    accept=None,
) -> np.ndarray:
    """Up to ``n_candidates`` distinct candidates (rows x domains, integers of ``10**-decimals``) from ``sample``'s
    generator, inside ``[lower, upper]`` and not in ``taken``; the same arguments give the same rows. With a reuse
    structure (a model fitted on ``sample --reuse`` rows) they are drawn over its reduced coordinates, so every
    candidate keeps the block's ratios. ``generate``/``accept``: another generator and an extra rule, in the
    model's coordinates (e.g. a trust region's, :meth:`TrustBox.perturbations` and :meth:`TrustBox.accepts`)."""
    draws = 20 * n_candidates  # tight constraints reject most draws: a smaller pool still serves if it holds n
    if reuse is not None:
        units = reuse_draws(
            reuse, prior, upper, n_candidates, sampler, drop_below, decimals, seed, draws, lower, taken,
            accept=accept, generate=generate,
        )  # fmt: skip
    else:
        units = distinct_draws(
            prior, n_candidates, 1, sampler, drop_below, decimals, seed, upper, lower, draws, taken,
            accept=accept, generate=generate,
        )  # fmt: skip
    return units[:, 0, :]


def predicted_optimum(fitted, C: np.ndarray, sign: float = 1.0) -> tuple[np.ndarray, float, float]:
    """The row of ``C`` (full mixtures) with the best predicted mean under a loaded model with an uncertainty (the
    incumbent of Bayesian optimisation), its mean and std (a GP's posterior std or an ensemble's spread)."""
    mean, std = fitted.regressor.predict(fitted.features(C), return_std=True)
    i = int(np.argmin(sign * mean))
    return C[i], float(mean[i]), float(std[i])


def believer_batch(model, C: np.ndarray, n: int, kappa: float, sign: float = 1.0, min_l1: float = DEFAULT_MIN_L1):
    """Indices into ``C`` of up to ``n`` picks by the kriging believer with a minimum-distance exclusion, with each
    pick's mean and std when it was picked.

    Each pick minimises ``sign * mean - kappa * std`` over the candidates at least ``min_l1`` (L1) from every
    earlier pick; the model (a GP or an ensemble) is then conditioned on it at its predicted mean. Fewer than
    ``n`` come back only when no candidate is left outside the excluded balls.
    """
    picks: list[int] = []
    means, stds = [], []
    excluded = np.zeros(len(C), bool)
    for _ in range(n):
        if excluded.all():
            break
        mean, std = model.predict(C, return_std=True)
        score = np.where(excluded, np.inf, sign * mean - kappa * std)
        i = int(np.argmin(score))
        excluded |= np.abs(C - C[i]).sum(1) < max(min_l1, _FEASIBLE)  # the pick itself is always excluded
        picks.append(i)
        means.append(float(mean[i]))
        stds.append(float(std[i]))
        model = model.condition_on(C[i], mean[i : i + 1])
    return picks, np.array(means), np.array(stds)


@dataclass(frozen=True)
class TrustRegion:
    """TuRBO's trust-region length and its success/failure counters, carried from round to round by the loop.

    After a round (a batch of ``q`` runs trained): a success when its best observed target beats the best before it
    by more than 1e-3 x |best|; ``SUCCESS_TOLERANCE`` (3) successes in a row double the length (at most
    ``TRUST_MAX``), :meth:`failure_tolerance` failures in a row halve it; below ``TRUST_MIN`` it restarts at
    ``TRUST_INIT`` (TuRBO restarts with a fresh design; here the runs are kept). All of it TuRBO's, not tuned.
    """

    length: float = TRUST_INIT
    successes: int = 0
    failures: int = 0

    @staticmethod
    def failure_tolerance(batch: int, dims: int) -> int:
        """TuRBO's ``ceil(max(4 / q, d / q))``: about d evaluations without progress before the region shrinks."""
        return math.ceil(max(4 / batch, dims / batch))

    @staticmethod
    def improved(best_before: float, round_best: float, sign: float = 1.0) -> bool:
        """Whether a round's best observed target is a success (``sign`` -1 when maximising)."""
        a, b = sign * best_before, sign * round_best
        return bool(b < a - 1e-3 * abs(a))

    def after(self, improved: bool, batch: int, dims: int, restart: float = TRUST_INIT) -> TrustRegion:
        """The region after a round that ``improved`` (or not), of ``batch`` runs in ``dims`` features; below
        ``TRUST_MIN`` it starts over at ``restart`` (the initial length)."""
        successes, failures = (self.successes + 1, 0) if improved else (0, self.failures + 1)
        length = self.length
        if successes >= SUCCESS_TOLERANCE:
            length, successes = min(2 * length, TRUST_MAX), 0
        elif failures >= self.failure_tolerance(batch, dims):
            length, failures = length / 2, 0
        if length < TRUST_MIN:
            return TrustRegion(restart)
        return TrustRegion(length, successes, failures)


@dataclass(frozen=True)
class TrustBox:
    """A trust region: the box ``[lower, upper]`` around ``center`` in the GP's input space, sqrt(features)."""

    center: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    def contains(self, features: np.ndarray) -> np.ndarray:
        """Per row of ``features`` (the model's inputs), whether its sqrt is inside the box."""
        Z = np.sqrt(np.clip(np.atleast_2d(features), 0.0, None))
        inside = (self.lower - _FEASIBLE <= Z) & (self.upper + _FEASIBLE >= Z)
        return inside.all(1)

    def covers(self) -> bool:
        """Whether the box is the whole unit cube (a trust region no smaller than the space)."""
        return bool((self.lower <= 0).all() and (self.upper >= 1).all())

    def accepts(self, unit: int) -> Callable[[np.ndarray], bool]:
        """The ``accept`` rule of :func:`regmix_plugin.draws.distinct_draws` for rounded rows inside the box."""
        return lambda units: bool(self.contains(np.asarray(units, float).mean(0) / unit)[0])

    def perturbations(self, free: np.ndarray) -> Callable[[np.random.Generator, int], np.ndarray]:
        """TuRBO's candidates in the box, as a ``generate`` rule of :func:`regmix_plugin.draws.distinct_draws`:
        each copies the centre and replaces each coordinate with probability ``min(1, 20 / d)`` (at least one) by
        a uniform draw in the box, then goes back onto the simplex (``w = z^2 / sum z^2``; rows that leave the box
        are refused by :meth:`accepts`). Coordinates not ``free`` (upper bound 0: excluded) stay 0."""
        free = np.asarray(free, bool)
        center = np.where(free, self.center, 0.0)
        lo, hi = np.where(free, self.lower, 0.0), np.where(free, self.upper, 0.0)
        d = int(free.sum()) or 1
        share = min(1.0, PERTURB_DIMS / d)

        def generate(rng: np.random.Generator, size: int) -> np.ndarray:
            mask = (rng.random((size, len(center))) < share) & free
            lonely = ~mask.any(1)
            choices = np.flatnonzero(free) if free.any() else np.arange(len(center))
            mask[np.flatnonzero(lonely), rng.choice(choices, int(lonely.sum()))] = True
            Z = np.where(mask, lo + (hi - lo) * rng.random((size, len(center))), center)
            W = Z * Z
            sums = W.sum(1, keepdims=True)
            W[sums[:, 0] <= 0], sums[sums[:, 0] <= 0] = center * center, float((center * center).sum()) or 1.0
            return W / sums

        return generate


def trust_box(model, center: np.ndarray, length: float) -> TrustBox:
    """TuRBO's box of side ``length * w_i`` around ``center`` (features), ``w`` the model's ARD length scales over
    their mean, rescaled to geometric mean 1 (an ensemble: its GP member's; none: a cube), clipped to [0, 1].

    The length scales are read clipped to TuRBO's GP interval ``TRUST_SCALES`` (0.005-2 in the unit cube): ours may
    reach 1e3 for a domain the target ignores, which would squeeze every other side of the box to a sliver."""
    z = np.sqrt(np.clip(np.asarray(center, float), 0.0, None))
    scales = np.clip(_length_scales(model, len(z)), *TRUST_SCALES)
    w = scales / scales.mean()
    w = w / np.exp(np.log(w).mean())
    return TrustBox(z, np.clip(z - length * w / 2, 0.0, 1.0), np.clip(z + length * w / 2, 0.0, 1.0))


def trust_region_batch(
    model,
    features: Callable[[np.ndarray], np.ndarray],
    runs: np.ndarray,
    n: int,
    kappa: float,
    sign: float,
    min_l1: float,
    length: float | None,
    choose: Callable[[TrustBox | None], tuple[np.ndarray, list]],
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
):
    """Pick ``n`` candidates by :func:`believer_batch` inside the trust region of ``length`` around the trained run
    (a row of ``runs``, full mixtures) with the best posterior mean, projected onto ``bounds`` (lower, upper per
    domain: constraints given after the runs, an excluded domain, must not leave the box around an infeasible
    point); ``choose(box)`` gives the candidates (full mixtures and their ids) inside ``box``, or every candidate
    for ``None``. The box doubles while it cannot give ``n`` picks at ``min_l1`` spacing; once it covers the cube
    (or with ``length`` None) every candidate is used.

    Returns the candidates used, their ids, the picks (indices into them), the picks' means and stds, and the
    length used (None: the whole space)."""
    if length is not None and len(runs):
        runs = np.asarray(runs, float)
        best = runs[int(np.argmin(sign * np.asarray(model.predict(features(runs)), float)))]
        center = features(best[None] if bounds is None else project(best[None], *bounds))[0]
        while True:
            box = trust_box(model, center, length)
            if box.covers():
                break
            C, ids = choose(box)
            if len(C) >= n:
                picks, mean, std = believer_batch(model, features(C), n, kappa, sign, min_l1)
                if len(picks) >= n:
                    return C, ids, picks, mean, std, length
            length *= 2
    C, ids = choose(None)
    picks, mean, std = believer_batch(model, features(C), n, kappa, sign, min_l1)
    return C, ids, picks, mean, std, None


def _length_scales(model, d: int) -> np.ndarray:
    gp = model
    if not hasattr(gp, "length_scale_"):
        gp = next((m for _, m in getattr(model, "members_", ()) if hasattr(m, "length_scale_")), None)
    if gp is None:
        return np.ones(d)
    return np.broadcast_to(np.asarray(gp.length_scale_, float), (d,)).copy()


def _pool_rows(pool, lower, upper, taken, unit) -> tuple[np.ndarray, list[str | None]]:
    """The pool's rows that are inside the bounds and new (first of any duplicates), with their ids."""
    keep, seen = [], set(taken)
    for i, w in enumerate(pool.weights):
        key = _key(w, unit)
        if key in seen or (w < lower - _FEASIBLE).any() or (w > upper + _FEASIBLE).any():
            continue
        seen.add(key)
        keep.append(i)
    if not keep:
        raise ValueError(
            f"--candidates {pool.source}: none of its {len(pool.ids)} rows is both new (not in --results, --pending "
            "or --out) and inside the constraints: give a larger pool or loosen the constraints"
        )
    return pool.weights[keep], [pool.ids[i] for i in keep]


def _key(weights: np.ndarray, unit: int) -> tuple[int, ...]:
    return tuple(int(u) for u in largest_remainder(weights, unit))


def _fresh_ids(wanted: list[str | None], used: set[str], prefix: str) -> list[str]:
    """The wanted ids where free, else ``<prefix><number>`` past every number already used under ``prefix``."""
    pattern = re.compile(re.escape(prefix) + r"([0-9]+)$")
    numbers = [int(m.group(1)) for i in used | {w for w in wanted if w} if (m := pattern.match(i))]
    nxt = max(numbers, default=0) + 1
    out: list[str] = []
    for w in wanted:
        if w is None or w in used or w in out:
            w, nxt = f"{prefix}{nxt:04d}", nxt + 1
        out.append(w)
    return out


def _problems(n, kappa, min_l1, n_candidates, decimals, drop_below, sampler, id_prefix, trust_length) -> list[str]:
    problems = sampler.problems()
    if trust_length is not None and not 0 < trust_length <= TRUST_MAX:
        problems.append(
            f"--trust_length must be in (0, {TRUST_MAX:g}] (side of the trust region in the unit cube of sqrt "
            f"weights; TuRBO starts at {TRUST_INIT}), or null for the whole space, got {trust_length}"
        )
    if n < 1:
        problems.append(f"--n must be >= 1, got {n}")
    if not np.isfinite(kappa) or kappa < 0:
        problems.append(f"--kappa must be a finite number >= 0, got {kappa}")
    if not 0 <= min_l1 < 2:
        problems.append(f"--min_l1 must be in [0, 2) (L1 distance between mixtures), got {min_l1}")
    if n_candidates < n:
        problems.append(f"--n_candidates ({n_candidates}) must be at least --n ({n})")
    if not 1 <= decimals <= 9 or drop_below * 10**decimals % 1 > 1e-9:
        problems.append(
            f"--decimals {decimals} must be 1..9 and fine enough to write --drop_below {drop_below} exactly"
        )
    if drop_below < 0:
        problems.append(f"--drop_below must be >= 0, got {drop_below}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", id_prefix):
        problems.append(f"--id_prefix {id_prefix!r} must be letters, digits, '_', '.', '-'")
    return problems
