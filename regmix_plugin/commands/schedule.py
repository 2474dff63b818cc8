"""`regmix schedule`: offline RegMix-D, a whole mixture schedule from a trajectory model, before training.

    regmix schedule --model out/trajectory --stages 3 --data_path data/pile --constraints.target_tokens 25e9 \\
        --out schedule.yaml
    regmix recipe --mixture schedule.yaml --template recipes/tiny_cpu.yaml --out my_recipe.yaml

The run is cut into ``--stages`` equal stages. For stage k the trajectory model (``regmix fit_trajectory``)
starts from its *predicted* state at the stage's start, simulates ``n_candidates`` Dirichlet mixtures over
the stage (the generator of ``regmix optimize``), keeps the mean of the ``top_k`` with the lowest predicted
target at the stage's end, and mixes in ``smoothing`` of the previous stage's mixture. The chosen mixture's
predicted losses at the stage's end are the next stage's state: predictions chain, so errors accumulate
(the model's held-out *rollout* RMSE measures that). Min/max weights hold in every stage; the max-epochs
bound is counted over the whole run (a domain used heavily early has less left later).

It writes ``schedule.yaml`` (:mod:`regmix_plugin.formats.schedule`) and a stacked-area plot next to it,
and prints the predicted target of the schedule and of the best single mixture under the same model.

A model fitted on a reuse sweep (``regmix sample --reuse``, see ``regmix fit_trajectory``) is searched in its reduced
coordinates (the block's total and the free domains); every stage written is a full mixture that keeps the block's
ratios, and the epoch bound is counted on every underlying domain. ``provenance.reuse`` records the block and the
coordinates searched.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from regmix_plugin.counts import TokenCount
from regmix_plugin.formats.schedule import Schedule, ScheduleStage, write_schedule
from regmix_plugin.formats.trajectory_model import load_trajectory_model
from regmix_plugin.models.schedule_search import SearchArgs, derive_schedule
from regmix_plugin.weights import ConstraintArgs


def schedule(
    model: Path,
    out: Path = Path("schedule.yaml"),
    stages: int = 3,
    data_path: Path | None = None,
    prior: dict[str, float] | None = None,
    constraints: ConstraintArgs = ConstraintArgs(),
    domain_tokens: dict[str, TokenCount] | None = None,
    search: SearchArgs = SearchArgs(),
) -> Schedule:
    """Derive a stage-by-stage mixture schedule from a trajectory model and write schedule.yaml.

    Arguments:
        model: A trajectory model directory written by `regmix fit_trajectory`.
        out: The schedule YAML to write; ``<out stem>.png`` (stacked areas) goes next to it.
        stages: Number of equal stages (switch points at k / stages of the run).
        data_path: A prepared corpus: its token distribution is the default prior, its token counts the
            max-epochs bound.
        prior: Centre of the simulated mixtures; default: the corpus' token distribution, else uniform.
        constraints: What every stage must respect: min/max weights and excluded domains hold in every stage; the
            epoch bound at ``--constraints.target_tokens`` is counted over the whole run (every
            ``--constraints.*`` flag is listed below).
        domain_tokens: Train tokens per domain for the max-epochs bound, when there is no ``--data_path``.
        search: How each stage's mixture is searched: candidates, top-k, smoothing, seed, objective and
            pessimism (every ``--search.*`` flag is listed below).
    """
    from dataclasses import replace

    from regmix_plugin.weights import constraint_bounds, constraints_record, prior_weights, train_sizes

    search = SearchArgs(**search) if isinstance(search, dict) else search or SearchArgs()
    constraints = ConstraintArgs.of(constraints)
    problems = []
    if stages < 1:
        problems.append(f"--stages must be >= 1, got {stages}")
    if not 1 <= search.top_k <= search.n_candidates:
        problems.append(f"--search.top_k must be between 1 and --search.n_candidates, got {search.top_k}")
    if not 0 <= search.smoothing < 1:
        problems.append(f"--search.smoothing must be in [0, 1), got {search.smoothing}")
    if not (search.pessimism >= 0 and np.isfinite(search.pessimism)):
        problems.append(f"--search.pessimism must be a finite number >= 0, got {search.pessimism}")
    if problems:
        raise ValueError("; ".join(problems))
    traj = load_trajectory_model(model)
    if search.pessimism > 0 and len(traj.members) < 2:
        print(
            f"note: {model} has no cross-validation fold models (written before they were kept): "
            "--search.pessimism has no effect; re-run `regmix fit_trajectory` to use it"
        )
    domains = traj.weight_domains
    manifest = None
    if data_path is not None:
        from regmix_plugin.formats.manifest import read_manifest

        manifest = read_manifest(data_path, flag="--data_path")
    tokens = domain_tokens if domain_tokens is not None else (manifest.train_tokens() if manifest else None)
    tokens = train_sizes(domains, constraints.block_size, data_path, tokens)
    lower, upper = constraint_bounds(domains, constraints, tokens, epochs=False)
    allowance = None
    if constraints.target_tokens is not None:  # over the whole run: without the per-stage min/max
        _, allowance = constraint_bounds(domains, replace(constraints, min_weight=None, max_weight=None), tokens)
    if traj.reuse is not None:
        traj.reuse.check_bounds(lower, upper, f"--model {str(model)!r}")
        print(f"searching the reduced coordinates of {model}: {', '.join(traj.reuse.coordinates)}")
    found = prior_weights(domains, prior, manifest)
    center = found[0] if found else np.full(len(domains), 1 / len(domains))
    plan = derive_schedule(traj, stages, center, lower, upper, allowance, search)
    static = derive_schedule(traj, 1, center, lower, upper, allowance, SearchArgs(**{**vars(search), "smoothing": 0.0}))
    result = Schedule(
        stages=[
            ScheduleStage(dict(zip(domains, map(float, m), strict=True)), None if k == stages - 1 else plan["ends"][k])
            for k, m in enumerate(plan["mixtures"])
        ],
        prediction={
            "target": traj.target,
            "at_schedule": plan["predicted_target"][-1],
            "at_stage_ends": plan["predicted_target"],
            "top_k_std": plan["top_k_std"],
            "at_best_static": static["predicted_target"][-1],
            "best_static": dict(zip(domains, map(float, static["mixtures"][0]), strict=True)),
            "model_cv_rollout_rmse": traj.meta.get("cv_rollout_rmse"),
        },
        search={**vars(search), "strength": list(search.strength), "stages": stages},
        constraints={**constraints_record(domains, lower, upper, constraints), "epochs_counted_over": "whole run"},
        provenance={
            "model": str(model),
            "features": traj.features,
            "regressor": traj.regressor,
            "cv_rollout_rmse": traj.meta.get("cv_rollout_rmse"),
            "n_runs": traj.meta.get("n_runs"),
            "data_path": str(data_path) if data_path else None,
            **({"reuse": {**traj.reuse.to_dict(), "searched": traj.reuse.coordinates}} if traj.reuse else {}),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )
    write_schedule(Path(out), result)
    stacked_area(Path(out).with_suffix(".png"), result)
    print(
        f"predicted target {plan['predicted_target'][-1]:.4f} with the {stages}-stage schedule, "
        f"{static['predicted_target'][-1]:.4f} with the best single mixture; wrote {out}"
    )
    if plan["predicted_target"][-1] > static["predicted_target"][-1]:
        why = (
            "a greedy search spends a capped domain in the first stage that wants it: try --search.objective joint, "
            "or use `regmix optimize`"
            if search.objective == "greedy"
            else "the search found no better schedule: use `regmix optimize`, or raise --search.n_candidates"
        )
        print(
            f"warning: this model predicts the schedule worse than the best single mixture ({search.objective} "
            f"objective); {why}"
        )
    return result


def stacked_area(path: Path, sched: Schedule, title: str = "RegMix-D schedule") -> None:
    """The schedule as stacked areas over the fraction of training (one colour per domain)."""
    from regmix_plugin.plots import _pyplot, _save

    plt = _pyplot()
    domains = sorted({d for st in sched.stages for d in st.weights})
    ends = [st.until_fraction if st.until_fraction is not None else 1.0 for st in sched.stages]
    starts = [0.0] + ends[:-1]
    x = [v for s, e in zip(starts, ends, strict=True) for v in (s, e)]
    ys = [[st.weights.get(d, 0.0) for st in sched.stages for _ in (0, 1)] for d in domains]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.stackplot(x, ys, labels=domains)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="fraction of training", ylabel="weight", title=title)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    _save(fig, path)
