"""The active sweep loop (``regmix sweep --active``): train, fit, propose the next batch, append it, repeat.

    regmix sweep --active --mixtures out/active/mixtures.csv --data_path data/pile --recipe proxy.yaml \\
        --out_dir out/active --loop.initial 32 --loop.batch 16 --loop.budget 128 --loop.target val_loss/pile_cc \\
        --loop.constraints.target_tokens 25e9

It is a sweep: the same directory layout, set-up guard, launchers (local workers, Slurm via submitit) and claims,
so ``regmix status`` reads it and any number of cooperating launchers can work on it. Its state is the
``--mixtures`` file and the run records, nothing else that matters:

1. if ``--mixtures`` does not exist, ``--loop.initial`` random mixtures are drawn into it by ``regmix sample``'s
   generator (:func:`regmix_plugin.draws.distinct_draws`, the same prior and bounds as the proposals); an
   existing file's rows are the start instead (e.g. proxies already planned);
2. every row of the file without a ``done`` record is trained (the ordinary sweep launch);
3. ``regmix fit`` (:func:`regmix_plugin.models.fitting.fit_model`) with ``--loop.target`` and ``--loop.regressor``
   into ``<out_dir>/active/round-KK/model``, on ``round-KK/results.csv`` (every row's run records at that point,
   so a cooperating launcher's older ``results.csv`` never hides a round); the round's line is printed: runs so
   far, CV Spearman, the predicted optimum (the candidate with the best posterior mean), its GP std, and its L1
   move since the last round;
4. stop at ``--loop.budget`` rows, or when the stopping rule holds; else ``regmix propose``'s engine
   (:func:`regmix_plugin.models.acquisition.propose_batch`) appends ``min(batch, budget - rows)`` rows named
   ``round<K+1>-NNNN`` to ``--mixtures`` (one atomic rename) *before* any of them trains, searched inside the
   round's trust region; back to 2.

Trust region (TuRBO, Eriksson et al. 2019; :class:`regmix_plugin.models.acquisition.TrustRegion`): its length
starts at ``--loop.trust_length`` (0.8) and after every round doubles after 3 improving rounds in a row or halves
after ``ceil(max(4/q, d/q))`` rounds without (q the round's runs, d the model's features); below 2^-7 it starts
over at the initial length. A round *improves* when its best observed target beats every earlier run's by more than
1e-3 x |best|. The length is replayed from the results and the round names each round (no hidden state: a lost
``active.json`` gives the same lengths) and printed on the round's line.

Killed at any point (even ``kill -9``) and re-run, the loop trains each run once (records and claims, as any
sweep) and proposes nothing twice: a round's rows, once in the file, are trained on restart, never re-proposed.
The proposing step holds a lock on ``<out_dir>/active.lock`` and re-reads the file, so two cooperating loops on
one directory add one round, not two. ``<out_dir>/active.json`` keeps each round's line (the move needs the
previous optimum); a round without one is refitted, which gives the same model (fixed seed).

Stopping rule: the optimum moved less than ``eps`` in L1 over each of the last two rounds *and* its posterior std
is below ``delta``. The defaults are fixed on principle, not tuned:

* ``eps`` = the median L1 distance from a candidate to its nearest other candidate. The optimum is searched over
  these candidates (the same seeded draws each round), so a move shorter than the gap between neighbours is the
  resolution of the search, not a change of the model's mind;
* ``delta`` = the round's CV RMSE, the error of one prediction on a held-out run. Once the model is surer of the
  optimum than of a typical unseen run, further runs there mostly sharpen a number already known to within the
  model's own accuracy.
"""

from __future__ import annotations

import fcntl
import json
import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from regmix_plugin.atomic import write_json
from regmix_plugin.formats.mixture_table import read_mixtures, write_mixtures
from regmix_plugin.formats.model_dir import STD_KINDS
from regmix_plugin.models.acquisition import DEFAULT_KAPPA, TRUST_INIT, TRUST_MAX, TrustRegion
from regmix_plugin.weights import ConstraintArgs, SamplerArgs

