"""The parametric mixing laws (regmix_plugin.models.laws): fits recover known laws, the solver finds the optimum."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from regmix_plugin.models.laws import BiMixLaw, MixingLaw, extrapolation_error, trajectories
from regmix_plugin.models.simplex import minimize_on_simplex

# A known BiMix law on 3 domains (A = 1): alpha, B (s in tokens), beta, C per domain.
TRUE = np.array([[0.10, 40.0, 0.30, 2.0], [0.20, 60.0, 0.35, 1.5], [0.05, 30.0, 0.25, 2.5]])


def true_bimix(W: np.ndarray, s: np.ndarray) -> np.ndarray:
    alpha, B, beta, C = TRUE.T
    return np.maximum(W, 1e-3) ** -alpha * (B * np.asarray(s, float)[:, None] ** -beta + C)


def _sweep(n_runs: int, seed: int, noise: float = 0.002):
    """Runs x 6 eval points (1M ... 6M tokens) of the known law with multiplicative noise."""
    rng = np.random.default_rng(seed)
    W = rng.dirichlet(np.ones(3), size=n_runs)
    steps = np.arange(1, 7) * 1_000_000
    runs = np.repeat(np.arange(n_runs), len(steps))
    X = np.column_stack([W[runs], np.tile(steps, n_runs)])
    y = true_bimix(X[:, :-1], X[:, -1]) * np.exp(noise * rng.standard_normal((len(X), 3)))
    return runs, X, y


def test_bimix_recovers_a_known_law_and_extrapolates():
    runs, X, y = _sweep(24, seed=0)
    law = BiMixLaw().fit(X, y)
    coef = law.coefficients(["a", "b", "c"], ["a", "b", "c"])
    got = np.array([[coef[d][k] for k in ("alpha", "B", "beta", "C")] for d in "abc"])
    print("fitted", got.round(3).tolist())
    np.testing.assert_allclose(got[:, 0], TRUE[:, 0], atol=0.01)  # alpha
    np.testing.assert_allclose(got[:, 2], TRUE[:, 2], atol=0.05)  # beta
    np.testing.assert_allclose(got[:, 3], TRUE[:, 3], rtol=0.1)  # C
    report = extrapolation_error(runs, X, y)
    print("extrapolation", json.dumps(report))
    # fit on 1M-3M tokens, predict 6M: the noise alone is 0.2%; a flat forecast is off by ~3%.
    assert report["mean_relative_error"] < 0.005, report
    assert report["naive_mean_relative_error"] > 5 * report["mean_relative_error"], report


def test_bimix_clips_zero_weights_at_the_floor():
    runs, X, y = _sweep(24, seed=1)
    law = BiMixLaw(r_floor=1e-3).fit(X, y)
    zero, floor = np.array([[0.0, 0.5, 0.5, 1e6]]), np.array([[1e-3, 0.5, 0.5, 1e6]])
    assert law.predict(zero).shape == (1, 3)
    assert np.isfinite(law.predict(zero)).all()
    np.testing.assert_array_equal(law.predict(zero), law.predict(floor))


def test_trajectories_read_every_eval_point_and_the_end():
    W = np.array([[0.2, 0.8], [0.6, 0.4]])
    metrics = {
        "val_loss/a@1000": np.array([5.0, 5.1]),
        "val_loss/b@1000": np.array([6.0, np.nan]),
        "val_loss/a": np.array([4.0, 4.2]),
        "val_loss/b": np.array([4.5, 4.4]),
        "val_loss/a@bad": np.array([1.0, 1.0]),
    }
    runs, rows, s, L = trajectories(W, metrics, ["val_loss/a", "val_loss/b"], final_tokens=np.array([2000.0, 3000.0]))
    assert runs.tolist() == [0, 0, 1, 1]
    assert s.tolist() == [1000, 2000, 1000, 3000]
    np.testing.assert_array_equal(rows[2], W[1])
    np.testing.assert_array_equal(L[2], [5.1, np.nan])
    np.testing.assert_array_equal(L[3], [4.2, 4.4])


def test_saved_laws_predict_exactly_what_was_fitted(tmp_path):
    runs, X, y = _sweep(12, seed=2)
    bimix = BiMixLaw().fit(X, y)
    bimix.save(tmp_path)
    np.testing.assert_array_equal(BiMixLaw.load(tmp_path).predict(X), bimix.predict(X))
    law = MixingLaw().fit(X[:, :-1], y[:, 0])
    law.save(tmp_path)
    np.testing.assert_array_equal(MixingLaw.load(tmp_path).predict(X[:, :-1]), law.predict(X[:, :-1]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bimix.json", "mixing_law.json"]


def test_mixing_law_recovers_its_parameters_despite_outliers():
    rng = np.random.default_rng(0)
    W = rng.dirichlet(np.ones(4), size=60)
    t = np.array([-1.5, -0.5, 0.3, -2.0])
    y = 2.0 + 1.2 * np.exp(W @ t) + 0.002 * rng.standard_normal(60)
    y[:3] += 0.5  # three diverged runs: the Huber loss must shrug them off
    law = MixingLaw().fit(W, y)
    print("mixing law", law.coefficients(list("abcd")))
    # t is identified only up to a constant shift (sum r = 1 moves it into k): compare centred t
    np.testing.assert_allclose(law.t_[0] - law.t_[0].mean(), t - t.mean(), atol=0.1)
    clean = 2.0 + 1.2 * np.exp(W[3:] @ t)
    assert np.abs(law.predict(W[3:]) - clean).max() < 0.01


def _known_law(**params) -> BiMixLaw:
    """TRUE as a fitted BiMixLaw (column i driven by domain i's proportion)."""
    law = BiMixLaw(**params)
    law.s_scale_, law.horizon_, law.n_features_in_, law.one_column_ = 1.0, params.get("horizon_tokens"), 3, False
    law.alpha_, law.own_domain_ = np.diag(TRUE[:, 0]), [0, 1, 2]
    law.logb_, law.beta_, law.logc_ = np.log(TRUE[:, 1]), TRUE[:, 2], np.log(TRUE[:, 3])
    return law


def _simplex_grid(step: float, lower, upper) -> np.ndarray:
    n = round(1 / step)
    i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    keep = i + j <= n
    G = np.column_stack([i[keep], j[keep], n - i[keep] - j[keep]]) / n
    return G[((np.asarray(lower) - 1e-12 <= G) & (np.asarray(upper) + 1e-12 >= G)).all(1)]


@pytest.mark.parametrize(
    "lower, upper",
    [((0, 0, 0), (1, 1, 1)), ((0.05, 0.0, 0.1), (1.0, 0.3, 1.0)), ((0, 0, 0), (0.5, 0.0, 1.0))],
    ids=["free", "upper-bound-active", "excluded"],
)
def test_constrained_solver_matches_a_brute_force_grid(lower, upper):
    law = _known_law(column_weights=(0.5, 0.3, 0.2), horizon_tokens=1e6)

    def objective(W):
        return law.predict(W)

    w, value = minimize_on_simplex(objective, np.array(lower, float), np.array(upper, float))
    grid = _simplex_grid(1e-3, lower, upper)
    scores = objective(grid)
    best = grid[np.argmin(scores)]
    print("solver", w.round(5).tolist(), value, "grid", best.tolist(), scores.min())
    assert abs(w.sum() - 1) < 1e-9 and (w >= np.array(lower) - 1e-9).all() and (w <= np.array(upper) + 1e-9).all()
    assert np.abs(w - best).max() <= 1e-3
    assert value <= scores.min() + 1e-9


def test_kl_to_prior_pulls_the_solution_towards_the_prior():
    law = MixingLaw()
    law.c_, law.log_k_, law.t_, law.one_column_ = np.array([2.0]), np.array([0.0]), np.array([[-3.0, 0.0, 0.0]]), True
    prior = np.array([0.2, 0.4, 0.4])
    lo, hi = np.zeros(3), np.ones(3)
    free, _ = minimize_on_simplex(law.predict, lo, hi, prior=prior)
    kept, _ = minimize_on_simplex(law.predict, lo, hi, prior=prior, kl_to_prior=0.5)
    assert free[0] > 0.999  # the law alone puts everything on the helpful domain
    assert 0.2 < kept[0] < 0.9
    with pytest.raises(ValueError, match="--kl_to_prior must be >= 0"):
        minimize_on_simplex(law.predict, lo, hi, prior=prior, kl_to_prior=-1)


def test_mixing_laws_per_domain_rank_unseen_mixtures_of_a_mean_loss(true_losses):
    # conftest's power-law losses: not of the law's form, and their mean has an interior optimum
    rng = np.random.default_rng(0)
    W = rng.dirichlet(np.ones(5), size=96)
    L = true_losses(W, 5) + 0.005 * rng.standard_normal((96, 5))
    law = MixingLaw(column_weights=(0.2,) * 5).fit(W[:64], L[:64])
    rho = spearmanr(law.predict(W[64:]), L[64:].mean(1)).statistic
    one = MixingLaw().fit(W[:64], L[:64].mean(1))
    rho_one = spearmanr(one.predict(W[64:]), L[64:].mean(1)).statistic
    print(f"mixing law held-out Spearman: one law per domain {rho:.3f}, one law on the mean {rho_one:.3f}")
    assert rho > 0.9


def test_a_validation_only_column_gets_a_law_in_every_proportion_whose_optimum_is_the_true_one():
    # a val-only target made of the three domains in known proportions (the synthetic corpus' set-up): its loss
    # is the composition-weighted sum of their known laws, not itself of BiMix's form
    composition = np.array([0.5, 0.3, 0.2])
    runs, X, y = _sweep(24, seed=3)
    target = y @ composition
    law = BiMixLaw(horizon_tokens=6e6).fit(X, target)  # one column, no training domain: every proportion drives it
    assert law.own_domain_ == [-1]
    w, _ = minimize_on_simplex(law.predict, np.zeros(3), np.ones(3))
    grid = _simplex_grid(1e-3, (0, 0, 0), (1, 1, 1))
    truth = grid[np.argmin(true_bimix(grid, np.full(len(grid), 6e6)) @ composition)]
    print("val-only law optimum", w.round(3).tolist(), "true optimum", truth.tolist())
    assert np.abs(w - truth).sum() < 0.1


def _law_rows(n_runs: int, seed: int, eval_tokens=(1_000_000, 2_000_000, 3_000_000, 4_000_000, 5_000_000)):
    """A results table whose per-domain losses follow TRUE: ``val_loss/<d>@<tokens>`` eval points, end at 6M."""
    rng = np.random.default_rng(seed)
    W = rng.dirichlet(np.ones(3), size=n_runs).round(4)
    W[:, 2] = 1 - W[:, :2].sum(1)
    rows = []
    for i, w in enumerate(W):
        row = {"run_id": f"r{i:02d}", "status": "done", "tokens": 6_000_000}
        row.update({f"weight/{d}": float(v) for d, v in zip("abc", w, strict=True)})
        for s in (*eval_tokens, None):
            loss = true_bimix(w[None], np.array([s or 6_000_000]))[0] * np.exp(0.002 * rng.standard_normal(3))
            row.update({f"val_loss/{d}" + (f"@{s}" if s else ""): float(v) for d, v in zip("abc", loss, strict=True)})
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def law_models(tmp_path_factory):
    from regmix_plugin.__main__ import main
    from regmix_plugin.formats.results import write_results

    d = tmp_path_factory.mktemp("law_models")
    write_results(d / "runs.csv", _law_rows(30, seed=0))
    target = "{val_loss/a: 0.5, val_loss/b: 0.3, val_loss/c: 0.2}"
    # auto: every family is cross-validated; on a table that follows BiMix's law, BiMix must win
    main(
        [
            "fit",
            "--results",
            str(d / "runs.csv"),
            "--target",
            target,
            "--regressor",
            "auto",
            "--out",
            str(d / "bimix"),
            "--horizon_tokens",
            "1000000",
        ]
    )
    return d


def test_fit_bimix_reports_its_law_and_extrapolation_and_auto_considers_it(law_models):
    meta = json.loads((law_models / "bimix" / "model.json").read_text())
    assert meta["regressor"] == "bimix" and (law_models / "bimix" / "bimix.json").is_file()
    coef = meta["law"]["coefficients"]
    got = np.array([[coef[f"val_loss/{d}"][k] for k in ("alpha", "B", "beta", "C")] for d in "abc"])
    np.testing.assert_allclose(got[:, 0], TRUE[:, 0], atol=0.02)
    np.testing.assert_allclose(got[:, 3], TRUE[:, 3], rtol=0.15)
    extra = meta["law"]["extrapolation"]
    print("fit --regressor bimix extrapolation", json.dumps(extra))
    assert extra["predicted_tokens"] == 6e6 and extra["fitted_up_to_tokens"] == 3e6
    assert extra["mean_relative_error"] < 0.01 < extra["naive_mean_relative_error"]
    cv = json.loads((law_models / "bimix" / "cv.json").read_text())
    print("auto:", {k: round(v["mean_spearman"], 3) for k, v in cv["candidates"].items()}, "chose", cv["chosen"])
    assert set(cv["candidates"]) == {"linear", "gp", "lightgbm", "mixing_law", "bimix", "ensemble"}


def test_auto_leaves_bimix_out_without_trajectories(tmp_path):
    from regmix_plugin.__main__ import main
    from regmix_plugin.formats.results import write_results

    rows = [{k: v for k, v in r.items() if "@" not in k} for r in _law_rows(20, seed=1)]
    write_results(tmp_path / "runs.csv", rows)
    main(
        [
            "fit",
            "--results",
            str(tmp_path / "runs.csv"),
            "--target",
            "val_loss/a",
            "--out",
            str(tmp_path / "m"),
            "--cv_folds",
            "2",
        ]
    )
    assert "bimix" not in json.loads((tmp_path / "m" / "cv.json").read_text())["candidates"]
    with pytest.raises(ValueError, match="--regressor bimix needs trajectories"):
        main(
            [
                "fit",
                "--results",
                str(tmp_path / "runs.csv"),
                "--target",
                "val_loss/a",
                "--regressor",
                "bimix",
                "--out",
                str(tmp_path / "b"),
                "--debug",
            ]
        )


def test_optimize_solves_a_law_directly_and_records_the_candidate_search(law_models, tmp_path):
    import yaml

    from regmix_plugin.__main__ import main

    out = tmp_path / "m.yaml"
    main(
        [
            "optimize",
            "--model",
            str(law_models / "bimix"),
            "--out",
            str(out),
            "--n_candidates",
            "20000",
            "--constraints.max_weight",
            "{b: 0.3}",
        ]
    )
    record = yaml.safe_load(out.read_text())
    w = np.array([record["weights"][d] for d in "abc"])
    # the law's own optimum at the horizon, under the bound, by brute force on a 1e-3 grid
    from regmix_plugin.formats.model_dir import load_fitted

    fitted = load_fitted(law_models / "bimix")
    grid = _simplex_grid(1e-3, (0, 0, 0), (1, 0.3, 1))
    best = grid[np.argmin(fitted.predict(grid))]
    print("optimize on bimix", w.round(4).tolist(), "grid", best.tolist(), record["solver"])
    assert np.abs(w - best).max() <= 1e-3 and w[1] <= 0.3 + 1e-9
    alt = record["solver"]["candidate_search_would_pick"]
    assert alt["prediction"] >= record["prediction"]["at_mixture"] - 1e-9  # the search cannot beat the solver
    kept = tmp_path / "kl.yaml"
    main(
        [
            "optimize",
            "--model",
            str(law_models / "bimix"),
            "--out",
            str(kept),
            "--n_candidates",
            "20000",
            "--prior",
            "{a: 0.1, b: 0.1, c: 0.8}",
            "--kl_to_prior",
            "1.0",
        ]
    )
    near = yaml.safe_load(kept.read_text())["weights"]
    assert abs(near["c"] - 0.8) < abs(w[2] - 0.8)  # pulled towards the prior
