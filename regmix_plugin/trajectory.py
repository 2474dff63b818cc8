"""RegMix-D's local transition model: from the state at one eval point and the mixture in force, the losses at the next.

    regmix fit_trajectory --sweep out/sweep --target val_loss/target --out out/trajectory   (fit_trajectory.py)

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

Losses at ``t = 0`` are not scored by the sweep; every run starts from the same initialisation, so the
state at ``t = 0`` is a constant, stored in the model (``initial_state``: the mean of the first scored
point over runs). Only its being the same for every run matters to the fitted model.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path
from typing import Literal

import numpy as np

TRAJECTORY_FORMAT = 1
TRAJECTORY_FILE = "trajectory.json"
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
def _features(ta: float, tb: float, m: np.ndarray, state: np.ndarray) -> np.ndarray:
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

    @property
    def target_vector(self) -> np.ndarray:
        return np.array([self.target.get(d, 0.0) for d in self.loss_domains])

    def step(self, ta: float, tb: float, m: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Predicted per-domain losses at ``tb`` (rows of ``m``: mixtures on ``[ta, tb]``; ``state``: losses
        at ``ta`` for ``losses`` features, the mean mixture before ``ta`` for ``mixtures`` features)."""
        X = _features(ta, tb, np.atleast_2d(m), np.atleast_2d(state))
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


def build_rows(trajs: Sequence[Trajectory], kind: str, initial: np.ndarray):
    """``(X, Y, group)``: one row per consecutive pair of eval points (and from ``t = 0`` to the first)."""
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
            X.append(np.concatenate([[ta, tb], m, state]))
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
    trajs, weight_domains, loss_domains, target, features: str, regressor: str, seed: int = 0, meta: dict | None = None
) -> TrajectoryModel:
    """Fit one regressor per loss domain on every transition row of ``trajs``."""
    from regmix_plugin.regressors import REGRESSORS

    init = initial_state(trajs)
    X, Y, _ = build_rows(trajs, features, init)
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
        model = fit_model([trajs[i] for i in train], weight_domains, loss_domains, target, features, regressor, seed)
        if models is not None:
            models.append(model)
        Xt, Yt, _ = build_rows([trajs[i] for i in test], features, model.initial_state)
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


# ------------------------------------------------------------------------------------------ save / load
def save_model(model: TrajectoryModel, out: Path, cv: dict | None = None) -> None:
    """Write the model directory atomically: ``trajectory.json`` and one regressor directory per loss domain."""
    from regmix_plugin.atomic import write_json
    from regmix_plugin.formats.model_dir import replacing_model_dir

    with replacing_model_dir(out, TRAJECTORY_FILE, what="a trajectory model directory") as tmp:
        settings = _save_regressors(model, tmp / "regressors")
        members = [
            {"initial_state": m.initial_state.tolist(), "settings": _save_regressors(m, tmp / "members" / f"{k:02d}")}
            for k, m in enumerate(model.members)
        ]
        write_json(
            tmp / TRAJECTORY_FILE,
            {
                "format_version": TRAJECTORY_FORMAT,
                "features": model.features,
                "regressor": model.regressor,
                "weight_domains": model.weight_domains,
                "loss_domains": model.loss_domains,
                "target": model.target,
                "initial_state": model.initial_state.tolist(),
                "grid": model.grid,
                "settings": settings,
                "members": members,
                **model.meta,
            },
        )
        if cv is not None:
            write_json(tmp / "cv.json", cv)


def _save_regressors(model: TrajectoryModel, root: Path) -> dict:
    settings = {}
    for i, d in enumerate(model.loss_domains):
        sub = root / f"{i:03d}"
        sub.mkdir(parents=True)
        model.regressors[d].save(sub)
        settings[d] = model.regressors[d].settings()
    return settings


def load_trajectory_model(path: Path, flag: str = "--model") -> TrajectoryModel:
    """Read a directory written by :func:`save_model` (no pickle: JSON, LightGBM text, ``.npz``)."""
    from regmix_plugin.regressors import load_regressor

    path = Path(path)
    meta_file = path / TRAJECTORY_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(
            f"{flag} {str(path)!r} has no {TRAJECTORY_FILE}; write it with `regmix fit_trajectory --out {path}`"
        )
    meta = json.loads(meta_file.read_text())
    if meta.get("format_version") != TRAJECTORY_FORMAT or meta.get("features") not in FEATURE_SETS:
        raise ValueError(
            f"{flag} {str(path)!r} is trajectory format {meta.get('format_version')!r}; this version "
            f"reads {TRAJECTORY_FORMAT}: re-run `regmix fit_trajectory --out {path}`"
        )
    def regressors(root: Path, settings: dict) -> dict:
        return {
            d: load_regressor(meta["regressor"], root / f"{i:03d}", settings[d])
            for i, d in enumerate(meta["loss_domains"])
        }

    regs = regressors(path / "regressors", meta["settings"])
    known = {
        "format_version",
        "features",
        "regressor",
        "weight_domains",
        "loss_domains",
        "target",
        "initial_state",
        "grid",
        "settings",
        "members",
    }
    common = (meta["features"], meta["regressor"], meta["weight_domains"], meta["loss_domains"], meta["target"])
    members = [
        TrajectoryModel(
            *common,
            np.array(m["initial_state"], float),
            meta["grid"],
            regressors(path / "members" / f"{k:02d}", m["settings"]),
        )
        for k, m in enumerate(meta.get("members", []))
    ]
    return TrajectoryModel(
        meta["features"],
        meta["regressor"],
        meta["weight_domains"],
        meta["loss_domains"],
        meta["target"],
        np.array(meta["initial_state"], float),
        meta["grid"],
        regs,
        {k: v for k, v in meta.items() if k not in known},
        members,
    )


