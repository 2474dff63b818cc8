"""`regmix fit --regressor ensemble`: saved without pickle, the z-mean of its members, their spread as its std;
`auto` weighs it like any other candidate. `regmix propose` with an ensemble inside every constraint: in
tests/test_propose.py, next to the GP."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import PILE17, synthetic_result_rows

from regmix_plugin.formats.model_dir import load_fitted
from regmix_plugin.formats.results import read_results, write_results
from regmix_plugin.models.ensemble import EnsembleRegressor
from regmix_plugin.models.laws import BiMixLaw, MixingLaw, trajectories
from regmix_plugin.models.regressors import GPRegressor, LightGBMRegressor

D = 4
DOMAINS = list(PILE17[:D])
TARGET = {f"val_loss/{d}": 1 / D for d in DOMAINS}  # what --target 'val_loss/*' resolves to


def _members(path):
    """Each member fitted alone, by this test, on what the ensemble is documented to feed it."""
    data = read_results(path)
    X, y = data.weights, data.target_values(TARGET)
    cols, weights = list(TARGET), tuple(TARGET.values())
    Y = np.column_stack([data.metrics[c] for c in cols])
    _, W, s, L = trajectories(data.weights, data.metrics, cols, data.tokens)
    members = {
        "gp": (GPRegressor(random_state=0), (X, y)),
        "lightgbm": (LightGBMRegressor(random_state=0), (X, y)),
        "mixing_law": (MixingLaw(random_state=0, column_weights=weights), (X, Y)),
        "bimix": (BiMixLaw(own_domain=tuple(range(D)), column_weights=weights, random_state=0), (np.c_[W, s], L)),
    }
    return X, y, members


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """`regmix fit --regressor ensemble` on 24 runs with trajectories, and the same ensemble fitted in memory."""
    from regmix_plugin.__main__ import main

    d = tmp_path_factory.mktemp("ensemble")
    write_results(d / "train.csv", synthetic_result_rows(24, D, seed=0))
    main(["fit", "--results", str(d / "train.csv"), "--regressor", "ensemble", "--out", str(d / "model"), "--debug"])
    X, y, members = _members(d / "train.csv")
    in_memory = EnsembleRegressor(tuple((n, m) for n, (m, _) in members.items())).fit(
        X, y, {n: data for n, (_, data) in members.items() if n in ("mixing_law", "bimix")}
    )
    return d, in_memory


def test_a_saved_ensemble_holds_no_pickle_and_predicts_exactly_what_was_fitted(fitted):
    d, in_memory = fitted
    model = d / "model"
    files = sorted(str(p.relative_to(model)) for p in model.rglob("*") if p.is_file())
    assert files == sorted(
        ["model.json", "cv.json", "cv_predictions.csv", "interactions.csv", "cv_predicted_vs_true.png"]
        + ["interactions.png", "ensemble.json", "ensemble.npz", "members/gp/gp.npz", "members/lightgbm/lightgbm.txt"]
        + ["members/mixing_law/mixing_law.json", "members/bimix/bimix.json"]
    )
    assert not any((model / f).read_bytes()[:1] == b"\x80" for f in files)  # pickle protocol 2+ opcode
    for npz in model.rglob("*.npz"):
        with np.load(npz, allow_pickle=False) as z:  # an object array would raise here
            assert all(z[k].dtype != object for k in z.files)
    meta = json.loads((model / "model.json").read_text())
    assert meta["regressor"] == "ensemble"
    assert meta["settings"]["members"] == ["gp", "lightgbm", "mixing_law", "bimix"]
    assert meta["settings"]["left_out"] == {}
    loaded = load_fitted(model)
    W = np.random.default_rng(0).dirichlet(np.ones(D), 200)
    mean, std = loaded.regressor.predict(W, return_std=True)
    mean0, std0 = in_memory.predict(W, return_std=True)
    np.testing.assert_array_equal(mean, mean0)
    np.testing.assert_array_equal(std, std0)
    np.testing.assert_array_equal(loaded.predict(W), mean0)


def test_its_prediction_is_the_z_mean_of_its_members_and_its_std_their_spread(fitted):
    d, _ = fitted
    X, y, members = _members(d / "train.csv")
    W = np.random.default_rng(1).dirichlet(np.ones(D), 300)
    z = []
    for est, data in members.values():
        m = est.fit(*data)
        on_train = m.predict(X)
        z.append((m.predict(W) - on_train.mean()) / on_train.std())
    z = np.array(z)
    mean, std = load_fitted(d / "model").regressor.predict(W, return_std=True)
    np.testing.assert_allclose(mean, y.mean() + y.std() * z.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, y.std() * z.std(0), rtol=1e-9, atol=1e-15)
    assert std.min() > 0  # the members disagree somewhere everywhere: a spread, not a constant


def test_believing_a_pick_narrows_the_spread_there_and_leaves_the_model_alone(fitted):
    model = load_fitted(fitted[0] / "model").regressor
    C = np.random.default_rng(2).dirichlet(np.ones(D), 50)
    mean, std = model.predict(C, return_std=True)
    after = model.condition_on(C[:1], mean[:1])
    _, std2 = after.predict(C, return_std=True)
    assert std2[0] < std[0]
    # the GP member (first), conditioned on the believed mean, moves towards it (part way: its noise term)
    gp_before, gp_after = (m.committee().predictions(lambda r: r.predict(C[:1]))[0, 0] for m in (model, after))
    assert abs(gp_after - mean[0]) < 0.8 * abs(gp_before - mean[0])
    np.testing.assert_array_equal(model.predict(C, return_std=True)[1], std)  # the original is not modified


def test_optimize_reads_it_and_records_its_spread_at_the_chosen_mixture(fitted):
    from regmix_plugin.__main__ import main
    from regmix_plugin.formats.mixture_yaml import read_mixture

    d, _ = fitted
    out = d / "mix.yaml"
    main(["optimize", "--model", str(d / "model"), "--out", str(out), "--n_candidates", "5000", "--top_k", "20"])
    record = read_mixture(out)
    chosen = np.array([[record["weights"][k] for k in DOMAINS]])
    mean, std = load_fitted(d / "model").regressor.predict(chosen, return_std=True)
    assert record["provenance"]["regressor"] == "ensemble"
    assert record["prediction"]["at_mixture"] == pytest.approx(mean[0], abs=1e-6)  # the YAML rounds the weights
    assert record["prediction"]["ensemble_spread_at_mixture"] == pytest.approx(std[0], rel=1e-3)
    assert std[0] > 0


def test_auto_scores_it_on_the_same_folds_and_chooses_it_when_its_cv_is_best(tmp_path):
    """No trajectories here: bimix is left out of the ensemble, and it says so. On this table (32 runs, noise 0.1)
    the ensemble's fold Spearman is the best (measured 0.854 against mixing_law 0.839, gp 0.799)."""
    from regmix_plugin.__main__ import main

    rows = [{k: v for k, v in r.items() if "@" not in k} for r in synthetic_result_rows(32, D, seed=3, noise=0.1)]
    write_results(tmp_path / "r.csv", rows)
    main(["fit", "--results", str(tmp_path / "r.csv"), "--out", str(tmp_path / "m"), "--debug"])
    cv = json.loads((tmp_path / "m" / "cv.json").read_text())
    means = {n: c["mean_spearman"] for n, c in cv["candidates"].items()}
    assert set(means) == {"linear", "gp", "lightgbm", "mixing_law", "ensemble"}
    folds = {n: [(f["n_train"], f["n_test"]) for f in c["folds"]] for n, c in cv["candidates"].items()}
    assert all(f == folds["linear"] for f in folds.values())
    assert cv["chosen"] == max(means, key=means.get) == "ensemble"
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["cv_spearman"] == means["ensemble"]
    assert meta["settings"]["members"] == ["gp", "lightgbm", "mixing_law"]
    assert "bimix" in meta["settings"]["left_out"]
    # auto reuses its members' fold fits: the ensemble's held-out predictions are those of fitting it alone
    main(["fit", "--results", str(tmp_path / "r.csv"), "--regressor", "ensemble", "--out", str(tmp_path / "e")])
    alone = json.loads((tmp_path / "e" / "cv.json").read_text())["candidates"]["ensemble"]
    assert alone == cv["candidates"]["ensemble"]
    assert (tmp_path / "e" / "cv_predictions.csv").read_text() == (tmp_path / "m" / "cv_predictions.csv").read_text()


def test_propose_refuses_a_model_without_uncertainty_naming_both_that_have_one(cli, tmp_path):
    write_results(tmp_path / "r.csv", synthetic_result_rows(12, D, seed=0))
    code, _, err = cli("fit", "--results", tmp_path / "r.csv", "--regressor", "linear", "--out", tmp_path / "m")
    assert code == 0, err
    code, _, err = cli("propose", "--model", tmp_path / "m", "--results", tmp_path / "r.csv", "--out", tmp_path / "o")
    assert code == 2 and "--regressor gp" in err and "--regressor ensemble" in err
