"""`regmix fit_trajectory`: RegMix-D's transition model from a sweep's per-eval-point losses.

    regmix fit_trajectory --sweep out/sweep --target val_loss/pile_cc --out out/trajectory

The model, its features and its run-wise cross-validation live in :mod:`regmix_plugin.models.trajectory`, its
directory format in :mod:`regmix_plugin.formats.trajectory_model`; this module selects, fits and writes it.

A sweep of ``regmix sample --reuse`` mixtures (static or ``--stages``) is fitted in the reduced coordinates (the
block's total and the free domains); ``trajectory.json`` then records ``reuse`` (the block and its ratios) and
``mixture_features`` (the coordinates), and ``regmix schedule`` searches the same reduced space.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np

from regmix_plugin.formats.reuse import BLOCK, ReuseStructure
from regmix_plugin.formats.trajectory_model import save_model
from regmix_plugin.models.trajectory import (
    FEATURE_SETS,
    REGRESSOR_ORDER,
    cross_validate,
    fit_model,
    resolve_target,
    trajectories_from_records,
)


def fit_trajectory(
    sweep: Path,
    target: dict[str, float] | str = "val_loss/*",
    features: Literal["auto", "losses", "mixtures"] = "auto",
    regressor: Literal["auto", "linear", "lightgbm", "gp"] = "linear",
    out: Path = Path("out/regmix/trajectory"),
    cv_folds: int = 5,
    seed: int = 0,
) -> dict:
    """Fit RegMix-D's transition model on a sweep's per-eval-point losses, with run-wise K-fold CV.

    Arguments:
        sweep: A `regmix sweep` output directory (its ``runs/*.json`` records hold the losses at every eval point).
        target: What the schedule minimises: a ``val_loss/<domain>`` column, a glob (mean of the matches) or
            ``{column or glob: weight}``, as in `regmix fit`.
        features: ``losses`` (state = per-domain losses at the interval's start, needed by the online
            controller), ``mixtures`` (state = mean mixture trained on so far), or ``auto``: the lower held-out
            rollout RMSE. Both are cross-validated and reported either way.
        regressor: ``linear``, ``lightgbm``, ``gp`` (as in `regmix fit`) or ``auto`` (lowest rollout RMSE).
        out: The model directory to write (replaced if it holds an earlier trajectory model).
        cv_folds: K of the K-fold cross-validation; folds are split by run. With fewer than 2K runs,
            leave-one-out CV is used instead (and a note printed), as in `regmix fit`; at least 4 runs are needed.
        seed: Seed of the fold assignment and the regressors.
    """
    from regmix_plugin.formats.sweep_records import read_records, sweep_reuse

    trajs, wdomains, ldomains = trajectories_from_records(read_records(sweep, flag="--sweep"))
    reuse = sweep_reuse(sweep, wdomains)
    return fit_trajectories(
        trajs,
        wdomains,
        ldomains,
        target,
        features,
        regressor,
        out,
        cv_folds,
        seed,
        source={"sweep": str(sweep)},
        reuse=reuse,
    )


def fit_trajectories(
    trajs,
    wdomains,
    ldomains,
    target,
    features="auto",
    regressor="linear",
    out=None,
    cv_folds=5,
    seed=0,
    source=None,
    reuse: ReuseStructure | None = None,
) -> dict:
    """:func:`fit_trajectory` on trajectories already in memory; returns the CV report.

    Folds as in `regmix fit` (:func:`regmix_plugin.models.regressors.cv_fold_count`): leave-one-out, with a note,
    when there are fewer than 2 runs per fold. With ``reuse`` the regressors see the reduced coordinates; a run
    with a stage that breaks the block's ratios is refused, named.
    """
    from regmix_plugin.formats.mixture_table import check_reuse
    from regmix_plugin.models.regressors import cv_fold_count

    where = f"the sweep {str(source['sweep'])!r}" if source and "sweep" in source else "the sweep"
    if reuse is not None:
        segments = [(tr.run_id, w) for tr in trajs for _, _, w in tr.segments]
        check_reuse(reuse, [r for r, _ in segments], np.array([w for _, w in segments]), where)
        print(
            f"fitting in the reduced coordinates of {where}: {', '.join(reuse.coordinates)} ({BLOCK} = "
            + " + ".join(reuse.block)
            + ")"
        )
    cv_folds = cv_fold_count(len(trajs), cv_folds, where)
    tmap = resolve_target(target, ldomains)
    fsets = FEATURE_SETS if features == "auto" else (features,)
    regs = REGRESSOR_ORDER if regressor == "auto" else (regressor,)
    fold_models: dict[str, list] = {f"{f}/{r}": [] for f in fsets for r in regs}
    scores = {
        k: cross_validate(trajs, wdomains, ldomains, tmap, *k.split("/"), cv_folds, seed, fold_models[k], reuse)
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
        **({"reuse": reuse.to_dict(), "mixture_features": reuse.coordinates} if reuse is not None else {}),
    }
    model = fit_model(trajs, wdomains, ldomains, tmap, fset, reg, seed, meta, reuse)
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