STATE = "active.json"
LOCK = "active.lock"
#: ``regmix sample``'s defaults: the floor and rounding of every initial draw and candidate.
DROP_BELOW, DECIMALS = 2e-4, 4
_ROUND = re.compile(r"round(\d+)-\d+$")


@dataclass
class ActiveArgs:
    """The active loop of ``regmix sweep --active``: its start, batch, budget, model and stopping rule."""

    initial: int = 16
    """Random mixtures drawn (by `regmix sample`'s generator) into --mixtures when it does not exist yet."""
    batch: int = 8
    """Mixtures proposed per round."""
    budget: int = 48
    """Most runs in all (initial ones included); the last round proposes only what is left."""
    target: dict[str, float] | str = "val_loss/*"
    """What is minimised: `regmix fit --target` (a column, a glob averaged, or {column: weight})."""
    regressor: Literal["gp", "ensemble"] = "gp"
    """`regmix fit --regressor`: gp (its posterior std) or ensemble (its members' spread): the uncertainty the
    acquisition and the stopping rule use."""
    kappa: float = DEFAULT_KAPPA
    """`regmix propose --kappa`: weight of the std in the lower confidence bound mean - kappa * std."""
    trust_length: float | None = TRUST_INIT
    """Initial side of the trust region the proposals are searched in (`regmix propose --trust_length`; TuRBO's
    0.8), adapted every round by TuRBO's rules; null: the whole space every round."""
    eps: float | None = None
    """Stop when the optimum moved less than this in L1 for two rounds (and its std is below delta); null: the
    median nearest-neighbour L1 gap between candidates (the search's resolution)."""
    delta: float | None = None
    """The optimum's GP std must be below this to stop early; null: the round's CV RMSE."""
    constraints: ConstraintArgs = field(default_factory=ConstraintArgs)
    """Every initial draw and proposal respects these (as in `regmix propose`); see --loop.constraints.*."""
    temperature: float = 0.5
    """Exponent of the token distribution that makes the draws' prior, as in `regmix sample`."""
    n_candidates: int = 10_000
    """Candidates drawn per round to propose from and to search the optimum in."""
    seed: int = 0
    """Seed of the initial draws, the candidates and the fit."""

    def problems(self) -> list[str]:
        from regmix_plugin.models.regressors import MIN_CV_RUNS

        out = []
        if self.initial < MIN_CV_RUNS:
            out.append(
                f"--loop.initial must be >= {MIN_CV_RUNS} (the first fit's cross-validation), got {self.initial}"
            )
        if self.batch < 1 or self.budget < self.initial:
            out.append(
                f"--loop.batch must be >= 1 and --loop.budget >= --loop.initial, got {self.batch}, {self.budget}"
            )
        if self.regressor not in STD_KINDS:
            out.append(f"--loop.regressor must be one of {list(STD_KINDS)} (a model with an uncertainty), got "
                       f"{self.regressor!r}")  # fmt: skip
        if any(v is not None and not v > 0 for v in (self.eps, self.delta)) or not self.kappa >= 0:
            out.append("--loop.eps and --loop.delta must be > 0 (or null for the defaults), --loop.kappa >= 0")
        if self.trust_length is not None and not 0 < self.trust_length <= TRUST_MAX:
            out.append(f"--loop.trust_length must be in (0, {TRUST_MAX:g}] or null, got {self.trust_length}")
        if self.n_candidates < self.batch:
            out.append(f"--loop.n_candidates must be >= --loop.batch, got {self.n_candidates}")
        return out

    def identity(self) -> dict:
        """What must not change under one loop: the target, the model, the acquisition and the candidates."""
        keep = ("target", "regressor", "kappa", "trust_length", "constraints", "temperature", "n_candidates", "seed")
        return json.loads(json.dumps({k: v for k, v in asdict(self).items() if k in keep}, default=str))


