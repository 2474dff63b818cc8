"""The searches over a trajectory model: the best next stage (greedy), or the remaining stages together (joint).

One home for both users: `regmix schedule` (offline, every stage from the start) and the online
:class:`regmix_plugin.pretrain.controller.RegMixDController` (each switch, from the run's observed state).

A model fitted on a reuse sweep (``model.reuse``) is searched in its reduced space: candidates are drawn over the
block's total and the free domains, inside the bounds that keep every block domain within its own, and expanded,
so every candidate, top-k mean and smoothed mixture keeps the block's ratios (they are linear in the coordinates).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Literal

import numpy as np

from regmix_plugin.models.trajectory import _EPS

if TYPE_CHECKING:
    from regmix_plugin.models.trajectory import TrajectoryModel


@dataclass
class SearchArgs:
    """How each stage's mixture is searched (the paper publishes none of these; ours, chosen on the demo)."""

    n_candidates: int = 100_000
    """Dirichlet candidates simulated per stage (RegMix's notebook uses 100k)."""
    top_k: int = 128
    """A stage's mixture is the mean of its best ``top_k`` candidates (RegMix's notebook: 128)."""
    smoothing: float = 0.2
    """Weight of the previous stage's mixture in the next one: ``(1 - s) * top_k_mean + s * previous``."""
    strength: tuple[float, float] = (0.1, 5.0)
    """Lowest and highest Dirichlet concentration multiplier of the candidates."""
    seed: int = 0
    """Seed of the candidates (stage k draws with ``seed + k``)."""
    num_threads: int = 1
    """Threads for drawing candidates."""
    objective: Literal["greedy", "joint"] = "joint"
    """``joint``: candidates are whole remaining schedules (an independent draw per stage, within the
    whole-run allowance), scored by the predicted target at the *run's* end, and each stage is the top-k mean
    of its own draws (no smoothing); ``greedy`` (the paper's per-switch rule as far as it is described): each
    stage keeps the candidates with the best predicted target at *that stage's* end, so a domain's epoch
    allowance goes to whichever stage wants it first."""
    pessimism: float = 1.0
    """Candidates are ranked by the predicted target plus ``pessimism`` times the spread (std) of the model's
    cross-validation fold models on them: a schedule the proxies say little about is not trusted to be good.
    0 ranks by the prediction alone. Models written before ensemble members were kept ignore it."""


def draw_candidates(
    model: TrajectoryModel,
    prior: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    n: int,
    sampler,
    seed: int,
    num_threads: int,
) -> np.ndarray:
    """``n`` full candidate mixtures inside per-domain ``[lower, upper]`` around ``prior``; under ``model.reuse``
    drawn over the reduced coordinates (:meth:`ReuseStructure.reduce_bounds`) and expanded, keeping the ratios."""
    from regmix_plugin.weights import sample_candidates

    if model.reuse is None:
        return sample_candidates(prior, lower, upper, n, sampler, seed, num_threads)
    lo, hi = model.reuse.reduce_bounds(lower, upper)
    return model.reuse.expand(sample_candidates(model.reuse.reduce(prior), lo, hi, n, sampler, seed, num_threads))


def admits(model: TrajectoryModel, lower: np.ndarray, upper: np.ndarray) -> bool:
    """Whether some mixture (keeping ``model.reuse``'s ratios, if any) lies inside per-domain ``[lower, upper]``."""
    if model.reuse is not None:
        lower, upper = model.reuse.reduce_bounds(lower, upper)
    return not (upper.sum() < 1 - 1e-9 or (lower > upper + 1e-9).any())


