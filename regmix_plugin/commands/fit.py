"""`regmix fit` and `regmix predict`: from proxy results to a saved regressor, and from it to predictions.

    regmix fit --results sweep/results.csv --target val_loss/pile_cc --out out/model
    regmix fit --mixtures train_mixture_1m.csv --losses train_pile_loss_1m.csv --target 'val_loss/*' --out out/model
    regmix predict --model out/model --mixtures candidates.csv --out predictions.csv

    regmix fit --results sweep/results.csv --target val_loss/pile_cc --regressor bimix --horizon_tokens 1e9

A model directory holds ``model.json`` (format version, domains, target, chosen regressor and its settings,
provenance), the regressor's own file (``linear.json``, ``lightgbm.txt``, ``gp.npz``, ``bimix.json`` or
``mixing_law.json``; an ensemble's ``ensemble.json``, ``ensemble.npz`` and ``members/<name>/``; never a pickle),
``cv.json``, ``cv_predictions.csv``, ``interactions.csv`` and the plots. It is written to a temporary
directory and renamed into place, so it exists whole or not at all.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

from regmix_plugin.atomic import write_text
from regmix_plugin.formats.mixture_table import read_mixtures
from regmix_plugin.formats.model_dir import load_fitted
from regmix_plugin.formats.reuse import BLOCK
from regmix_plugin.models.fitting import fit_model


def fit(
    results: Path | None = None,
    mixtures: Path | None = None,
    losses: Path | None = None,
    target: dict[str, float] | str = "val_loss/*",
    regressor: Literal["auto", "linear", "lightgbm", "gp", "bimix", "mixing_law", "ensemble"] = "auto",
    out: Path = Path("out/regmix/model"),
    cv_folds: int = 5,
    seed: int = 0,
    horizon_tokens: float | None = None,
    min_tokens: float = 0.0,
    bimix_proportions: Literal["own", "all"] = "own",
    also: list[Path] | Path | None = None,
) -> None:
    """Fit a regressor from mixture weights to a target metric of the proxy runs, with K-fold CV.

    Arguments:
        results: The proxy results table written by `regmix sweep` (.csv or .parquet). Or give
            ``--mixtures`` and ``--losses``.
        mixtures: The official RegMix mixture CSV (``index,train_the_pile_arxiv,...``); needs ``--losses``.
        losses: The official RegMix loss CSV (``index,metric/the_pile_pile_cc_val_loss,...``), joined to
            ``--mixtures`` on the id in the first column.
        target: What to predict: a metric column (``val_loss/pile_cc``), a glob whose matching columns are
            averaged (``val_loss/*``, the default: the mean final validation loss), or a mapping
            ``{column or glob: weight}`` whose weighted sum is the target.
        regressor: ``linear`` (ridge, alpha by 5-fold CV), ``lightgbm`` (the paper's 1000 trees at learning
            rate 1e-2), ``gp`` (Gaussian process on sqrt(weights)), ``mixing_law`` (Ye et al.'s law, one per
            target column, summed with the target's weights), ``bimix`` (BiMix's law per target column on the
            runs' trajectories: needs ``val_loss/<d>@<tokens>`` columns and ``tokens``), ``ensemble`` (the mean
            of gp, lightgbm, mixing_law and, given trajectories, bimix, each z-scored on the training runs; its
            std is their spread, which ``regmix propose`` uses), or ``auto``: the one with the best mean K-fold
            Spearman on these runs, among those whose inputs the table has.
        out: The model directory to write (replaced if it holds an earlier model).
        cv_folds: Number of cross-validation folds (K); folds split runs, never a run's eval points. With fewer
            than 2K runs, leave-one-out CV is used instead (and a note printed); at least 4 runs are needed.
        seed: Seed of the fold split and the regressors.
        horizon_tokens: ``bimix``: the training length the saved model predicts at (``predict``,
            ``optimize``); default: the proxies' own length. CV always scores each run at its own end.
        min_tokens: ``bimix``: eval points before this many tokens are not fitted (the early transient, where
            the loss is not yet a power law of the tokens).
        bimix_proportions: ``own``: BiMix's law as published, a ``val_loss/<domain>`` column of a training
            domain driven by that domain's proportion alone (other columns, e.g. a validation-only target, by
            every proportion); ``all``: every column driven by every proportion,
            ``prod_j r_j**-alpha_j * (B / s**beta + C)`` (a one-domain target then has an interior optimum).
        also: Earlier sweep directories whose valid runs are added to ``--results`` (a sweep's ``results.csv``):
            same tokenizer and proxy recipe, and trained only on domains whose content is unchanged since, with
            the target's validation domains unchanged. Prints how many runs it used and why it refused each other
            one. Earlier runs do not keep a reuse block's ratios, so with them the fit uses the full coordinates.
    """
    fit_model(
        results=results,
        mixtures=mixtures,
        losses=losses,
        target=target,
        regressor=regressor,
        out=out,
        cv_folds=cv_folds,
        seed=seed,
        horizon_tokens=horizon_tokens,
        min_tokens=min_tokens,
        bimix_proportions=bimix_proportions,
        also=also,
    )


def predict(model: Path, mixtures: Path, out: Path = Path("predictions.csv")) -> None:
    """Predict the model's target for each mixture of a table, keeping the rows and their order.

    A model fitted in reduced coordinates (``regmix sample --reuse``) sees only a row's block total and free domains:
    for a row that breaks the block's ratios it predicts the *projected* mixture (same block total, the block's
    ratios imposed), and a warning names those rows.

    Arguments:
        model: A model directory written by `regmix fit`.
        mixtures: Mixtures to score: a results-layout table (``run_id``, ``weight/<domain>``) or an
            official RegMix mixture CSV (``index,train_the_pile_arxiv,...``).
        out: CSV to write: the id column of ``--mixtures``, then ``prediction``.
    """
    fitted = load_fitted(model)
    rows = read_mixtures(mixtures, "--mixtures", known=fitted.domains)
    if fitted.reuse is not None:
        from regmix_plugin.formats.table import listed

        broken = [i for i, bad in zip(rows.ids, fitted.reuse.broken(rows.weights), strict=True) if bad]
        if broken:
            warnings.warn(
                f"--mixtures {mixtures}: run(s) {listed(broken)} break the reuse block's fixed ratios of --model "
                f"{model} ({fitted.reuse.describe()}); the model was fitted in reduced coordinates ({BLOCK} = "
                f"{' + '.join(fitted.reuse.block)}), so their predictions are for the projected mixtures (the same "
                "block total at the block's ratios), not for the rows as written",
                stacklevel=2,
            )
    values = fitted.predict(rows.weights)
    lines = [f"{rows.id_column},prediction"] + [f"{i},{v!r}" for i, v in zip(rows.ids, values.tolist(), strict=True)]
    write_text(out, "\n".join(lines) + "\n")
    print(f"wrote {len(values)} predictions to {out}")
