"""K-fold CV Spearman of the mixing law next to linear / lightgbm / gp on the official RegMix CSV pair.

    python bench/official_laws.py --mixtures train_mixture_1m.csv --losses train_pile_loss_1m.csv

The pair is ``data/train_mixture_1m.csv`` and ``data/train_pile_loss_1m.csv`` of sail-sg/regmix (not shipped
here). Each regressor is scored as ``regmix fit`` scores it (``fit.make_folds`` + ``fit.cross_validate``: every
fold's model sees only its training runs), averaged over ``--shuffles`` fold seeds. Nothing is tuned on these
numbers: every estimator runs with its defaults.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

TARGETS = ("pile_cc", "github", "arxiv", "hackernews", "wikipedia_en")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mixtures", required=True)
    parser.add_argument("--losses", required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--shuffles", type=int, default=3)
    args = parser.parse_args()
    from regmix_plugin.formats.official import read_regmix_csv
    from regmix_plugin.models.fitting import cross_validate, make_folds
    from regmix_plugin.models.laws import MixingLaw
    from regmix_plugin.models.regressors import REGRESSORS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = read_regmix_csv(args.mixtures, args.losses)
    kinds = {**REGRESSORS, "mixing_law": MixingLaw}
    print(
        f"{len(data.ids)} runs x {len(data.domains)} domains; {args.folds}-fold CV Spearman, mean over "
        f"{args.shuffles} shuffles"
    )
    print("| target | " + " | ".join(kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    took = dict.fromkeys(kinds, 0.0)
    for target in TARGETS:
        y = data.target_values(data.resolve_target(f"val_loss/{target}"))
        keep = np.isfinite(y)
        X, y = data.weights[keep], y[keep]
        cells = []
        for name, cls in kinds.items():
            rhos = []
            for seed in range(args.shuffles):
                t = time.perf_counter()
                folds = make_folds(len(y), args.folds, seed)
                rhos.append(cross_validate(cls(random_state=seed), X, y, folds)["mean_spearman"])
                took[name] += time.perf_counter() - t
            cells.append(f"{np.mean(rhos):.3f}")
        print(f"| {target} | " + " | ".join(cells) + " |")
    print("seconds per regressor (all targets and shuffles): " + ", ".join(f"{k} {v:.1f}" for k, v in took.items()))


if __name__ == "__main__":
    main()
