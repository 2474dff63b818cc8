"""`regmix fit --regressor auto` on 512 runs over 17 domains: wall time with 5-fold CV, and how well it ranks.

    .venv/bin/python bench/fit_speed.py

The runs follow the known loss function of ``tests/conftest.py`` (``synthetic_true_losses``, Gaussian
noise of std 0.01 per domain); the target is the mean validation loss. It prints the wall time of the
whole command (a subprocess: start-up, CV of linear / gp / lightgbm, refit, interactions, plots), each
candidate's mean fold Spearman, and the Spearman of the chosen model on 1,000 unseen, noise-free runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

RUNS, DOMAINS = 512, 17


def main() -> None:
    from conftest import synthetic_result_rows
    from scipy.stats import spearmanr

    from regmix_plugin.formats.model_dir import load_fitted as load_model
    from regmix_plugin.formats.results import read_results, write_results

    work = Path(tempfile.mkdtemp(prefix="fit_speed."))
    write_results(work / "runs.csv", synthetic_result_rows(RUNS, DOMAINS, seed=0))
    write_results(work / "unseen.csv", synthetic_result_rows(1000, DOMAINS, seed=1, noise=0.0))
    cmd = [
        sys.executable,
        "-m",
        "regmix_plugin",
        "fit",
        "--results",
        str(work / "runs.csv"),
        "--target",
        "val_loss/*",
        "--regressor",
        "auto",
        "--out",
        str(work / "model"),
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    cv = json.loads((work / "model" / "cv.json").read_text())
    print(f"`regmix fit --regressor auto` on {RUNS} runs x {DOMAINS} domains, {cv['folds']}-fold CV: {wall:.2f} s")
    for name, c in cv["candidates"].items():
        folds = ", ".join(f"{f['spearman']:.3f}" for f in c["folds"])
        print(f"  {name:9s} mean fold Spearman {c['mean_spearman']:.4f}  (folds: {folds})")
    print(f"  chosen: {cv['chosen']}")
    model = load_model(work / "model")
    unseen = read_results(work / "unseen.csv")
    truth = unseen.target_values(unseen.resolve_target("val_loss/*"))
    print(f"Spearman on 1000 unseen noise-free runs: {spearmanr(model.predict(unseen.weights), truth)[0]:.4f}")


if __name__ == "__main__":
    main()
