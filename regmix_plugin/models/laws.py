"""Parametric mixing laws: BiMix (loss vs proportion and training amount) and Ye et al.'s mixing law.

Both follow the scikit-learn estimator contract (``__init__`` stores parameters, learned state ends in
``_``, ``fit`` returns ``self``) and save themselves as JSON (no pickle).

- :class:`BiMixLaw` (Ge et al., "BiMix", arXiv 2405.14908, Eq. 3): one law per loss column ``i``,
  ``L_i(r_i, s) = (A_i / r_i**alpha_i) * (B_i / s**beta_i + C_i)``, where ``r_i`` is the proportion of the
  column's own training domain and ``s`` the amount of training (tokens). A column that is no training domain
  (a validation-only target) has no own proportion; its law is driven by every proportion,
  ``prod_j r_j**-alpha_ij * (B_i / s**beta_i + C_i)`` with ``alpha_ij >= 0`` (our extension; it is the
  published law when one ``alpha_ij`` is non-zero, and ``argmin`` over the simplex is ``r_j ∝ alpha_ij``, an
  interior point). It is fitted on trajectories: every eval point of every run is one tuple ``<r, s, L_i>``.
  It predicts any column at any ``(mixture, s)``, so it extrapolates to a longer horizon.
- :class:`MixingLaw` (Ye et al., arXiv 2403.16952): one law per target, ``L(r) = c + k * exp(t . r)``, fitted
  on end points only (it runs on the official RegMix CSV pair), with a Huber loss (delta 0.02) as olmix does.

:func:`regmix_plugin.models.simplex.minimize_on_simplex` minimises any such law's prediction over
``{lower <= w <= upper, sum(w) = 1}``
(the bounds ``constraint_bounds`` builds from epochs, min/max and exclude) with SLSQP from several starts,
optionally plus ``lambda * KL(w || prior)``.

Fitting details (the paper gives no initialisation; ours):

- ``min_tokens`` leaves out eval points before that many tokens (the early transient).
- The five BiMix coefficients have one redundant degree of freedom: ``A`` multiplies ``B`` and ``C``, so only
  ``A*B`` and ``A*C`` are identified. We fix ``A_i = 1`` and fit ``alpha, log B, beta, log C``; the reported
  ``A_i`` is therefore 1 and ``B_i, C_i`` carry the scale.
- Residuals are in log space, ``log L_pred - log L_obs`` (relative errors): it turns the product law into a
  sum, and weighs domains of different loss levels alike. ``s`` is divided by the median eval ``s`` so
  ``B`` stays near the loss scale.
- Starts: one fixed (alpha 0.05, beta 0.5) plus ``n_starts - 1`` seeded draws, alpha ~ U(0, 0.5), beta ~
  U(0.05, 1.5); for each, ``C`` starts at a U(0.5, 0.95) fraction of the domain's smallest loss and ``B`` at
  the gap to the largest loss at the smallest ``s``. Bounds: alpha in [0, 3], beta in [0, 4], log B and log C
  in [-20, 10]. Trust Region Reflective (``least_squares(method="trf")``); the lowest cost wins.
- A domain a run does not train on (weight below ``min_fit_weight``, default 0.01) is left out of that
  domain's fit: its loss follows no power law in ``s`` (on our toy sweeps it *rises* as the model specialises
  on the other domains), so it would only distort the law of the runs that do train on it.
- A domain with weight 0 makes ``A / r**alpha`` infinite: ``r`` is clipped at ``r_floor`` (default 1e-3, the
  resolution of the official 3-decimal CSVs) when fitting and when predicting. Predictions at ``r`` below the
  floor are therefore those at the floor, and the optimiser cannot gain by driving a domain to exactly 0.
- The mixing law's starts: ``c`` at a fraction (seeded, in (0.3, 0.98)) of the smallest target, then
  ``log(y - c) = log k + t . r`` solved by linear least squares, then refined by Huber least squares.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from regmix_plugin.atomic import write_json


# --------------------------------------------------------------------------------------------- trajectories
def trajectories(
    weights: np.ndarray,
    metrics: Mapping[str, np.ndarray],
    columns: Sequence[str],
    final_tokens: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Eval points of a results table as BiMix inputs: ``(run index, mixture rows, s, losses)``.

    ``columns`` are end-of-training metric names (``val_loss/<domain>``); ``metrics`` holds them and their
    intermediate evals ``<column>@<tokens>``. The end counts as a point at ``final_tokens[run]`` tokens when
    given. Returns one row per (run, eval point) with ``losses[:, m]`` the value of ``columns[m]`` (NaN where
    the table has none).
    """
    points = sorted(
        {int(t) for name in metrics for base, at, t in [name.partition("@")] if at and t.isdigit() and base in columns}
    )
    rows, runs, s, losses = [], [], [], []
    for run in range(len(weights)):
        cells = [(t, [metrics.get(f"{c}@{t}") for c in columns]) for t in points]
        if final_tokens is not None and np.isfinite(final_tokens[run]):
            cells.append((int(final_tokens[run]), [metrics.get(c) for c in columns]))
        for t, cols in cells:
            vals = np.array([c[run] if c is not None else np.nan for c in cols], float)
            if np.isfinite(vals).any():
                rows.append(weights[run])
                runs.append(run)
                s.append(float(t))
                losses.append(vals)
    if not rows:
        raise ValueError(
            "no trajectory points: BiMix needs <column>@<tokens> columns (run `regmix sweep` with --eval.points "
            f">= 2) or a tokens column, for {', '.join(columns)}"
        )
    return np.array(runs), np.array(rows, float), np.array(s, float), np.array(losses, float)


