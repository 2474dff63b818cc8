"""RegMix-D's local transition model: from the state at one eval point and the mixture in force, the losses at the next.

    regmix fit_trajectory --sweep out/sweep --target val_loss/target --out out/trajectory   (commands/fit_trajectory.py)

Its directory format is :mod:`regmix_plugin.formats.trajectory_model`; the searches over it (offline schedules,
the online controller) are :mod:`regmix_plugin.models.schedule_search`.

A proxy run is a :class:`Trajectory`: the mixture in force on each segment of the run (one segment for a
static sweep, one per stage for ``regmix sample --stages S``) and the per-domain validation losses at every
eval point, as fractions ``t`` of the run. Every pair of consecutive eval points ``(t_a, t_b)`` is one row:

* ``features="losses"`` (the paper's ``(t, m, l)``): ``[t_a, t_b, m, l(t_a)]``: the mixture on the interval
  and the per-domain losses observed at its start. This is what an online controller can condition on.
* ``features="mixtures"``: ``[t_a, t_b, m, m_hist(t_a)]``: the mixture on the interval and the average
  mixture trained on before it. It needs no observed loss, so chaining it adds no error of its own.

One regressor per scored domain (the same ``linear``/``lightgbm``/``gp`` family as ``regmix fit``) predicts
that domain's loss at ``t_b``; the target is a weighted sum of those domains, as in ``regmix fit``. A chain
of predictions (:meth:`TrajectoryModel.rollout`) simulates a whole schedule.

Cross-validation splits folds by *run* (``GroupKFold``), never by row: rows of one run share its mixture
and its noise, so row folds would let a model see the run it is scored on. Two held-out errors are kept:
``step``, the target's error one interval ahead from the *observed* state (what the online controller
relies on), and ``rollout``, the error of the final target chained from the start along the held-out run's
own mixtures (what an offline schedule relies on). ``auto`` picks the feature set and regressor with the
lowest rollout RMSE; both feature sets' errors are reported in ``cv.json``.

A sweep of ``regmix sample --reuse`` mixtures (its ``sweep.json`` records the block of unchanged domains and their
fixed ratios) is fitted in the *reduced coordinates*: the regressors see the block's total and the free domains in
place of ``m`` (and of ``m_hist``), as ``regmix fit`` does. The model still takes and returns full mixtures over
``weight_domains`` (:meth:`TrajectoryModel.step` reduces them), and the searches draw in the reduced space
(:mod:`regmix_plugin.models.schedule_search`), so every schedule keeps the block's ratios.

Losses at ``t = 0`` are not scored by the sweep; every run starts from the same initialisation, so the
state at ``t = 0`` is a constant, stored in the model (``initial_state``: the mean of the first scored
point over runs). Only its being the same for every run matters to the fitted model.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from regmix_plugin.formats.reuse import ReuseStructure

FEATURE_SETS = ("losses", "mixtures")
REGRESSOR_ORDER = ("linear", "gp", "lightgbm")
_EPS = 1e-9


# -------------------------------------------------------------------------------------------- the data
@dataclass
class Trajectory:
    """One proxy run: mixture segments ``(start, end, weights)`` and losses at eval points, both in run fractions."""

    run_id: str
    segments: list[tuple[float, float, np.ndarray]]
    times: np.ndarray  # (P,) increasing fractions in (0, 1]
    losses: np.ndarray  # (P, D_loss)

    def mixture(self, a: float, b: float) -> np.ndarray:
        """Time-weighted mean mixture over ``[a, b]`` (the mixture of a stage when it lies inside one)."""
        total, acc = 0.0, None
        for s, e, w in self.segments:
            overlap = min(b, e) - max(a, s)
            if overlap > _EPS:
                acc = w * overlap if acc is None else acc + w * overlap
                total += overlap
        if acc is None:  # a zero-length interval: the mixture in force at a
            return next(w for s, e, w in self.segments if s - _EPS <= a <= e + _EPS)
        return acc / total


def segments_from_stages(stages: Sequence[Mapping], domains: Sequence[str]) -> list[tuple[float, float, np.ndarray]]:
    """``[{until_fraction, weights}, ..., {weights}]`` -> ``(start, end, weight vector)`` segments covering [0, 1]."""
    out, start = [], 0.0
    for i, st in enumerate(stages):
        end = float(st["until_fraction"]) if i < len(stages) - 1 else 1.0
        out.append((start, end, np.array([float(st["weights"].get(d, 0.0)) for d in domains])))
        start = end
    return out


def trajectories_from_records(records: Mapping[str, Mapping]) -> tuple[list[Trajectory], list[str], list[str]]:
    """Sweep records (``runs/<id>.json``) -> trajectories, their mixture domains and their loss domains.

    A record with ``schedule`` (a staged proxy) gives one segment per stage; one with only ``mixture`` (a
    static sweep) is a schedule whose stages are all equal. Runs that are not ``done`` are skipped.
    """
    from dataclasses import asdict, is_dataclass

    records = {k: asdict(r) if is_dataclass(r) else r for k, r in records.items()}
    done = [r for r in records.values() if r.get("status") == "done" and r.get("losses")]
    if not done:
        raise ValueError("no finished run with scored eval points; run `regmix sweep` until some finish")
    wdomains = sorted({d for r in done for st in _stages_of(r) for d in st["weights"]})
    ldomains = sorted(set.intersection(*(set(p["losses"]) for r in done for p in r["losses"])))
    out = []
    for r in done:
        final = float(r["tokens"])
        pts = sorted(r["losses"], key=lambda p: p["tokens"])
        out.append(
            Trajectory(
                run_id=r["run_id"],
                segments=segments_from_stages(_stages_of(r), wdomains),
                times=np.array([p["tokens"] / final for p in pts]),
                losses=np.array([[p["losses"][d] for d in ldomains] for p in pts], float),
            )
        )
    return out, wdomains, ldomains


def _stages_of(record: Mapping) -> list[dict]:
    return list(record.get("schedule") or [{"weights": record["mixture"]}])


def resolve_target(
    target: str | Mapping[str, float], loss_domains: Sequence[str], flag: str = "--target"
) -> dict[str, float]:
    """A ``regmix fit``-style target spec over ``val_loss/<domain>`` columns -> ``{domain: coefficient}``."""
    from regmix_plugin.formats.results import LOSS_PREFIX, Results

    table = Results(
        source="the sweep's eval points",
        id_column="run_id",
        ids=[],
        domains=[],
        weights=np.zeros((0, 0)),
        metrics={LOSS_PREFIX + d: np.zeros(0) for d in loss_domains},
        aliases={},
    )
    return {c[len(LOSS_PREFIX) :]: w for c, w in table.resolve_target(target, flag).items()}


# ------------------------------------------------------------------------------------------- the model
def _features(
    ta: float, tb: float, m: np.ndarray, state: np.ndarray, kind: str, reuse: ReuseStructure | None
) -> np.ndarray:
    """The regressors' input rows from full mixtures ``m`` (and, for ``mixtures`` features, the full mean mixture
    ``state``); under ``reuse`` both become reduced coordinates (block total, free domains)."""
    if reuse is not None:
        m, state = reuse.reduce(m), reuse.reduce(state) if kind == "mixtures" else state
    n = len(m)
    return np.hstack([np.full((n, 1), ta), np.full((n, 1), tb), m, state])


@dataclass
class TrajectoryModel:
    """Fitted per-domain transition regressors plus what is needed to chain them."""

    features: str
    regressor: str
    weight_domains: list[str]
    loss_domains: list[str]
    target: dict[str, float]
    initial_state: np.ndarray
    grid: list[float]
    regressors: dict[str, object]
    meta: dict = field(default_factory=dict)
    members: list[TrajectoryModel] = field(default_factory=list)
    """The cross-validation folds' models (same features and regressor, each fitted without one fold's runs):
    their disagreement on a schedule is how little the proxies say about it (``--search.pessimism``)."""
    reuse: ReuseStructure | None = None
    """The block the sweep's mixtures kept (``regmix sample --reuse``): the regressors see reduced coordinates, and
    a search must draw mixtures that keep its ratios. None: the regressors see the full mixtures."""

    @property
    def target_vector(self) -> np.ndarray:
        return np.array([self.target.get(d, 0.0) for d in self.loss_domains])

    def step(self, ta: float, tb: float, m: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Predicted per-domain losses at ``tb`` (rows of ``m``: mixtures on ``[ta, tb]``; ``state``: losses
        at ``ta`` for ``losses`` features, the mean mixture before ``ta`` for ``mixtures`` features)."""
        X = _features(ta, tb, np.atleast_2d(m), np.atleast_2d(state), self.features, self.reuse)
        return np.stack([np.asarray(self.regressors[d].predict(X), float) for d in self.loss_domains], 1)

    def start_state(self, n: int) -> np.ndarray:
        width = len(self.loss_domains) if self.features == "losses" else len(self.weight_domains)
        base = self.initial_state if self.features == "losses" else np.zeros(width)
        return np.tile(base, (n, 1))

    def advance(self, a: float, b: float, m: np.ndarray, state: np.ndarray, grid: Sequence[float] | None = None):
        """Chain over the grid points inside ``[a, b]`` with mixtures ``m`` on the whole span.

        Returns ``(losses at b, state at b)``; for ``mixtures`` features the state is the running mean mixture.
        """
        pts = [a] + [g for g in (self.grid if grid is None else grid) if a + _EPS < g < b - _EPS] + [b]
        m = np.atleast_2d(m)
        losses = None
        for ta, tb in pairwise(pts):
            losses = self.step(ta, tb, m, state)
            state = losses if self.features == "losses" else (state * ta + m * (tb - ta)) / tb
        return losses, state

    def rollout(self, segments: Sequence[tuple[float, float, np.ndarray]], grid: Sequence[float] | None = None):
        """Predicted per-domain losses at the end of a schedule, from the start (one row)."""
        state = self.start_state(1)
        for a, b, w in segments:
            losses, state = self.advance(a, b, w[None], state, grid)
        return losses[0]

    def predict_target(self, losses: np.ndarray) -> np.ndarray:
        return np.atleast_2d(losses) @ self.target_vector


