"""`regmix optimize` over 1,000,000 candidates with the paper's LightGBM (1000 trees, 17 domains): the naive
way vs ours, timed in one run, plus what each finds on the same candidates.

    .venv/bin/python bench/optimize_speed.py            # about a minute: the naive pass is the slow part

1. 512 synthetic proxy runs over 17 domains whose losses follow the known function of
   ``tests/conftest.py`` (``synthetic_true_losses``), fitted with ``regmix fit --regressor lightgbm``.
2. Naive: numpy Dirichlet draws (one ``Generator.dirichlet`` per strength, as the paper's sampler), then
   the LightGBM model's ``predict`` on every row with LightGBM's default threads (what
   ``LGBMRegressor.predict`` runs), then the top-k.
3. Ours: the ``regmix optimize`` command, timed whole as a subprocess (start-up, imports, model load,
   threaded sampling, staged screening, YAML and PNG; median of 3) and its search alone in-process.
4. Quality, on the very candidates ours drew: brute-force top-k (every candidate through every tree)
   against the screened top-k, by the mean prediction over the top-k and by the prediction at their
   average (the mixture ``optimize`` returns). Lower is better (a loss).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

N, K, RUNS, DOMAINS, SEED = 1_000_000, 100, 512, 17, 0


def main() -> None:
    from conftest import synthetic_result_rows

    from regmix_plugin.commands.fit import fit
    from regmix_plugin.commands.optimize import top_k_search
    from regmix_plugin.formats.model_dir import load_fitted as load_model
    from regmix_plugin.formats.results import write_results
    from regmix_plugin.weights import SamplerArgs, constraint_bounds, sample_candidates

    warnings.simplefilter("ignore")
    work = Path(tempfile.mkdtemp(prefix="optimize_speed."))
    write_results(work / "runs.csv", synthetic_result_rows(RUNS, DOMAINS, seed=SEED))
    fit(results=work / "runs.csv", target="val_loss/*", regressor="lightgbm", out=work / "model")
    model = load_model(work / "model")
    prior = np.array([model.meta["run_mean_mixture"][d] for d in model.domains])

    # --- ours: the whole command, then its search alone
    cmd = [
        sys.executable,
        "-m",
        "regmix_plugin",
        "optimize",
        "--model",
        str(work / "model"),
        "--out",
        str(work / "mixture.yaml"),
        "--n_candidates",
        str(N),
        "--top_k",
        str(K),
        "--seed",
        str(SEED),
    ]
    walls = []
    for _ in range(3):  # the machine is shared: report each of three runs and their median
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        walls.append(time.perf_counter() - t0)
    t_cli = float(np.median(walls))
    lower, upper = constraint_bounds(model.domains)
    t0 = time.perf_counter()
    cands = sample_candidates(prior, lower, upper, N, SamplerArgs(), SEED)
    t1 = time.perf_counter()
    ours, ours_scores, n_full = top_k_search(model, cands, K, maximize=False, scoring="screen")
    t_ours = time.perf_counter() - t0
    print(
        f"ours  : sample {t1 - t0:6.2f} s + screen  {time.perf_counter() - t1:6.2f} s = {t_ours:6.2f} s "
        f"({n_full:,} of {N:,} candidates through all {model.regressor.n_trees()} trees)"
    )
    print(
        f"ours  : `regmix optimize` command, start to end: {t_cli:6.2f} s median of "
        f"{', '.join(f'{w:.2f}' for w in walls)} s"
    )

    # --- naive: paper-style numpy Dirichlet + predict on every candidate
    t0 = time.perf_counter()
    rng = np.random.default_rng(SEED)
    strengths = np.logspace(-1, np.log10(5), 15)
    counts = np.bincount(rng.integers(0, 15, N), minlength=15)
    naive_cands = np.concatenate([rng.dirichlet(prior * s, size=c) for s, c in zip(strengths, counts, strict=True)])
    t1 = time.perf_counter()
    naive_pred = model.regressor.booster_.predict(naive_cands)
    naive_top = np.argsort(naive_pred)[:K]
    t_naive = time.perf_counter() - t0
    print(f"naive : sample {t1 - t0:6.2f} s + predict {time.perf_counter() - t1:6.2f} s = {t_naive:6.2f} s")

    print(f"speed-up: {t_naive / t_ours:5.1f}x (search), {t_naive / t_cli:5.1f}x (whole command vs naive search)")

    # --- quality on the same candidates
    t0 = time.perf_counter()
    brute, brute_scores, _ = top_k_search(model, cands, K, maximize=False, scoring="brute")
    t_brute = time.perf_counter() - t0
    at = {name: float(model.predict(cands[idx].mean(0)[None])[0]) for name, idx in (("brute", brute), ("ours", ours))}
    print(f"brute-force top-{K} over ours' {N:,} candidates: {t_brute:6.2f} s")
    print(f"top-{K} overlap with brute force: {len(set(ours.tolist()) & set(brute.tolist()))}/{K}")
    print(f"mean predicted target of the top-{K}: brute {brute_scores.mean():.6f}  ours {ours_scores.mean():.6f}")
    print(f"predicted target at the averaged mixture: brute {at['brute']:.6f}  ours {at['ours']:.6f}")
    ok = ours_scores.mean() <= brute_scores.mean() + 1e-12 and at["ours"] <= at["brute"] + 1e-12
    print(f"ours at least as good as brute force on both: {'yes' if ok else 'NO'}")
    print(
        f"(naive top-{K} on its own draws: mean {naive_pred[naive_top].mean():.6f}, "
        f"at average {float(model.predict(naive_cands[naive_top].mean(0)[None])[0]):.6f})"
    )


if __name__ == "__main__":
    main()