@dataclass
class Round:
    """One round's line: the fit on every finished run so far, and the optimum it predicts."""

    round: int
    runs: int
    cv_spearman: float
    cv_rmse: float
    optimum: dict[str, float]
    predicted: float
    std: float
    moved: float | None
    eps: float
    delta: float
    trust_length: float | None = None
    """The trust region's length for the next round's proposals (None: the whole space)."""
    trust_successes: int = 0
    trust_failures: int = 0
    best_observed: float | None = None
    """The best target measured on a finished run so far."""

    def line(self) -> str:
        moved = "-" if self.moved is None else f"{self.moved:.4f}"
        weights = ", ".join(f"{d} {w:.3f}" for d, w in self.optimum.items() if w > 0)
        region = "whole space" if self.trust_length is None else f"trust region L {self.trust_length:g}"
        return (
            f"active round {self.round}: {self.runs} runs; CV Spearman {self.cv_spearman:.3f}; optimum predicted "
            f"{self.predicted:.4f} +- {self.std:.4f} (GP std; delta {self.delta:.4f}) at {weights}; moved {moved} "
            f"L1 (eps {self.eps:.4f}); next proposals in the {region}"
        )


def active_loop(
    mixtures: Path, data_path: Path, out_dir: Path, loop: ActiveArgs, train: Callable[[], dict[str, int]]
) -> dict:
    """Run the loop (module docstring) until the budget or the stopping rule; ``train()`` trains the file's pending
    rows with the sweep's launcher and returns its counts. Returns ``done``/``failed``: runs trained by this
    invocation, ``skipped``: done before it, ``pending``, the last ``rounds`` number and why it ``stopped``."""
    from regmix_plugin.formats.manifest import read_manifest
    from regmix_plugin.formats.sweep_records import read_records
    from regmix_plugin.models.acquisition import candidate_space, draw_candidates

    mixtures, out_dir = Path(mixtures), Path(out_dir)
    domains = read_manifest(data_path).train_domains()
    space = candidate_space({"domains": domains}, loop.constraints, data_path, None, loop.temperature)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _locked(out_dir):
        _check_state(out_dir, loop)
        if not mixtures.exists():
            units = draw_candidates(*space, loop.initial, SamplerArgs(), DROP_BELOW, DECIMALS, loop.seed)
            if len(units) < loop.initial:
                raise ValueError(f"only {len(units)} of --loop.initial {loop.initial} draws passed the constraints")
            width = max(4, len(str(loop.initial)))
            rows = {
                f"mix-{i:0{width}d}": {d: int(x) / 10**DECIMALS for d, x in zip(domains, u, strict=True)}
                for i, u in enumerate(units, 1)
            }
            write_mixtures(mixtures, rows, domains)
            print(f"active: drew {len(rows)} initial mixtures into {mixtures}")
    total = {"done": 0, "failed": 0, "skipped": None}
    while True:
        counts = train()
        total["done"] += counts["done"]
        total["failed"] += counts["failed"]
        if total["skipped"] is None:  # runs finished before this invocation (or by a cooperating launcher then)
            total["skipped"] = counts["skipped"]
        total["pending"] = counts["pending"]
        if counts.get("pending"):
            print(f"active: {counts['pending']} run(s) left pending; re-run the same command to finish them")
            return {**total, "rounds": None, "stopped": "pending"}
        rows = read_mixtures(mixtures, "--mixtures", known=domains)
        if not set(rows.ids) <= set(read_records(out_dir)):  # a cooperating loop added a round after train()'s plan
            continue
        k = max((int(m.group(1)) for i in rows.ids if (m := _ROUND.match(i))), default=0)
        rnd, rounds = _round(k, rows.ids, domains, out_dir, data_path, loop, space)
        print(rnd.line(), flush=True)
        recent = [rounds.get(str(j), {}).get("moved") for j in (k, k - 1)]
        if len(rows.ids) >= loop.budget:
            stopped = "budget"
        elif all(m is not None and m < rnd.eps for m in recent) and rnd.std < rnd.delta:
            stopped = "converged"
        else:
            stopped = None
        if stopped:
            print(f"active: stopped ({stopped}) after round {k} with {len(rows.ids)} runs; model: {_model(out_dir, k)}")
            return {**total, "rounds": k, "stopped": stopped}
        _propose(k + 1, mixtures, out_dir, data_path, loop, domains, rnd.trust_length)


