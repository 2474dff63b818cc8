"""The regressors `regmix fit` chooses from: mixture weights (rows summing to 1) -> a target metric.

Each follows the scikit-learn estimator contract (``__init__`` stores parameters, learned state ends in
``_``, ``fit`` returns ``self``) and saves itself in a format that runs no code when loaded (JSON, a
LightGBM text model, ``.npz`` read with ``allow_pickle=False``).

- ``linear``: ridge regression, alpha by 5-fold CV over 1e-3 ... 1e3, as in the RegMix paper.
- ``lightgbm``: the paper's LightGBM (1000 iterations at learning rate 1e-2, no early stopping) with
  ``min_child_samples`` scaled down for few runs: LightGBM's default of 20 cannot split 32 rows.
- ``bimix``, ``mixing_law``: parametric laws, in :mod:`regmix_plugin.models.laws`.
- ``ensemble``: the z-scored mean of gp, lightgbm and the laws, with their spread as its std, in
  :mod:`regmix_plugin.models.ensemble`.
- ``gp``: a Gaussian process on sqrt(weights) (the Hellinger embedding of the simplex) with an ARD RBF
  kernel plus noise: the square root spreads out the small weights that most domains have, and one length
  scale per domain lets the kernel ignore domains that do not move the target. It was chosen over
  isotropic kernels and other embeddings by K-fold CV on the official RegMix runs (the comparison is in
  CHANGELOG.md).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from regmix_plugin.atomic import atomic_path, write_json, write_text

RIDGE_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3)


MIN_CV_RUNS = 4
"""Fewest runs a cross-validated fit accepts: leave-one-out over 3 trains on 2, and a Spearman over 3 points
means little."""


def cv_fold_count(n_runs: int, cv_folds: int, source: str) -> int:
    """K for ``--cv_folds`` on ``n_runs`` runs: ``cv_folds`` itself, or ``n_runs`` (leave-one-out, with a note)
    when there are fewer than 2 runs per fold. The one policy of `regmix fit` and `regmix fit_trajectory`.

    Raises naming the flag when ``cv_folds < 2`` or ``source`` (e.g. "the sweep 'out/sweep'") has fewer than
    :data:`MIN_CV_RUNS` runs.
    """
    if cv_folds < 2:
        raise ValueError(f"--cv_folds must be at least 2, got {cv_folds}")
    if n_runs < MIN_CV_RUNS:
        raise ValueError(
            f"fitting needs at least {MIN_CV_RUNS} runs with a finite target (leave-one-out CV below "
            f"{2 * cv_folds}), {source} has {n_runs}: add proxy runs"
        )
    if n_runs < 2 * cv_folds:
        print(
            f"note: {n_runs} runs are too few for {cv_folds}-fold CV (it needs {2 * cv_folds}, 2 per fold); "
            f"using leave-one-out CV instead ({n_runs} folds of one run; Spearman over the pooled predictions)"
        )
        return n_runs
    return cv_folds


def sensible_min_child_samples(n_runs: int) -> int:
    """LightGBM's ``min_child_samples`` for ``n_runs`` training rows: its default 20 from 400 rows on, fewer below."""
    return int(max(2, min(20, n_runs // 20)))


class LinearRegressor(RegressorMixin, BaseEstimator):
    """Ridge regression on the weights with alpha chosen by K-fold CV on the training rows only."""

    kind = "linear"

    def __init__(self, alphas: tuple[float, ...] = RIDGE_ALPHAS, cv: int = 5, random_state: int = 0):
        self.alphas = alphas
        self.cv = cv
        self.random_state = random_state

    def fit(self, X, y):
        from sklearn.linear_model import RidgeCV
        from sklearn.model_selection import KFold

        X, y = np.asarray(X, float), np.asarray(y, float)
        folds = KFold(min(self.cv, len(y)), shuffle=True, random_state=self.random_state)
        # MSE, not sklearn's default R^2, which is undefined on the 1-run folds of a small table.
        ridge = RidgeCV(alphas=self.alphas, cv=folds, scoring="neg_mean_squared_error").fit(X, y)
        self.coef_, self.intercept_, self.alpha_ = ridge.coef_.copy(), float(ridge.intercept_), float(ridge.alpha_)
        return self

    def predict(self, X):
        return np.asarray(X, float) @ self.coef_ + self.intercept_

    def settings(self) -> dict:
        return {"alphas": list(self.alphas), "cv": self.cv, "alpha": self.alpha_}

    def save(self, directory: Path) -> None:
        learned = {"coef": self.coef_.tolist(), "intercept": self.intercept_}
        write_json(directory / "linear.json", {**self.settings(), **learned})

    @classmethod
    def load(cls, directory: Path, settings: dict) -> LinearRegressor:
        raw = json.loads((directory / "linear.json").read_text())
        model = cls(alphas=tuple(raw["alphas"]), cv=raw["cv"])
        model.coef_, model.intercept_, model.alpha_ = np.array(raw["coef"]), raw["intercept"], raw["alpha"]
        return model


class LightGBMRegressor(RegressorMixin, BaseEstimator):
    """The paper's LightGBM: a fixed number of boosting rounds, never early-stopped.

    Fits on one thread by default: on a few hundred rows more threads only add synchronisation, and on a
    shared machine OpenMP's busy-waiting makes more threads slower, not faster (CHANGELOG.md).
    """

    kind = "lightgbm"

    def __init__(
        self,
        n_estimators: int = 1000,
        learning_rate: float = 1e-2,
        num_leaves: int = 31,
        min_child_samples: int | None = None,
        random_state: int = 0,
        num_threads: int = 1,
    ):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.random_state = random_state
        self.num_threads = num_threads

    def fit(self, X, y):
        import lightgbm as lgb

        X, y = np.asarray(X, float), np.asarray(y, float)
        self.min_child_samples_ = self.min_child_samples or sensible_min_child_samples(len(y))
        params = {
            "objective": "regression",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples_,
            "seed": self.random_state,
            "deterministic": True,
            "force_col_wise": True,
            "num_threads": self.num_threads,
            "verbosity": -1,
        }
        self.booster_ = lgb.train(params, lgb.Dataset(X, y, params=params), num_boost_round=self.n_estimators)
        return self

    def predict(self, X, start: int = 0, stop: int | None = None, num_threads: int | None = None):
        """Predict with trees ``[start, stop)``; the sums over consecutive ranges add up to the full prediction."""
        stop = self.booster_.num_trees() if stop is None else stop
        return self.booster_.predict(
            X, start_iteration=start, num_iteration=stop - start, num_threads=num_threads or self.num_threads
        )

    def n_trees(self) -> int:
        return self.booster_.num_trees()

    def settings(self) -> dict:
        return {
            "n_estimators": self.n_estimators,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples_,
            "early_stopping": False,
        }

    def save(self, directory: Path) -> None:
        write_text(directory / "lightgbm.txt", self.booster_.model_to_string())

    @classmethod
    def load(cls, directory: Path, settings: dict) -> LightGBMRegressor:
        import lightgbm as lgb

        model = cls(
            n_estimators=settings["n_estimators"],
            learning_rate=settings["learning_rate"],
            num_leaves=settings["num_leaves"],
            min_child_samples=settings["min_child_samples"],
        )
        model.min_child_samples_ = settings["min_child_samples"]
        model.booster_ = lgb.Booster(model_str=(directory / "lightgbm.txt").read_text())
        return model


class GPRegressor(RegressorMixin, BaseEstimator):
    """Gaussian process regression on sqrt(weights): ARD RBF kernel times a constant, plus white noise.

    The kernel hyperparameters maximise the marginal likelihood of at most ``max_fit_runs`` training
    rows (a random subset: the cost is cubic); the posterior then conditions on every training row.
    """

    kind = "gp"

    def __init__(self, max_fit_runs: int = 256, random_state: int = 0):
        self.max_fit_runs = max_fit_runs
        self.random_state = random_state

    def fit(self, X, y):
        from threadpoolctl import threadpool_limits

        # Hundreds of small factorisations: BLAS threads only add contention on busy cores.
        with threadpool_limits(1, user_api="blas"):
            return self._fit(X, y)

    def _fit(self, X, y):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        X, y = np.asarray(X, float), np.asarray(y, float)
        self.y_mean_ = float(y.mean())
        self.y_scale_ = float(y.std()) or 1.0
        Z, t = np.sqrt(X), (y - self.y_mean_) / self.y_scale_
        rng = np.random.default_rng(self.random_state)
        sub = rng.permutation(len(y))[: self.max_fit_runs]
        kernel = ConstantKernel(1.0, (1e-3, 1e3)) * RBF(np.ones(X.shape[1]), (1e-2, 1e3)) + WhiteKernel(
            1e-2, (1e-6, 1.0)
        )
        with warnings.catch_warnings():
            # A length scale at its bound is the answer for a domain that does not matter, not a failure.
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp = GaussianProcessRegressor(kernel, random_state=self.random_state).fit(Z[sub], t[sub])
        self.constant_ = float(gp.kernel_.k1.k1.constant_value)
        self.length_scale_ = np.atleast_1d(np.asarray(gp.kernel_.k1.k2.length_scale, float))
        self.noise_ = float(gp.kernel_.k2.noise_level)
        self.X_train_ = X
        self._condition(t)
        return self

    def _condition(self, t: np.ndarray) -> None:
        from scipy.linalg import cho_factor, cho_solve

        K = self._kernel(self.X_train_, self.X_train_) + self.noise_ * np.eye(len(self.X_train_))
        self._chol = cho_factor(K, lower=True)
        self.dual_coef_ = cho_solve(self._chol, t)

    def _kernel(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        a, b = np.sqrt(A) / self.length_scale_, np.sqrt(B) / self.length_scale_
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        return self.constant_ * np.exp(-0.5 * np.maximum(d2, 0.0))

    def predict(self, X, return_std: bool = False, batch: int = 20_000):
        """Posterior mean (and, with ``return_std``, the posterior std of the mean function) per row."""
        from scipy.linalg import solve_triangular

        X = np.asarray(X, float)
        mean, std = np.empty(len(X)), np.empty(len(X))
        for s in range(0, len(X), batch):
            Ks = self._kernel(X[s : s + batch], self.X_train_)
            mean[s : s + batch] = Ks @ self.dual_coef_
            if return_std:
                v = solve_triangular(self._chol[0], Ks.T, lower=True)
                std[s : s + batch] = np.sqrt(np.maximum(self.constant_ - (v * v).sum(0), 0.0))
        mean = mean * self.y_scale_ + self.y_mean_
        return (mean, std * self.y_scale_) if return_std else mean

    def condition_on(self, X, y) -> GPRegressor:
        """A copy that has also observed the targets ``y`` at the mixtures ``X``, under the same kernel
        hyperparameters (no refit): the posterior of the fitted prior given the old rows and the new ones.

        ``regmix propose``'s kriging believer conditions on its picks at their predicted means this way.
        """
        X, y = np.atleast_2d(np.asarray(X, float)), np.atleast_1d(np.asarray(y, float))
        K = self._kernel(self.X_train_, self.X_train_) + self.noise_ * np.eye(len(self.X_train_))
        t = np.concatenate([K @ self.dual_coef_, (y - self.y_mean_) / self.y_scale_])
        model = type(self)(max_fit_runs=self.max_fit_runs, random_state=self.random_state)
        model.constant_, model.length_scale_, model.noise_ = self.constant_, self.length_scale_, self.noise_
        model.y_mean_, model.y_scale_ = self.y_mean_, self.y_scale_
        model.X_train_ = np.vstack([self.X_train_, X])
        model._condition(t)
        return model

    def settings(self) -> dict:
        return {
            "transform": "sqrt",
            "kernel": "constant * RBF(ARD) + white",
            "constant": self.constant_,
            "length_scale": self.length_scale_.tolist(),
            "noise": self.noise_,
            "max_fit_runs": self.max_fit_runs,
        }

    def save(self, directory: Path) -> None:
        with atomic_path(directory / "gp.npz") as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                X_train=self.X_train_,
                dual_coef=self.dual_coef_,
                length_scale=self.length_scale_,
                scalars=np.array([self.constant_, self.noise_, self.y_mean_, self.y_scale_]),
            )

    @classmethod
    def load(cls, directory: Path, settings: dict) -> GPRegressor:
        from scipy.linalg import cho_factor

        with np.load(directory / "gp.npz", allow_pickle=False) as z:
            model = cls(max_fit_runs=settings["max_fit_runs"])
            model.X_train_, model.dual_coef_, model.length_scale_ = z["X_train"], z["dual_coef"], z["length_scale"]
            model.constant_, model.noise_, model.y_mean_, model.y_scale_ = map(float, z["scalars"])
        K = model._kernel(model.X_train_, model.X_train_) + model.noise_ * np.eye(len(model.X_train_))
        model._chol = cho_factor(K, lower=True)
        return model


#: The regressors fitted on one target value per run (mixture weights -> target).
REGRESSORS = {cls.kind: cls for cls in (LinearRegressor, LightGBMRegressor, GPRegressor)}


def regressor_kinds() -> dict:
    """Every kind a model directory may hold (``formats.model_dir.REGRESSOR_KINDS``): :data:`REGRESSORS` and the
    parametric laws of :mod:`regmix_plugin.models.laws`, which ``fit`` feeds loss columns (and trajectories) instead,
    and the ensemble of :mod:`regmix_plugin.models.ensemble`."""
    from regmix_plugin.models.ensemble import EnsembleRegressor
    from regmix_plugin.models.laws import BiMixLaw, MixingLaw

    return {**REGRESSORS, BiMixLaw.kind: BiMixLaw, MixingLaw.kind: MixingLaw, EnsembleRegressor.kind: EnsembleRegressor}


def load_regressor(kind: str, directory: Path, settings: dict):
    """Rebuild a saved regressor of ``kind`` from ``directory`` (an ensemble's members by this same function)."""
    if kind == "ensemble":
        return regressor_kinds()[kind].load(directory, settings, load_member=load_regressor)
    return regressor_kinds()[kind].load(directory, settings)