# --------------------------------------------------------------------------------------------- BiMix
ALL_DOMAINS = -1


class _LossColumns:
    """Shared by the laws: one or several loss columns, remembered so ``predict`` returns the same shape."""

    def _columns(self, X, y) -> tuple[np.ndarray, np.ndarray]:
        y = np.asarray(y, float)
        self.one_column_ = y.ndim == 1
        return np.asarray(X, float), (y[:, None] if self.one_column_ else y)


class BiMixLaw(_LossColumns, RegressorMixin, BaseEstimator):
    """BiMix's bivariate law per loss column, fitted on ``<r, s, L>`` tuples.

    ``fit(X, y)``: ``X`` is ``(n, D + 1)``, the mixture (D training domains) with ``s`` (tokens) in the last
    column; ``y`` is ``(n, M)`` loss columns (NaN where not measured) or ``(n,)``. ``own_domain[m]`` is the
    training domain whose proportion drives column ``m`` (the paper's law), or ``-1`` (:data:`ALL_DOMAINS`):
    every proportion, ``L = prod_j r_j**-alpha_j * (B / s**beta + C)`` (our extension for a loss column that is
    no training domain, such as a validation-only target; it reduces to the paper's law when one ``alpha_j`` is
    non-zero). Default: column ``m`` is domain ``m`` when ``M == D``, else every column uses all proportions.

    ``predict(X)``: ``X`` of D columns predicts at ``horizon_`` tokens (``horizon_tokens``, or the largest ``s``
    fitted); D + 1 columns take ``s`` from the last one. It returns the ``column_weights``-weighted sum of the
    columns (the target) when given, else ``(n, M)`` (``(n,)`` for a 1-D ``y``).
    """

    kind = "bimix"

    def __init__(
        self,
        own_domain: tuple[int, ...] | None = None,
        column_weights: tuple[float, ...] | None = None,
        horizon_tokens: float | None = None,
        min_tokens: float = 0.0,
        r_floor: float = 1e-3,
        min_fit_weight: float = 0.01,
        n_starts: int = 8,
        random_state: int = 0,
    ):
        self.own_domain = own_domain
        self.column_weights = column_weights
        self.horizon_tokens = horizon_tokens
        self.min_tokens = min_tokens
        self.r_floor = r_floor
        self.min_fit_weight = min_fit_weight
        self.n_starts = n_starts
        self.random_state = random_state

    def fit(self, X, y):
        from scipy.optimize import least_squares

        X, Y = self._columns(X, y)
        W, s = X[:, :-1], X[:, -1]
        D, M = W.shape[1], Y.shape[1]
        own = self._own(D, M)
        if not (s > 0).all():
            raise ValueError("BiMixLaw.fit: every s (tokens trained) must be positive")
        late = s >= self.min_tokens
        self.s_scale_ = float(np.median(s[late])) if late.any() else 1.0
        self.horizon_ = float(self.horizon_tokens or s.max())
        rng = np.random.default_rng(self.random_state)
        alpha, rest, costs = np.zeros((M, D)), np.zeros((M, 3)), np.zeros(M)
        for m in range(M):
            ok = late & np.isfinite(Y[:, m]) & (Y[:, m] > 0)
            if own[m] != ALL_DOMAINS:
                ok &= W[:, own[m]] >= self.min_fit_weight
            drives = [own[m]] if own[m] != ALL_DOMAINS else list(range(D))
            if ok.sum() < len(drives) + 3:
                raise ValueError(
                    f"BiMix: loss column {m} has {ok.sum()} points from runs that train on its domain (weight >= "
                    f"{self.min_fit_weight}) at s >= {self.min_tokens:g}; its law needs at least {len(drives) + 3}"
                )
            logr = np.log(np.maximum(W[ok][:, drives], self.r_floor))
            logs, logy = np.log(s[ok] / self.s_scale_), np.log(Y[ok, m])

            def residual(p, logr=logr, logs=logs, logy=logy):
                *a, logb, beta, logc = p
                return -logr @ np.asarray(a) + np.logaddexp(logb - beta * logs, logc) - logy

            k = len(drives)
            bounds = ([0.0] * k + [-20.0, 0.0, -20.0], [3.0] * k + [10.0, 4.0, 10.0])
            best = None
            for start in self._starts(Y[ok, m], np.exp(logs), k, rng):
                sol = least_squares(
                    residual,
                    np.clip(start, np.array(bounds[0]) + 1e-9, np.array(bounds[1]) - 1e-9),
                    method="trf",
                    bounds=bounds,
                    x_scale="jac",
                )
                if best is None or sol.cost < best.cost:
                    best = sol
            alpha[m, drives] = best.x[:k]
            rest[m] = best.x[k:]
            costs[m] = float(np.sqrt(2 * best.cost / ok.sum()))
        self.alpha_, self.logb_, self.beta_, self.logc_ = alpha, rest[:, 0], rest[:, 1], rest[:, 2]
        self.rmse_log_, self.own_domain_ = costs, own
        self.n_features_in_ = D
        return self

    def _own(self, D: int, M: int) -> list[int]:
        if self.own_domain is None:
            return list(range(D)) if M == D else [ALL_DOMAINS] * M
        own = [int(j) for j in self.own_domain]
        if len(own) != M or any(not (j == ALL_DOMAINS or 0 <= j < D) for j in own):
            raise ValueError(f"BiMixLaw: own_domain {own} does not name one of {D} domains (or -1) per loss column")
        return own

    def _starts(self, y: np.ndarray, sn: np.ndarray, k: int, rng: np.random.Generator):
        lo, hi, s0 = float(y.min()), float(y.max()), float(sn.min())
        for i in range(self.n_starts):
            alpha, beta = (0.05, 0.5) if i == 0 else (rng.uniform(0, 0.5), rng.uniform(0.05, 1.5))
            c = lo * (0.8 if i == 0 else rng.uniform(0.5, 0.95))
            b = max(hi - c, 1e-3) * s0**beta
            yield np.array([alpha / k] * k + [np.log(b), beta, np.log(c)])

    def predict(self, X):
        X = np.atleast_2d(np.asarray(X, float))
        D = self.n_features_in_
        if X.shape[1] not in (D, D + 1):
            raise ValueError(f"BiMixLaw.predict: {X.shape[1]} columns; expected {D} weights (+ s)")
        s = X[:, D] if X.shape[1] == D + 1 else self.horizon_
        P = self.column_losses(X[:, :D], s)
        if self.column_weights is not None:
            return P @ np.asarray(self.column_weights, float)
        return P[:, 0] if self.one_column_ else P

    def column_losses(self, W, s) -> np.ndarray:
        """``(n, M)`` predicted losses of every loss column at mixtures ``W`` after ``s`` tokens."""
        W = np.atleast_2d(np.asarray(W, float))
        sn = np.broadcast_to(np.asarray(s, float), (len(W),)) / self.s_scale_
        scale = np.exp(-np.log(np.maximum(W, self.r_floor)) @ self.alpha_.T)  # (n, M)
        return scale * (np.exp(self.logb_)[None] * sn[:, None] ** (-self.beta_[None]) + np.exp(self.logc_)[None])

    def coefficients(self, columns: Sequence[str], domains: Sequence[str]) -> dict[str, dict]:
        """The fitted law per loss column in the paper's terms (A fixed to 1; ``s`` in tokens)."""
        out = {}
        for m, c in enumerate(columns):
            own = self.own_domain_[m]
            alpha = (
                {"alpha": float(self.alpha_[m, own])}
                if own != ALL_DOMAINS
                else {"alpha": {d: float(a) for d, a in zip(domains, self.alpha_[m], strict=True)}}
            )
            out[c] = {
                "proportion": domains[own] if own != ALL_DOMAINS else "all",
                "A": 1.0,
                **alpha,
                "B": float(np.exp(self.logb_[m]) * self.s_scale_ ** self.beta_[m]),
                "beta": float(self.beta_[m]),
                "C": float(np.exp(self.logc_[m])),
                "fit_rmse_log": float(self.rmse_log_[m]),
            }
        return out

    def settings(self) -> dict:
        return {
            "own_domain": None if self.own_domain is None else list(self.own_domain),
            "column_weights": None if self.column_weights is None else list(self.column_weights),
            "horizon_tokens": self.horizon_tokens,
            "min_tokens": self.min_tokens,
            "r_floor": self.r_floor,
            "min_fit_weight": self.min_fit_weight,
            "n_starts": self.n_starts,
            "random_state": self.random_state,
        }

    def save(self, directory: Path) -> None:
        learned = {
            "s_scale": self.s_scale_,
            "horizon": self.horizon_,
            "alpha": self.alpha_.tolist(),
            "log_b": self.logb_.tolist(),
            "beta": self.beta_.tolist(),
            "log_c": self.logc_.tolist(),
            "rmse_log": self.rmse_log_.tolist(),
            "own": self.own_domain_,
            "one_column": self.one_column_,
        }
        write_json(Path(directory) / "bimix.json", {**self.settings(), **learned})

    @classmethod
    def load(cls, directory: Path, settings: dict | None = None) -> BiMixLaw:
        raw = json.loads((Path(directory) / "bimix.json").read_text())
        tup = lambda v: None if v is None else tuple(v)  # noqa: E731
        model = cls(
            own_domain=tup(raw["own_domain"]),
            column_weights=tup(raw["column_weights"]),
            horizon_tokens=raw["horizon_tokens"],
            min_tokens=raw["min_tokens"],
            r_floor=raw["r_floor"],
            min_fit_weight=raw["min_fit_weight"],
            n_starts=raw["n_starts"],
            random_state=raw["random_state"],
        )
        model.s_scale_, model.horizon_, model.alpha_ = raw["s_scale"], raw["horizon"], np.array(raw["alpha"])
        model.logb_, model.beta_, model.logc_ = np.array(raw["log_b"]), np.array(raw["beta"]), np.array(raw["log_c"])
        model.rmse_log_, model.own_domain_, model.one_column_ = np.array(raw["rmse_log"]), raw["own"], raw["one_column"]
        model.n_features_in_ = model.alpha_.shape[1]
        return model