def _round(k, ids, domains, out_dir, data_path, loop, space) -> tuple[Round, dict]:
    """Round ``k``'s line and every round's so far: from ``active.json`` when recorded with the same runs, else
    by fitting. Under the lock, so cooperating loops fit each round once and read each other's lines.

    The fit reads the round's own results table, ``active/round-KK/results.csv``, rebuilt here from the run records
    of every row of ``--mixtures`` (``ids``): the sweep's ``results.csv`` is rewritten by every launcher from the rows
    it started with, so a cooperating launcher a round behind could leave the newest round out of it."""
    from regmix_plugin.formats.model_dir import load_fitted
    from regmix_plugin.formats.sweep_records import read_records, sweep_reuse, write_table
    from regmix_plugin.models.acquisition import draw_candidates, predicted_optimum
    from regmix_plugin.models.fitting import fit_model

    runs = len(ids)
    with _locked(out_dir):
        state = json.loads((out_dir / STATE).read_text())
        rounds = state["rounds"]
        if str(k) in rounds and rounds[str(k)]["runs"] == runs and _model(out_dir, k).is_dir():
            rnd = Round(**rounds[str(k)])  # a re-run may give other --loop.eps/--loop.delta: they decide now
            rnd.eps = loop.eps if loop.eps is not None else rnd.eps
            rnd.delta = loop.delta if loop.delta is not None else float(rnd.cv_rmse)
            return rnd, rounds
        table = _table(out_dir, k)
        table.parent.mkdir(parents=True, exist_ok=True)
        write_table(table, list(ids), read_records(out_dir), sweep_reuse(out_dir, domains))
        meta = fit_model(
            results=table,
            target=loop.target,
            regressor=loop.regressor,
            out=_model(out_dir, k),
            seed=loop.seed,
        )
        fitted = load_fitted(_model(out_dir, k))
        units = draw_candidates(
            *space, loop.n_candidates, SamplerArgs(), DROP_BELOW, DECIMALS, loop.seed, (), fitted.reuse
        )
        C = units / 10**DECIMALS
        lower, upper = space[1], space[2]
        done = read_mixtures(table, "--results", known=fitted.domains).weights
        inside = done[((done >= lower - 1e-9) & (done <= upper + 1e-9)).all(1)]
        w, mean, std = predicted_optimum(fitted, np.vstack([C, inside]))
        y, rounds_of_runs = observed(table, loop)
        region = trust_region(y, rounds_of_runs, loop, k, len(fitted.meta.get("features") or fitted.domains))
        previous = rounds.get(str(k - 1))
        moved = None
        if previous is not None:
            moved = float(sum(abs(w[i] - previous["optimum"].get(d, 0.0)) for i, d in enumerate(fitted.domains)))
        rnd = Round(
            round=k,
            runs=runs,
            cv_spearman=float(meta["cv_spearman"]),
            cv_rmse=float(meta["cv_rmse"]),
            optimum={d: round(float(v), 6) for d, v in zip(fitted.domains, w, strict=True)},
            predicted=mean,
            std=std,
            moved=moved,
            eps=loop.eps if loop.eps is not None else resolution(C),
            delta=loop.delta if loop.delta is not None else float(meta["cv_rmse"]),
            trust_length=None if region is None else region.length,
            trust_successes=0 if region is None else region.successes,
            trust_failures=0 if region is None else region.failures,
            best_observed=float(np.nanmin(y)) if np.isfinite(y).any() else None,
        )
        rounds[str(k)] = asdict(rnd)
        write_json(out_dir / STATE, state)
        _plot_rounds(out_dir, rounds, meta["target"])
        return rnd, rounds


def _plot_rounds(out_dir: Path, rounds: dict, target) -> None:
    """``active/rounds.png``: every round so far (:func:`regmix_plugin.plots.active_rounds`)."""
    from regmix_plugin.plots import active_rounds

    ordered = [rounds[k] for k in sorted(rounds, key=int)]
    terms = dict(target)
    name = next(iter(terms)) if len(terms) == 1 else " + ".join(f"{w:g} {c}" for c, w in terms.items())
    active_rounds(Path(out_dir) / "active" / "rounds.png", ordered, name)


