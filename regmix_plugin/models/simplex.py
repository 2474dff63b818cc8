"""Minimise a fitted law's prediction over the constrained simplex ``{lower <= w <= upper, sum(w) = 1}``.

``regmix optimize`` solves a law (BiMix, Ye et al.; :mod:`regmix_plugin.models.laws`) with it directly, instead of
scoring random candidates as it does for a regressor.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def minimize_on_simplex(
    objective: Callable[[np.ndarray], np.ndarray],
    lower: np.ndarray,
    upper: np.ndarray,
    prior: np.ndarray | None = None,
    kl_to_prior: float = 0.0,
    n_starts: int = 8,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """Minimise ``objective(w)`` (+ ``kl_to_prior * KL(w || prior)``) over ``{lower <= w <= upper, sum w = 1}``.

    ``objective`` maps an ``(n, D)`` array of mixtures to ``n`` values. SLSQP from the projected prior, the
    projected centre of the box and ``n_starts - 2`` projected seeded Dirichlet draws; returns the best feasible
    mixture and its objective value (without the KL term).
    """
    from scipy.optimize import minimize

    lower, upper = np.asarray(lower, float), np.asarray(upper, float)
    D = len(lower)
    if kl_to_prior < 0:
        raise ValueError(f"--kl_to_prior must be >= 0, got {kl_to_prior}")
    if kl_to_prior > 0 and prior is None:
        raise ValueError("--kl_to_prior needs a prior mixture")
    q = None if prior is None else np.maximum(np.asarray(prior, float), 1e-12)
    rng = np.random.default_rng(seed)
    starts = [np.full(D, 1.0 / D), (lower + upper) / 2]
    if q is not None:
        starts.insert(0, q / q.sum())
    starts += list(rng.dirichlet(np.ones(D), size=max(0, n_starts - len(starts))))
    starts = _project(np.array(starts), lower, upper)

    def total(w: np.ndarray) -> float:
        value = float(objective(w[None])[0])
        if kl_to_prior > 0:
            p = np.maximum(w, 1e-12)
            value += kl_to_prior * float((p * np.log(p / q)).sum())
        return value

    bounds = list(zip(lower, upper, strict=False))
    constraint = {"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}
    best_w, best_f = None, np.inf
    for w0 in starts:
        sol = minimize(
            total, w0, method="SLSQP", bounds=bounds, constraints=[constraint], options={"maxiter": 500, "ftol": 1e-12}
        )
        w = _project(np.clip(sol.x, lower, upper)[None], lower, upper)[0]
        f = total(w)
        if f < best_f:
            best_w, best_f = w, f
    return best_w, float(objective(best_w[None])[0])


def _project(W: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    from regmix_plugin.weights import project

    return project(W, lower, upper)