def extrapolation_error(runs: np.ndarray, X: np.ndarray, y: np.ndarray, **law_params) -> dict:
    """Fit BiMix on the first half of each run's trajectory and predict the run's last point.

    "First half": eval points with ``s <= s_last / 2`` of their run (and ``s >= min_tokens``). Returns the mean
    and max relative error of the last-point predictions over every (run, column) the law describes, and the
    same for the flat forecast "the last loss of the first half" (what a fit that learned nothing of ``s``
    would give), for comparison.
    """
    y = np.asarray(y, float)
    Y = y[:, None] if y.ndim == 1 else y
    s = X[:, -1]
    last_s = np.array([s[runs == r].max() for r in runs])
    first_half, last = s <= last_s / 2, s == last_s
    law = BiMixLaw(**law_params).fit(X[first_half], Y[first_half])
    pred, truth = law.column_losses(X[last][:, :-1], s[last]), Y[last]
    naive = np.full_like(truth, np.nan)
    fitted = first_half & (s >= law.min_tokens)
    for k, r in enumerate(runs[last]):
        mine = np.flatnonzero((runs == r) & fitted)
        if len(mine):
            naive[k] = Y[mine[np.argmax(s[mine])]]
    ok = np.isfinite(truth) & np.isfinite(naive)
    for m, own in enumerate(law.own_domain_):  # the paper's law describes the domains a run trains on only
        if own != ALL_DOMAINS:
            ok[:, m] &= X[last][:, own] >= law.min_fit_weight
    rel = np.where(ok, np.abs(pred - truth) / truth, np.nan)
    rel_naive = np.where(ok, np.abs(naive - truth) / truth, np.nan)
    return {
        "mean_relative_error": float(np.nanmean(rel)),
        "max_relative_error": float(np.nanmax(rel)),
        "naive_mean_relative_error": float(np.nanmean(rel_naive)),
        "per_column_mean_relative_error": [
            float(np.nanmean(rel[:, m])) if ok[:, m].any() else None for m in range(rel.shape[1])
        ],
        "n_runs": int(len(np.unique(runs))),
        "fit_points": int(fitted.sum()),
        "scored": int(ok.sum()),
        "predicted_tokens": float(np.median(s[last])),
        "fitted_up_to_tokens": float(np.median(last_s[last] / 2)),
    }