def fit_trajectories(
    trajs, wdomains, ldomains, target, features="auto", regressor="linear", out=None, cv_folds=5, seed=0, source=None
) -> dict:
    """:func:`fit_trajectory` on trajectories already in memory; returns the CV report.

    Folds as in `regmix fit` (:func:`regmix_plugin.regressors.cv_fold_count`): leave-one-out, with a note,
    when there are fewer than 2 runs per fold.
    """
    from regmix_plugin.regressors import cv_fold_count

    where = f"the sweep {str(source['sweep'])!r}" if source and "sweep" in source else "the sweep"
    cv_folds = cv_fold_count(len(trajs), cv_folds, where)
    tmap = resolve_target(target, ldomains)
    fsets = FEATURE_SETS if features == "auto" else (features,)
    regs = REGRESSOR_ORDER if regressor == "auto" else (regressor,)
    fold_models: dict[str, list] = {f"{f}/{r}": [] for f in fsets for r in regs}
    scores = {
        k: cross_validate(trajs, wdomains, ldomains, tmap, *k.split("/"), cv_folds, seed, fold_models[k])
        for k in fold_models
    }
    order = list(fold_models)
    chosen = min(order, key=lambda k: (_nan_to(scores[k]["rollout_rmse"]), order.index(k)))
    fset, reg = chosen.split("/")
    meta = {
        "target_spec": target,
        "n_runs": len(trajs),
        "cv_rollout_rmse": scores[chosen]["rollout_rmse"],
        "cv_step_rmse": scores[chosen]["step_rmse"],
        "source": source or {},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    model = fit_model(trajs, wdomains, ldomains, tmap, fset, reg, seed, meta)
    model.members = fold_models[chosen]
    cv = {
        "folds": cv_folds,
        "leave_one_out": cv_folds == len(trajs),
        "split": "GroupKFold by run",
        "seed": seed,
        "n_runs": len(trajs),
        "chosen": chosen,
        "selection": "lowest held-out rollout RMSE of the final target",
        "candidates": scores,
    }
    if out is not None:
        save_model(model, out, cv)
        lines = [
            f"{k:<20} step RMSE {s['step_rmse']:.4f}  rollout RMSE {s['rollout_rmse']:.4f}  "
            f"rollout Spearman {s['rollout_spearman']:.3f}"
            for k, s in scores.items()
        ]
        print("\n".join(lines) + f"\nchose {chosen}; wrote {out}")
    return cv


def _nan_to(x: float, default: float = math.inf) -> float:
    return x if np.isfinite(x) else default


# ------------------------------------------------------------------------------------ stage-wise search
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
    of its fold models' predictions (each chained from the same ``state``) when it has them."""
    scores = chained_target(model, bounds, cands, state)
    if pessimism > 0 and len(model.members) >= 2:
        spread = np.std([chained_target(m, bounds, cands, state) for m in model.members], axis=0)
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
    from regmix_plugin.mixture import SamplerArgs, project, sample_candidates

    sampler = SamplerArgs(min_strength=search.strength[0], max_strength=search.strength[1])
    n, seed = search.n_candidates, search.seed + stage
    cands = sample_candidates(prior, lower, upper, n, sampler, seed, search.num_threads)
    scores = schedule_scores(model, [a, b], cands[:, None], state, search.pessimism)
    k = min(search.top_k, len(cands))
    best = np.argsort(scores, kind="stable")[:k]
    mix = cands[best].mean(0)
    if previous is not None and search.smoothing > 0:
        mix = (1 - search.smoothing) * mix + search.smoothing * previous
    if (mix < lower - _EPS).any() or (mix > upper + _EPS).any():
        mix = project(mix[None], lower, upper)[0]
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
    from regmix_plugin.mixture import SamplerArgs, sample_candidates

    sampler = SamplerArgs(min_strength=search.strength[0], max_strength=search.strength[1])
    spans = np.diff(np.asarray(bounds, float))
    draws = []
    for j, span in enumerate(spans):
        hi = upper if allowance is None else np.minimum(upper, np.maximum(allowance, 0.0) / span)
        if hi.sum() < 1 - 1e-9 or (lower > hi + 1e-9).any():
            raise ValueError(f"stage {stage + j}: the epoch allowance admits no mixture; raise "
                             "--constraints.max_epochs or lower --constraints.target_tokens")  # fmt: skip
        draws.append(sample_candidates(prior, lower, hi, search.n_candidates, sampler, search.seed + stage + j,
                                       search.num_threads))  # fmt: skip
    cands = np.stack(draws, 1)  # (n, stages, domains)
    if allowance is not None:
        cands = cands[(np.einsum("nsd,s->nd", cands, spans) <= allowance + 1e-9).all(1)]
        if not len(cands):
            raise ValueError(f"stage {stage}: no candidate schedule keeps within the epoch allowance; raise "
                             "--search.n_candidates or --constraints.max_epochs")  # fmt: skip
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
        if hi.sum() < 1 - 1e-9 or (lower > hi + 1e-9).any():
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
