"""A ground truth where the best mixture changes during training, for RegMix-D's tests.

Three training domains and a val-only target, with learning dynamics written down in advance (not fitted
to make any method win):

* ``fast`` is learned quickly and then saturates: ``L = 2.0 + 1.5 exp(-e_fast / 0.08)``, where ``e_fast``
  is the share of the run spent on it so far;
* ``slow`` keeps paying all run long, ``L = 2.5 + 2.0 (1 + e_slow / 0.05) ** -0.5``, and is learned faster
  once ``fast`` is mastered: each slow sample counts ``0.25 + 0.75 * mastery(fast)`` (a prerequisite, as
  basic language before harder text);
* ``other`` helps a little, with diminishing returns: ``L = 2.2 + 1.0 (1 + e_other / 0.1) ** -0.7``;
* ``target`` = ``0.3 L_fast + 0.5 L_slow + 0.2 L_other``.

A static mixture must keep paying for ``fast`` after it has saturated; a schedule can front-load it. The
proxies observe every loss with Gaussian noise. ``true_losses`` is exact (no noise): the judge.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regmix_plugin.models.schedule_search import SearchArgs

DOMAINS = ("fast", "other", "slow")  # sorted, as mixture domains are
LOSS_DOMAINS = ("fast", "other", "slow", "target")
TARGET = {"fast": 0.3, "slow": 0.5, "other": 0.2}
STEPS = 240  # integration steps over the run


def true_losses(segments, at=(1.0,)):
    """Exact per-domain losses (rows: ``at`` fractions; columns: LOSS_DOMAINS) for ``(start, end, w)`` segments.

    ``w`` may be a (n, 3) batch of mixtures: then the result is (n, len(at), 4).
    """
    at = list(at)
    first = np.atleast_2d(segments[0][2])
    n = len(first)
    e = np.zeros((n, 3))
    out = np.zeros((n, len(at), 4))
    dt = 1.0 / STEPS
    j = 0
    for step in range(STEPS + 1):
        t = step * dt
        while j < len(at) and at[j] <= t + 1e-12:
            out[:, j] = _losses(e)
            j += 1
        if step == STEPS or j == len(at):
            break
        mid = t + dt / 2
        w = np.atleast_2d(next(seg[2] for seg in segments if seg[0] - 1e-12 <= mid <= seg[1] + 1e-12))
        mastery = 1 - (_losses(e)[:, 0] - 2.0) / 1.5
        e = e + dt * w * np.stack([np.ones(n), np.ones(n), 0.25 + 0.75 * mastery], 1)
    return out if n > 1 or np.ndim(segments[0][2]) > 1 else out[0]


def _losses(e):
    fast = 2.0 + 1.5 * np.exp(-e[:, 0] / 0.08)
    other = 2.2 + 1.0 * (1 + e[:, 1] / 0.1) ** -0.7
    slow = 2.5 + 2.0 * (1 + e[:, 2] / 0.05) ** -0.5
    target = TARGET["fast"] * fast + TARGET["slow"] * slow + TARGET["other"] * other
    return np.stack([fast, other, slow, target], 1)


def proxy_records(n_runs, stages, seed, eval_points=6, noise=0.01, tokens=1_000_000, concentrations=(0.3, 1.0, 3.0)):
    """Sweep records (``runs/<id>.json`` shape) of proxies: an independent Dirichlet draw per stage."""
    rng = np.random.default_rng(seed)
    times = [(i + 1) / eval_points for i in range(eval_points)]
    records = {}
    for r in range(n_runs):
        ws = [rng.dirichlet(np.full(3, rng.choice(concentrations))) for _ in range(stages)]
        segs = [(k / stages, (k + 1) / stages, w) for k, w in enumerate(ws)]
        L = true_losses(segs, times) + noise * rng.standard_normal((eval_points, 4))
        schedule = [{"weights": dict(zip(DOMAINS, map(float, w), strict=True))} for w in ws]
        for k in range(stages - 1):
            schedule[k]["until_fraction"] = (k + 1) / stages
        rid = f"p{seed}-{r:03d}"
        records[rid] = {
            "run_id": rid,
            "status": "done",
            "tokens": tokens,
            "mixture": schedule[0]["weights"] if stages == 1 else None,
            "schedule": schedule if stages > 1 else None,
            "losses": [
                {
                    "tokens": round(t * tokens),
                    "final": t == 1.0,
                    "losses": dict(zip(LOSS_DOMAINS, map(float, row), strict=True)),
                }
                for t, row in zip(times, L, strict=True)
            ],
        }
    return records


@dataclass(frozen=True)
class Protocol:
    """RegMix against RegMix-D, fixed before any result was seen (the defaults are the full 3-seed protocol).

    Per seed, ``n_runs`` static proxies for RegMix (``regmix fit`` auto, ``regmix optimize`` with
    ``n_candidates``/``top_k``) and ``n_runs`` ``stages``-stage proxies for RegMix-D (``fit_trajectory`` auto
    features, GP, run-wise ``cv_folds``-fold CV; ``regmix schedule`` with the same search, smoothing 0.2). Both
    start from the uniform prior. Online: ``RegMixDController.decide`` itself (its prior, bounds and objective),
    each stage from the run's observed (noisy) losses at the switch, with a ``losses``-features model and the
    protocol's search budget. ``objective`` and ``pessimism`` default to what ships (``regmix schedule`` and
    the controller: joint, 1). The judge is the noise-free ground truth.
    """

    n_runs: int = 48
    stages: int = 3
    noise: float = 0.01
    n_candidates: int = 100_000
    top_k: int = 128
    cv_folds: int = 5
    objective: str = SearchArgs.objective  # `regmix schedule --search.objective` and the controller's `objective`
    pessimism: float = SearchArgs.pessimism  # `--search.pessimism` and the controller's `pessimism`

    def static(self, out: Path, seed: int) -> np.ndarray:
        from regmix_plugin.commands.fit import fit
        from regmix_plugin.commands.optimize import optimize
        from regmix_plugin.formats.mixture_yaml import read_mixture
        from regmix_plugin.formats.results import write_results
        from regmix_plugin.formats.sweep_records import RunRecord, table_rows

        records = proxy_records(self.n_runs, 1, seed + 100, noise=self.noise)
        records = {k: RunRecord.from_dict(r) for k, r in records.items()}
        write_results(out / "static.csv", table_rows(list(records), records))
        fit(
            results=out / "static.csv",
            target="val_loss/target",
            out=out / "static_model",
            seed=seed,
            cv_folds=self.cv_folds,
        )
        optimize(
            out / "static_model",
            out=out / "static.yaml",
            prior={d: 1 / 3 for d in DOMAINS},
            n_candidates=self.n_candidates,
            top_k=self.top_k,
            seed=seed,
            num_threads=1,
        )
        w = read_mixture(out / "static.yaml")["weights"]
        return np.array([w[d] for d in DOMAINS])

    def _search(self, seed: int):
        from regmix_plugin.models.schedule_search import SearchArgs

        return SearchArgs(
            n_candidates=self.n_candidates,
            top_k=self.top_k,
            seed=seed,
            objective=self.objective,
            pessimism=self.pessimism,
        )

    def _trajectories(self, seed: int):
        from regmix_plugin.models.trajectory import trajectories_from_records

        trajs, wd, ld = trajectories_from_records(proxy_records(self.n_runs, self.stages, seed, noise=self.noise))
        assert wd == list(DOMAINS) and ld == list(LOSS_DOMAINS)
        return trajs, wd, ld

    def offline(self, out: Path, seed: int) -> tuple[dict, list[np.ndarray]]:
        from regmix_plugin.commands.fit_trajectory import fit_trajectories
        from regmix_plugin.commands.schedule import schedule

        cv = fit_trajectories(
            *self._trajectories(seed), "val_loss/target", "auto", "gp", out / "traj", self.cv_folds, seed
        )
        sched = schedule(
            out / "traj",
            out / "schedule.yaml",
            stages=self.stages,
            prior={d: 1 / 3 for d in DOMAINS},
            search=self._search(seed),
        )
        return cv, [np.array([st.weights[d] for d in DOMAINS]) for st in sched.stages]

    def online(self, out: Path, seed: int, first: np.ndarray) -> list[np.ndarray]:
        """What ``RegMixDController`` decides at each switch from the ground truth's observed (noisy) losses.

        Its own decision code (:meth:`RegMixDController.decide`, what a switch runs once the checkpoint is
        scored), on a ``losses``-features model (the state it observes), whatever ``auto`` chose for offline.
        """
        from regmix_plugin.commands.fit_trajectory import fit_trajectories
        from regmix_plugin.formats.trajectory_model import load_trajectory_model
        from regmix_plugin.pretrain.control_plan import ControlPlan
        from regmix_plugin.pretrain.controller import RegMixDController

        # fit_trajectory with the losses features (its CV also gives the fold models --search.pessimism uses)
        with contextlib.redirect_stdout(io.StringIO()):
            fit_trajectories(
                *self._trajectories(seed), "val_loss/target", "losses", "gp", out / "traj_online", self.cv_folds, seed
            )
        model = load_trajectory_model(out / "traj_online")
        S = self.stages
        ctl = RegMixDController(
            str(out / "traj_online"),
            str(out / "online"),
            n_candidates=self.n_candidates,
            top_k=self.top_k,
            seed=seed,
            objective=self.objective,
            pessimism=self.pessimism,
        )
        # the simulated run has every domain open and no finite corpus: no epoch limit binds
        ctl.plan = ControlPlan(
            bounds=tuple(j / S for j in range(S + 1)),
            stage_samples=(STEPS // S,) * S,
            per_epoch={d: STEPS for d in DOMAINS},
            max_epochs=math.inf,
            planned=(dict(zip(DOMAINS, map(float, first), strict=True)),) * S,
        )
        rng = np.random.default_rng(seed + 1000)
        mixes = [first]
        for k in range(1, S):
            segs = [(j / S, (j + 1) / S, m) for j, m in enumerate(mixes)]
            observed = true_losses(segs, [k / S])[0] + self.noise * rng.standard_normal(4)
            rec = ctl.decide(k, dict(zip(LOSS_DOMAINS, observed, strict=True)), model)
            ctl.decisions[k] = {"stage": k, **rec}
            mixes.append(np.array([rec["weights"][d] for d in DOMAINS]))
        return mixes

    def run(self, out: Path, seed: int) -> dict:
        """One seed: the true target loss of each arm, the mixtures, and the trajectory features auto chose."""
        out.mkdir(parents=True, exist_ok=True)
        static = self.static(out, seed)
        cv, offline = self.offline(out, seed)
        live = self.online(out, seed, offline[0])
        return {
            "seed": seed,
            "static": target_of([static]),
            "offline": target_of(offline),
            "online": target_of(live),
            "chosen": cv["chosen"],
            "mixtures": {"static": static, "offline": offline, "online": live},
        }


def target_of(mixes) -> float:
    """True final target loss of equal-length stages ``mixes``."""
    segs = [(j / len(mixes), (j + 1) / len(mixes), m) for j, m in enumerate(mixes)]
    return float(true_losses(segs)[0, 3])