def project_into(model: TrajectoryModel, mix: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """The nearest mixture to ``mix`` inside the bounds (in the reduced coordinates under ``model.reuse``)."""
    from regmix_plugin.weights import project

    if model.reuse is None:
        return project(mix[None], lower, upper)[0]
    lo, hi = model.reuse.reduce_bounds(lower, upper)
    return model.reuse.expand(project(model.reuse.reduce(mix)[None], lo, hi)[0])


def chained_target(model: TrajectoryModel, bounds: Sequence[float], cands: np.ndarray, state: np.ndarray) -> np.ndarray:
    """Predicted target at ``bounds[-1]`` of each candidate schedule (``cands``: (n, stages, domains), stage j on
    ``[bounds[j], bounds[j+1]]``), chained from ``state`` (one row) in chunks of bounded memory."""
    out = np.empty(len(cands))
    for s in range(0, len(cands), 20_000):
        c = cands[s : s + 20_000]
        st = np.repeat(np.atleast_2d(state), len(c), 0)
        for j, (a, b) in enumerate(pairwise(bounds)):
            losses, st = model.advance(a, b, c[:, j], st)
        out[s : s + 20_000] = model.predict_target(losses)
    return out


def schedule_scores(
    model: TrajectoryModel, bounds: Sequence[float], cands: np.ndarray, state: np.ndarray, pessimism: float
) -> np.ndarray:
    """What the search ranks by (lower is better): the model's predicted target, plus ``pessimism`` times the std
    of its fold models' predictions (each chained from the same ``state``) when it has them: their spread, by the
    same :class:`~regmix_plugin.models.ensemble.Committee` that gives ``regmix fit --regressor ensemble`` its std."""
    from regmix_plugin.models.ensemble import Committee

    scores = chained_target(model, bounds, cands, state)
    if pessimism > 0 and len(model.members) >= 2:
        _, spread = Committee(model.members).mean_std(lambda m: chained_target(m, bounds, cands, state))
        scores = scores + pessimism * spread
    return scores


def best_stage_mixture(
    model: TrajectoryModel,
    a: float,
    b: float,
    state: np.ndarray,
    prior: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    search: SearchArgs,
    stage: int,
    previous: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The mixture for ``[a, b]`` from ``state`` (one row): top-k mean of candidates, smoothed, inside the bounds.

    Returns ``(mixture, scores of the top-k candidates)`` (scores: :func:`schedule_scores`).
    """
    from regmix_plugin.weights import SamplerArgs

    sampler = SamplerArgs(min_strength=search.strength[0], max_strength=search.strength[1])
    n, seed = search.n_candidates, search.seed + stage
    cands = draw_candidates(model, prior, lower, upper, n, sampler, seed, search.num_threads)
    scores = schedule_scores(model, [a, b], cands[:, None], state, search.pessimism)
    k = min(search.top_k, len(cands))
    best = np.argsort(scores, kind="stable")[:k]
    mix = cands[best].mean(0)
    if previous is not None and search.smoothing > 0:
        mix = (1 - search.smoothing) * mix + search.smoothing * previous
    if (mix < lower - _EPS).any() or (mix > upper + _EPS).any():
        mix = project_into(model, mix, lower, upper)
    return mix / mix.sum(), scores[best]


def best_remaining_schedule(
    model: TrajectoryModel,
    bounds: Sequence[float],
    state: np.ndarray,
    prior: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    allowance: np.ndarray | None,
    search: SearchArgs,
    stage: int,
) -> tuple[list[np.ndarray], np.ndarray]:
    """The ``joint`` objective: mixtures for the stages ``[bounds[j], bounds[j+1]]`` searched together.

    Each candidate is a whole remaining schedule, one Dirichlet draw per stage (stage ``stage + j`` draws
    with ``seed + stage + j``); candidates whose use of a domain over the remaining stages exceeds
    ``allowance`` (share of the whole run still allowed, or None) are dropped; the rest are chained from
    ``state`` and scored by the predicted target at ``bounds[-1]`` (:func:`schedule_scores`, so with
    ``search.pessimism``). Returns the per-stage top-k means (a mean of feasible schedules is feasible: the
    bounds are linear) and the top-k scores.
    """
    from regmix_plugin.weights import SamplerArgs

    sampler = SamplerArgs(min_strength=search.strength[0], max_strength=search.strength[1])
    spans = np.diff(np.asarray(bounds, float))
    draws = []
    for j, span in enumerate(spans):
        hi = upper if allowance is None else np.minimum(upper, np.maximum(allowance, 0.0) / span)
        if not admits(model, lower, hi):
            raise ValueError(
                f"stage {stage + j}: the epoch allowance admits no mixture; raise "
                "--constraints.max_epochs or lower --constraints.target_tokens"
            )
        draws.append(
            draw_candidates(
                model, prior, lower, hi, search.n_candidates, sampler, search.seed + stage + j, search.num_threads
            )
        )
    cands = np.stack(draws, 1)  # (n, stages, domains)
    if allowance is not None:
        cands = cands[(np.einsum("nsd,s->nd", cands, spans) <= allowance + 1e-9).all(1)]
        if not len(cands):
            raise ValueError(
                f"stage {stage}: no candidate schedule keeps within the epoch allowance; raise "
                "--search.n_candidates or --constraints.max_epochs"
            )
    scores = schedule_scores(model, bounds, cands, state, search.pessimism)
    best = np.argsort(scores, kind="stable")[: min(search.top_k, len(cands))]
    mixes = [m / m.sum() for m in cands[best].mean(0)]
    return mixes, scores[best]


def derive_schedule(
    model: TrajectoryModel,
    stages: int,
    prior: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    allowance: np.ndarray | None,
    search: SearchArgs,
) -> dict:
    """Offline RegMix-D: S equal stages, each searched from the *predicted* state at its start.

    ``allowance[d]`` is domain ``d``'s share of the whole run it may use at most (its epoch bound); it is
    counted over the whole run, so a stage's upper bound shrinks by what earlier stages already took.
    Returns the stage mixtures, the predicted target at each stage end, and the per-stage top-k spread.
    """
    ends = [(k + 1) / stages for k in range(stages)]
    state, previous, used = model.start_state(1), None, np.zeros(len(prior))
    mixes, at_end, spread = [], [], []
    if search.objective not in ("greedy", "joint"):
        raise ValueError(f"--search.objective must be greedy or joint, got {search.objective!r}")
    if search.objective == "joint":
        mixes, top = best_remaining_schedule(model, [0.0, *ends], state, prior, lower, upper, allowance, search, 0)
        for a, b, mix in zip([0.0, *ends[:-1]], ends, mixes, strict=True):
            losses, state = model.advance(a, b, mix[None], state)
            at_end.append(float(model.predict_target(losses)[0]))
        return {"ends": ends, "mixtures": mixes, "predicted_target": at_end, "top_k_std": [float(top.std())] * stages}
    a = 0.0
    for k, b in enumerate(ends):
        hi = upper.copy()
        if allowance is not None:
            hi = np.minimum(hi, np.maximum(allowance - used, 0.0) / (b - a))
        if not admits(model, lower, hi):
            raise ValueError(
                f"stage {k}: the epoch allowance left after earlier stages admits no mixture; raise "
                "--constraints.max_epochs or lower --constraints.target_tokens"
            )
        mix, top = best_stage_mixture(model, a, b, state, prior, lower, hi, search, k, previous)
        losses, state = model.advance(a, b, mix[None], state)
        used += mix * (b - a)
        mixes.append(mix)
        at_end.append(float(model.predict_target(losses)[0]))
        spread.append(float(top.std()))
        previous, a = mix, b
    return {"ends": ends, "mixtures": mixes, "predicted_target": at_end, "top_k_std": spread}