def build_rows(trajs: Sequence[Trajectory], kind: str, initial: np.ndarray, reuse: ReuseStructure | None = None):
    """``(X, Y, group)``: one row per consecutive pair of eval points (and from ``t = 0`` to the first); mixtures in
    reduced coordinates under ``reuse``."""
    X, Y, G = [], [], []
    for g, tr in enumerate(trajs):
        times = np.concatenate([[0.0], tr.times])
        for i in range(len(tr.times)):
            ta, tb = times[i], times[i + 1]
            if tb - ta <= _EPS:
                continue
            m = tr.mixture(ta, tb)
            if kind == "losses":
                state = initial if i == 0 else tr.losses[i - 1]
            else:
                state = tr.mixture(0.0, ta) if ta > _EPS else np.zeros_like(m)
            X.append(_features(ta, tb, m[None], state[None], kind, reuse)[0])
            Y.append(tr.losses[i])
            G.append(g)
    return np.array(X), np.array(Y), np.array(G)


def initial_state(trajs: Sequence[Trajectory]) -> np.ndarray:
    return np.mean([tr.losses[0] for tr in trajs], axis=0)


def common_grid(trajs: Sequence[Trajectory]) -> list[float]:
    """The eval fractions most runs share (the sweep gives every run the same ones)."""
    from collections import Counter

    grids = Counter(tuple(np.round(tr.times, 9)) for tr in trajs)
    return [float(t) for t in grids.most_common(1)[0][0]]


