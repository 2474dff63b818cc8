"""`regmix fit_trajectory`: RegMix-D's transition model from a sweep's per-eval-point losses.

    regmix fit_trajectory --sweep out/sweep --target val_loss/pile_cc --out out/trajectory

The model, its features and its run-wise cross-validation live in :mod:`regmix_plugin.trajectory`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from regmix_plugin.trajectory import fit_trajectories, trajectories_from_records


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
    from regmix_plugin.formats.sweep_records import read_records

    trajs, wdomains, ldomains = trajectories_from_records(read_records(sweep, flag="--sweep"))
    return fit_trajectories(
        trajs, wdomains, ldomains, target, features, regressor, out, cv_folds, seed, source={"sweep": str(sweep)}
    )
