"""`regmix fit --regressor ensemble` against its members gp and lightgbm on one synthetic table: time and ranking.

    OMP_NUM_THREADS=1 .venv/bin/python bench/ensemble_fit.py

The table is ``tests/conftest.py``'s ``synthetic_result_rows(64, 5, seed=0)`` (the known power-law losses, noise
0.01, with a half-way eval point, so the ensemble's members are gp, lightgbm, mixing_law and bimix); the target
is the mean validation loss. Each regressor is fitted in this one process (imports warmed first) by `regmix fit`'s
own function with 5-fold CV; the time is the whole command (CV, refit, interactions, plots, write). It prints each
one's time, its mean fold Spearman, and its Spearman on 1,000 unseen noise-free runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

RUNS, DOMAINS = 64, 5


def main() -> None:
    from conftest import synthetic_result_rows
    from scipy.stats import spearmanr

    from regmix_plugin.commands.fit import fit
    from regmix_plugin.formats.model_dir import load_fitted
    from regmix_plugin.formats.results import read_results, write_results

    work = Path(tempfile.mkdtemp(prefix="ensemble_fit."))
    write_results(work / "runs.csv", synthetic_result_rows(RUNS, DOMAINS, seed=0))
    write_results(work / "unseen.csv", synthetic_result_rows(1000, DOMAINS, seed=1, noise=0.0))
    unseen = read_results(work / "unseen.csv")
    truth = unseen.target_values(unseen.resolve_target("val_loss/*"))
    with contextlib.redirect_stdout(io.StringIO()):  # warm the imports (sklearn, lightgbm, matplotlib)
        fit(results=work / "runs.csv", regressor="linear", out=work / "warm")
    print(f"`regmix fit` on {RUNS} runs x {DOMAINS} domains (synthetic, noise 0.01), 5-fold CV, target val_loss/*")
    for name in ("gp", "lightgbm", "ensemble"):
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            fit(results=work / "runs.csv", regressor=name, cv_folds=5, out=work / name)
        wall = time.perf_counter() - t0
        cv = json.loads((work / name / "cv.json").read_text())
        rho = spearmanr(load_fitted(work / name).predict(unseen.weights), truth)[0]
        print(
            f"  {name:9s} {wall:6.2f} s  CV Spearman {cv['candidates'][name]['mean_spearman']:.4f}  "
            f"unseen Spearman {rho:.4f}"
        )


if __name__ == "__main__":
    main()