def trust_region(y: np.ndarray, rounds: np.ndarray, loop: ActiveArgs, k: int, dims: int) -> TrustRegion | None:
    """The trust region after round ``k``, replayed from the runs' measured targets ``y`` and rounds (both from
    :func:`observed`): TuRBO's update once per round 1..k, each round's runs against every earlier round's best
    measured target. None with ``--loop.trust_length null``."""
    if loop.trust_length is None:
        return None
    region = TrustRegion(length=loop.trust_length)
    for j in range(1, k + 1):
        before, now = y[(rounds < j) & np.isfinite(y)], y[(rounds == j) & np.isfinite(y)]
        if not (rounds == j).any() or not len(before):
            continue
        improved = bool(len(now)) and TrustRegion.improved(float(before.min()), float(now.min()))
        region = region.after(improved, int((rounds == j).sum()), dims, restart=loop.trust_length)
    return region


def observed(results: Path, loop: ActiveArgs) -> tuple[np.ndarray, np.ndarray]:
    """Each finished run's measured ``--loop.target`` (NaN where missing) and its round (ids ``round<j>-NNNN``;
    0: the initial rows)."""
    import warnings

    from regmix_plugin.formats.results import read_results

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fit has already said which rows it skipped
        data = read_results(results)
    y = data.target_values(data.resolve_target(loop.target))
    return y, np.array([int(m.group(1)) if (m := _ROUND.match(i)) else 0 for i in data.ids])


def resolution(C: np.ndarray, sample: int = 500, seed: int = 0) -> float:
    """Median L1 distance from a candidate to its nearest other candidate (over a seeded sample of ``sample``)."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(C), size=min(sample, len(C)), replace=False)
    gaps = []
    for i in idx:
        d = np.abs(C - C[i]).sum(1)
        d[i] = np.inf
        gaps.append(d.min())
    return float(np.median(gaps))


def _propose(
    k: int, mixtures: Path, out_dir: Path, data_path: Path, loop: ActiveArgs, domains, trust_length: float | None
) -> None:
    """Append round ``k``'s proposals to ``mixtures``, unless a cooperating loop already did (under the lock)."""
    from regmix_plugin.models.acquisition import propose_batch

    with _locked(out_dir):
        rows = read_mixtures(mixtures, "--mixtures", known=domains)
        if any((m := _ROUND.match(i)) and int(m.group(1)) >= k for i in rows.ids):
            return
        propose_batch(
            model=_model(out_dir, k - 1),
            results=_table(out_dir, k - 1),
            out=mixtures,
            n=min(loop.batch, loop.budget - len(rows.ids)),
            kappa=loop.kappa,
            data_path=data_path,
            constraints=loop.constraints,
            temperature=loop.temperature,
            drop_below=DROP_BELOW,
            decimals=DECIMALS,
            n_candidates=loop.n_candidates,
            id_prefix=f"round{k:02d}-",
            seed=loop.seed + k,
            trust_length=trust_length,
        )


def _model(out_dir: Path, k: int) -> Path:
    return Path(out_dir) / "active" / f"round-{k:02d}" / "model"


def _table(out_dir: Path, k: int) -> Path:
    """The results table round ``k`` was fitted on (every run of ``--mixtures`` then, from the records)."""
    return Path(out_dir) / "active" / f"round-{k:02d}" / "results.csv"


def _check_state(out_dir: Path, loop: ActiveArgs) -> None:
    """Start ``active.json`` (the loop's identity and its rounds), or refuse a loop with other settings."""
    path = Path(out_dir) / STATE
    if not path.is_file():
        write_json(path, {"identity": loop.identity(), "rounds": {}})
        return
    state = json.loads(path.read_text())
    changed = [k for k, v in loop.identity().items() if state["identity"].get(k) != v]
    if changed:
        older = [k for k in changed if k not in state["identity"]]  # settings added since the loop was started
        hint = f" ({', '.join(f'--loop.{k}' for k in older)}: not recorded, the loop predates it; pass null)"
        raise ValueError(
            f"--out_dir {str(out_dir)!r} holds an active loop with other --loop settings (changed: "
            f"{', '.join('--loop.' + c for c in changed)}){hint if older else ''}; restore them to resume it, or use "
            "a new --out_dir"
        )


@contextmanager
def _locked(out_dir: Path):
    with open(Path(out_dir) / LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
