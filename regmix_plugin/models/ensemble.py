"""Several fitted models of one quantity: their mean and their spread. ``regmix fit --regressor ensemble`` is one.

    regmix fit --results out/sweep/results.csv --target val_loss/pile_cc --regressor ensemble --out out/model
    regmix propose --model out/model --results out/sweep/results.csv --n 16 --out next.csv

:class:`Committee` is the one mechanism for "the spread of several fitted models": the ensemble's uncertainty
(:meth:`EnsembleRegressor.predict` with ``return_std``) and ``regmix schedule``'s ``--search.pessimism`` (the
spread of a trajectory model's cross-validation fold models, :func:`regmix_plugin.models.schedule_search.
schedule_scores`) both are its std.

:class:`EnsembleRegressor` averages the **z-scored** predictions of its members (``regmix fit`` gives it
``gp``, ``lightgbm``, ``mixing_law``, and ``bimix`` where the table has trajectories). Precisely, for member
``m`` with prediction ``f_m``, fitted on the training runs ``x_1 .. x_n`` with targets ``y_1 .. y_n``:

- ``mu_m, sd_m``: mean and population std of ``f_m(x_i)`` over the training runs (``sd_m = 1`` if it is 0);
- ``z_m(x) = (f_m(x) - mu_m) / sd_m``: how far ``x`` is from the training runs, in member ``m``'s own spread;
- ``q_m(x) = y_mean + y_sd * z_m(x)``: that, mapped back to the target's scale (``y_mean``, ``y_sd``: mean and
  population std of ``y_i``);
- prediction ``= mean_m q_m(x) = y_mean + y_sd * mean_m z_m(x)``;
- uncertainty ``= std_m q_m(x) = y_sd * std_m z_m(x)`` (population std over the members).

The z-score puts the members on one scale before they are averaged: a law fitted on trajectories predicts at
its horizon (``--horizon_tokens``), so its values need not be the proxies' losses, and only how it ranks and
spaces mixtures is comparable. Every member predicts from the mixture alone (``bimix`` at its horizon), the
same way for the training runs (``mu_m``, ``sd_m``) as for new mixtures.

Batch rule for ``regmix propose`` (:meth:`EnsembleRegressor.condition_on`): the **kriging believer**
(Ginsbourger, Le Riche & Carraro, 2010) applied to the ensemble. The believed value at a pick is the ensemble's
mean ``b`` there, which member ``m`` believes on its own scale, ``mu_m + sd_m * (b - y_mean) / y_sd`` (the
value whose ``q_m`` is ``b``). The ``gp`` member is conditioned on it with its kernel kept
(:meth:`GPRegressor.condition_on`, the believer as published); each member fitted on the target alone
(``lightgbm``) is refitted on the real runs plus every pick so far at that value, as scikit-optimize's
``Optimizer.ask(n_points)`` does for any surrogate with its constant-liar strategies (``cl_min``/``cl_mean``/
``cl_max``). Laws fitted on loss columns or trajectories are kept as fitted: a believed target gives them no loss
columns or trajectory to fit. ``mu_m``, ``sd_m``, ``y_mean`` and ``y_sd`` stay those of the real runs: a believed
value never rescales the members.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone

from regmix_plugin.atomic import atomic_path, write_json

MEMBERS_DIR = "members"


class Committee:
    """Several fitted models of one quantity, each optionally mapped ``offset + gain * prediction``.

    ``mean_std(predict)`` is the mean and the population std across the models of ``predict(model)``; the std
    is the spread: how much models that each fit the data disagree.
    """

    def __init__(self, members: Sequence, offsets: Sequence[float] | None = None, gains: Sequence[float] | None = None):
        self.members = list(members)
        self.offsets = None if offsets is None else np.asarray(offsets, float)
        self.gains = None if gains is None else np.asarray(gains, float)

    def predictions(self, predict: Callable[[object], np.ndarray]) -> np.ndarray:
        """``(models, n)``: each model's mapped predictions."""
        P = np.stack([np.asarray(predict(m), float) for m in self.members])
        if self.gains is not None:
            P = self.offsets[:, None] + self.gains[:, None] * P
        return P

    def mean_std(self, predict: Callable[[object], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        P = self.predictions(predict)
        return P.mean(0), P.std(0)


class EnsembleRegressor(RegressorMixin, BaseEstimator):
    """The z-scored mean of its members' predictions, with their spread as its std (the module docstring defines
    both).

    ``members``: ``(name, estimator)`` pairs (each a regressor of :mod:`regmix_plugin.models.regressors` or
    :mod:`regmix_plugin.models.laws`). ``fit(X, y, member_data)`` fits a clone of each on ``member_data[name]``
    (what that member is fitted on: a law's loss columns or trajectory points) or, if absent, on ``(X, y)``;
    the calibration always uses ``X`` (one row of mixture weights per run) and ``y``. ``left_out``: members
    the table could not feed, with the reason (reported in :meth:`settings`).
    """

    kind = "ensemble"

    def __init__(self, members: tuple = (), left_out: Mapping[str, str] | None = None):
        self.members = members
        self.left_out = left_out

    def fit(self, X, y, member_data: Mapping[str, tuple] | None = None, prefit: Mapping[str, object] | None = None):
        """Fit the members (``prefit[name]``: a member already fitted, by the caller, on exactly what this fit would
        feed it; used as is) and calibrate them on ``X``, ``y``."""
        X, y = np.asarray(X, float), np.asarray(y, float)
        names = [n for n, _ in self.members]
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"EnsembleRegressor needs at least 2 members with distinct names, got {names}")
        member_data, prefit = member_data or {}, prefit or {}
        self.members_ = [
            (n, prefit[n] if n in prefit else clone(est).fit(*member_data.get(n, (X, y)))) for n, est in self.members
        ]
        self.refit_ = [n not in member_data for n in names]
        self.X_train_, self.y_train_ = X, y
        self.believed_X_, self.believed_y_ = np.zeros((0, X.shape[1])), np.zeros(0)
        self.y_mean_, self.y_scale_ = float(y.mean()), float(y.std()) or 1.0
        P = Committee([m for _, m in self.members_]).predictions(lambda m: m.predict(X))
        self.centers_ = P.mean(1)
        self.scales_ = np.where(P.std(1) > 0, P.std(1), 1.0)
        return self

    def committee(self) -> Committee:
        """The fitted members, each mapped to ``q_m`` (z-scored, on the target's scale)."""
        gains = self.y_scale_ / self.scales_
        return Committee([m for _, m in self.members_], self.y_mean_ - gains * self.centers_, gains)

    def predict(self, X, return_std: bool = False):
        """The members' z-mean (and, with ``return_std``, their spread) on the target's scale, per row."""
        X = np.atleast_2d(np.asarray(X, float))
        mean, std = self.committee().mean_std(lambda m: m.predict(X))
        return (mean, std) if return_std else mean

    def condition_on(self, X, y) -> EnsembleRegressor:
        """A copy that believes the targets ``y`` at the mixtures ``X`` (the batch rule in the module docstring)."""
        X, y = np.atleast_2d(np.asarray(X, float)), np.atleast_1d(np.asarray(y, float))
        model = copy.copy(self)
        model.believed_X_ = np.vstack([self.believed_X_, X])
        model.believed_y_ = np.concatenate([self.believed_y_, y])
        members = []
        for (name, m), refit, center, scale in zip(
            self.members_, self.refit_, self.centers_, self.scales_, strict=True
        ):
            own = lambda b, c=center, s=scale: c + s * (b - self.y_mean_) / self.y_scale_  # noqa: E731
            if hasattr(m, "condition_on"):
                m = m.condition_on(X, own(y))
            elif refit:
                Xb = np.vstack([self.X_train_, model.believed_X_])
                m = clone(m).fit(Xb, np.concatenate([self.y_train_, own(model.believed_y_)]))
            members.append((name, m))
        model.members_ = members
        return model

    def settings(self) -> dict:
        return {
            "members": [n for n, _ in self.members_],
            "member_settings": {n: m.settings() for n, m in self.members_},
            "left_out": dict(self.left_out or {}),
            "combination": "mean of the members' predictions z-scored on the training runs, on the target's scale",
            "uncertainty": "std of the members' z-scored predictions, on the target's scale",
        }

    def save(self, directory: Path) -> None:
        """``ensemble.json`` (members, their settings and calibration), ``ensemble.npz`` (the training rows, for
        the believer's refits) and each member's own files under ``members/<name>/``."""
        directory = Path(directory)
        for name, m in self.members_:
            m.save(directory / MEMBERS_DIR / name)
        with atomic_path(directory / "ensemble.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, X_train=self.X_train_, y_train=self.y_train_)
        index = {
            "members": [
                {"name": n, "kind": m.kind, "settings": m.settings(), "refit": r, "center": c, "scale": s}
                for (n, m), r, c, s in zip(
                    self.members_, self.refit_, self.centers_.tolist(), self.scales_.tolist(), strict=True
                )
            ],
            "y_mean": self.y_mean_,
            "y_scale": self.y_scale_,
            "left_out": dict(self.left_out or {}),
        }
        write_json(directory / "ensemble.json", index)

    @classmethod
    def load(cls, directory: Path, settings: dict | None, load_member: Callable) -> EnsembleRegressor:
        """Rebuild a saved ensemble; ``load_member(kind, directory, settings)`` rebuilds each member
        (:func:`regmix_plugin.models.regressors.load_regressor`, passed in: it knows this class)."""
        directory = Path(directory)
        raw = json.loads((directory / "ensemble.json").read_text())
        entries = raw["members"]
        fitted = [
            (e["name"], load_member(e["kind"], directory / MEMBERS_DIR / e["name"], e["settings"])) for e in entries
        ]
        model = cls(members=tuple(fitted), left_out=raw["left_out"])
        model.members_, model.refit_ = fitted, [bool(e["refit"]) for e in entries]
        model.centers_ = np.array([e["center"] for e in entries], float)
        model.scales_ = np.array([e["scale"] for e in entries], float)
        model.y_mean_, model.y_scale_ = float(raw["y_mean"]), float(raw["y_scale"])
        with np.load(directory / "ensemble.npz", allow_pickle=False) as z:
            model.X_train_, model.y_train_ = z["X_train"], z["y_train"]
        model.believed_X_, model.believed_y_ = np.zeros((0, model.X_train_.shape[1])), np.zeros(0)
        return model