# --------------------------------------------------------------------------------------------- Ye et al.
class MixingLaw(_LossColumns, RegressorMixin, BaseEstimator):
    """Ye et al.'s data mixing law: ``L_m(r) = c_m + k_m * exp(t_m . r)`` per loss column, Huber-fitted.

    ``fit(X, y)``: ``y`` is one target (``(n,)``) or several loss columns (``(n, M)``), one law each, as Ye et
    al. fit one law per validation domain. With ``column_weights`` (M numbers) ``predict`` returns the weighted
    sum of the columns' laws (a mean loss is a sum of laws, not one law: a single exponential of a linear form
    is monotone along every edge of the simplex and cannot have an interior optimum); without, it returns the
    ``(n, M)`` predictions, or ``(n,)`` for a 1-D ``y``.
    """

    kind = "mixing_law"

    def __init__(
        self,
        huber_delta: float = 0.02,
        n_starts: int = 16,
        random_state: int = 0,
        column_weights: tuple[float, ...] | None = None,
    ):
        self.huber_delta = huber_delta
        self.n_starts = n_starts
        self.random_state = random_state
        self.column_weights = column_weights

    def fit(self, X, y):
        X, Y = self._columns(X, y)
        if self.column_weights is not None and len(self.column_weights) != Y.shape[1]:
            raise ValueError(f"MixingLaw: {len(self.column_weights)} column_weights for {Y.shape[1]} loss columns")
        rng = np.random.default_rng(self.random_state)
        params = [self._fit_one(X, Y[:, m], rng) for m in range(Y.shape[1])]
        self.c_ = np.array([p[0] for p in params])
        self.log_k_ = np.array([p[1] for p in params])
        self.t_ = np.array([p[2:] for p in params])  # (M, D)
        self.n_features_in_ = X.shape[1]
        return self

    def _fit_one(self, X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from scipy.optimize import least_squares

        ok = np.isfinite(y)
        X, y = X[ok], y[ok]
        lo = float(y.min())
        design = np.column_stack([np.ones(len(y)), X])

        def residual(p):
            return p[0] + np.exp(np.clip(p[1] + X @ p[2:], -50, 50)) - y

        def jacobian(p):
            e = np.exp(np.clip(p[1] + X @ p[2:], -50, 50))
            return np.column_stack([np.ones(len(y)), e, e[:, None] * X])

        best = None
        for k in range(self.n_starts):
            c = lo * (0.9 if k == 0 else rng.uniform(0.3, 0.98)) if lo > 0 else lo - (1 + rng.uniform())
            coef, *_ = np.linalg.lstsq(design, np.log(np.maximum(y - c, 1e-6)), rcond=None)
            sol = least_squares(
                residual,
                np.concatenate([[c], coef]),
                jac=jacobian,
                method="trf",
                loss="huber",
                f_scale=self.huber_delta,
            )
            if best is None or sol.cost < best.cost:
                best = sol
        return best.x

    def predict(self, X):
        X = np.atleast_2d(np.asarray(X, float))
        P = self.c_[None, :] + np.exp(np.clip(self.log_k_[None, :] + X @ self.t_.T, -50, 50))
        if self.column_weights is not None:
            return P @ np.asarray(self.column_weights, float)
        return P[:, 0] if self.one_column_ else P

    def coefficients(self, domains: Sequence[str], columns: Sequence[str] | None = None) -> dict:
        """The fitted law per loss column: ``{column: {c, k, t: {domain: t_j}}}``."""
        columns = columns or [f"column_{m}" for m in range(len(self.c_))]
        return {
            col: {"c": float(c), "k": float(np.exp(lk)), "t": dict(zip(domains, t.tolist(), strict=False))}
            for col, c, lk, t in zip(columns, self.c_, self.log_k_, self.t_, strict=False)
        }

    def settings(self) -> dict:
        weights = None if self.column_weights is None else list(self.column_weights)
        return {
            "huber_delta": self.huber_delta,
            "n_starts": self.n_starts,
            "random_state": self.random_state,
            "column_weights": weights,
        }

    def save(self, directory: Path) -> None:
        learned = {
            "c": self.c_.tolist(),
            "log_k": self.log_k_.tolist(),
            "t": self.t_.tolist(),
            "one_column": self.one_column_,
        }
        write_json(Path(directory) / "mixing_law.json", {**self.settings(), **learned})

    @classmethod
    def load(cls, directory: Path, settings: dict | None = None) -> MixingLaw:
        raw = json.loads((Path(directory) / "mixing_law.json").read_text())
        weights = None if raw["column_weights"] is None else tuple(raw["column_weights"])
        model = cls(
            huber_delta=raw["huber_delta"],
            n_starts=raw["n_starts"],
            random_state=raw["random_state"],
            column_weights=weights,
        )
        model.c_, model.log_k_, model.t_ = np.array(raw["c"]), np.array(raw["log_k"]), np.array(raw["t"])
        model.one_column_, model.n_features_in_ = raw["one_column"], model.t_.shape[1]
        return model


# --------------------------------------------------------------------------------------------- optimiser