def fit_model(
    trajs,
    weight_domains,
    loss_domains,
    target,
    features: str,
    regressor: str,
    seed: int = 0,
    meta: dict | None = None,
    reuse: ReuseStructure | None = None,
) -> TrajectoryModel:
    """Fit one regressor per loss domain on every transition row of ``trajs`` (in reduced coordinates under
    ``reuse``)."""
    from regmix_plugin.models.regressors import REGRESSORS

    init = initial_state(trajs)
    X, Y, _ = build_rows(trajs, features, init, reuse)
    regs = {d: REGRESSORS[regressor](random_state=seed).fit(X, Y[:, j]) for j, d in enumerate(loss_domains)}
    return TrajectoryModel(
        features,
        regressor,
        list(weight_domains),
        list(loss_domains),
        dict(target),
        init,
        common_grid(trajs),
        regs,
        meta or {},
        reuse=reuse,
    )


def cross_validate(
    trajs,
    weight_domains,
    loss_domains,
    target,
    features: str,
    regressor: str,
    folds: int,
    seed: int = 0,
    models: list | None = None,
    reuse: ReuseStructure | None = None,
) -> dict:
    """Held-out errors with folds split by run: one-step target error and chained final-target error.

    ``models``, if given, receives each fold's fitted model (the ensemble members of the final model).
    """
    from scipy.stats import spearmanr
    from sklearn.model_selection import GroupKFold

    groups = np.random.default_rng(seed).permutation(len(trajs))  # GroupKFold is deterministic: shuffle ids
    tvec = np.array([target.get(d, 0.0) for d in loss_domains])
    step_err, roll_pred, roll_true, per_fold = [], [], [], []
    for f, (train, test) in enumerate(GroupKFold(min(folds, len(trajs))).split(np.zeros(len(trajs)), groups=groups)):
        train_trajs = [trajs[i] for i in train]
        model = fit_model(train_trajs, weight_domains, loss_domains, target, features, regressor, seed, reuse=reuse)
        if models is not None:
            models.append(model)
        Xt, Yt, _ = build_rows([trajs[i] for i in test], features, model.initial_state, reuse)
        pred = np.stack([model.regressors[d].predict(Xt) for d in loss_domains], 1)
        errs = (pred - Yt) @ tvec
        step_err.extend(errs.tolist())
        for i in test:
            tr = trajs[i]
            roll_pred.append(float(model.predict_target(model.rollout(tr.segments, tr.times))[0]))
            roll_true.append(float(tr.losses[-1] @ tvec))
        per_fold.append(
            {
                "fold": f,
                "n_train_runs": len(train),
                "n_test_runs": len(test),
                "step_rmse": float(np.sqrt(np.mean(errs**2))),
            }
        )
    roll_pred, roll_true = np.array(roll_pred), np.array(roll_true)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = float(spearmanr(roll_pred, roll_true)[0]) if len(roll_true) > 2 else float("nan")
    return {
        "step_rmse": float(np.sqrt(np.mean(np.square(step_err)))),
        "rollout_rmse": float(np.sqrt(np.mean((roll_pred - roll_true) ** 2))),
        "rollout_spearman": rho,
        "folds": per_fold,
    }
