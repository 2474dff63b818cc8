"""`regmix fit` / `regmix predict` on generated tables whose true loss function is known."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from scipy.stats import spearmanr

from regmix_plugin.__main__ import main as regmix_main
from regmix_plugin.formats.model_dir import load_fitted as load_model
from regmix_plugin.formats.results import read_results, write_results
from regmix_plugin.models.fitting import cross_validate, make_folds
from regmix_plugin.models.regressors import REGRESSORS, LightGBMRegressor


def main(argv: list[str]) -> None:
    """The CLI with ``--debug``: a user error propagates, so a test can match its message (exit 2 is tested in
    test_cli.py)."""
    regmix_main([*argv, "--debug"])


N_DOMAINS = 5


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_rows):
    """64 noisy training runs, 200 noise-free held-out runs, and `regmix fit --regressor auto` on the former."""
    d = tmp_path_factory.mktemp("fit")
    write_results(d / "train.csv", synthetic_rows(64, N_DOMAINS, seed=0))
    write_results(d / "test.csv", synthetic_rows(200, N_DOMAINS, seed=1, noise=0.0))
    main(["fit", "--results", str(d / "train.csv"), "--target", "val_loss/*", "--out", str(d / "model")])
    return d


def _xy(rows, target="val_loss/arxiv"):
    X = np.array([[r[f"weight/{k}"] for k in sorted(k[7:] for k in rows[0] if k.startswith("weight/"))] for r in rows])
    return X, np.array([r[target] for r in rows])


def test_auto_picks_the_best_cv_spearman_and_ranks_unseen_runs(trained, capsys):
    cv = json.loads((trained / "model" / "cv.json").read_text())
    means = {name: c["mean_spearman"] for name, c in cv["candidates"].items()}
    print("auto candidates", means)
    assert set(means) == {"linear", "lightgbm", "gp", "mixing_law", "bimix", "ensemble"}  # the table has trajectories
    assert cv["chosen"] == max(means, key=means.get)
    assert means[cv["chosen"]] > 0.9  # measured mixing_law 0.975, gp 0.969; linear 0.106
    for c in cv["candidates"].values():
        assert [f["fold"] for f in c["folds"]] == [0, 1, 2, 3, 4]
        assert sum(f["n_test"] for f in c["folds"]) == 64
        assert c["mean_spearman"] == pytest.approx(np.mean([f["spearman"] for f in c["folds"]]))
    # Held-out runs, scored only after fitting: predictions rank their true (noise-free) mean loss.
    main(
        [
            "predict",
            "--model",
            str(trained / "model"),
            "--mixtures",
            str(trained / "test.csv"),
            "--out",
            str(trained / "pred.csv"),
        ]
    )
    with open(trained / "pred.csv") as f:
        pred = list(csv.reader(f))
    test = read_results(trained / "test.csv")
    assert pred[0] == ["run_id", "prediction"]
    assert [p[0] for p in pred[1:]] == test.ids  # same rows, same order
    truth = test.target_values(test.resolve_target("val_loss/*"))
    assert spearmanr([float(p[1]) for p in pred[1:]], truth)[0] > 0.95  # measured 0.984


def test_model_directory_holds_no_pickle_and_its_plots(trained):
    model = trained / "model"
    meta = json.loads((model / "model.json").read_text())
    own = (
        f"{meta['regressor']}.json"
        if meta["regressor"] in ("linear", "bimix", "mixing_law")
        else {"lightgbm": "lightgbm.txt", "gp": "gp.npz"}[meta["regressor"]]
    )
    assert sorted(p.name for p in model.iterdir()) == sorted(
        [
            "model.json",
            "cv.json",
            "cv_predictions.csv",
            "interactions.csv",
            "cv_predicted_vs_true.png",
            "interactions.png",
            own,
        ]
    )
    for png in model.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not any(p.read_bytes()[:1] == b"\x80" for p in model.iterdir())  # pickle protocol 2+ opcode
    assert meta["target"] == {
        f"val_loss/{d}": 0.2 for d in ["arxiv", "dm_mathematics", "enron_emails", "europarl", "freelaw"]
    }
    assert (meta["n_runs"], meta["format_version"]) == (64, 1)
    assert meta["domains"] == ["arxiv", "dm_mathematics", "enron_emails", "europarl", "freelaw"]


def test_interaction_coefficients_show_each_domain_helping_its_own_loss(trained):
    with open(trained / "model" / "interactions.csv") as f:
        rows = list(csv.reader(f))
    domains = rows[0][1:]
    coef = {r[0]: np.array([float(x) for x in r[1:]]) for r in rows[1:]}
    assert list(coef) == ["target"] + domains
    for j, d in enumerate(domains):
        # the known loss of domain j falls fastest with its own weight
        assert int(np.argmin(coef[d])) == j


@pytest.mark.parametrize("kind", sorted(REGRESSORS))
def test_cross_validation_never_lets_a_run_see_its_own_target(kind, synthetic_rows):
    X, y = _xy(synthetic_rows(40, 4, seed=3))
    folds = make_folds(len(y), 5, seed=0)
    held_out = folds[0][1]
    clean = cross_validate(REGRESSORS[kind](), X, y, folds)["oof"]
    poisoned_y = y.copy()
    poisoned_y[held_out] += 100.0  # a wild target on fold 0's held-out runs
    poisoned = cross_validate(REGRESSORS[kind](), X, poisoned_y, folds)["oof"]
    # Their own out-of-fold predictions cannot move (hyperparameter searches run inside each fold) ...
    assert np.array_equal(clean[held_out], poisoned[held_out])
    # ... while every other fold trained on them and does move: the check has teeth.
    rest = np.setdiff1d(np.arange(len(y)), held_out)
    assert not np.allclose(clean[rest], poisoned[rest])


def test_lightgbm_never_early_stops_and_splits_even_32_runs(synthetic_rows):
    X, y = _xy(synthetic_rows(32, 3, seed=0))
    ours = LightGBMRegressor().fit(X, y)
    assert ours.n_trees() == 1000 and ours.min_child_samples_ == 2
    assert all(t["num_leaves"] > 1 for t in ours.booster_.dump_model()["tree_info"][:100])
    assert spearmanr(ours.predict(X), y)[0] > 0.9
    # LightGBM's default of 20 rows per leaf cannot split 32 rows: every prediction is the same.
    stock = LightGBMRegressor(min_child_samples=20).fit(X, y)
    assert np.ptp(stock.predict(X)) == 0.0
    rho = cross_validate(LightGBMRegressor(), X, y, make_folds(32, 4, 0))["mean_spearman"]
    assert rho > 0.8  # measured 0.91


@pytest.mark.parametrize("kind", sorted(REGRESSORS))
def test_a_saved_model_predicts_exactly_what_was_fitted(kind, tmp_path, synthetic_rows):
    X, y = _xy(synthetic_rows(30, 4, seed=5))
    model = REGRESSORS[kind]().fit(X, y)
    model.save(tmp_path)
    loaded = REGRESSORS[kind].load(tmp_path, model.settings())
    Xn, _ = _xy(synthetic_rows(50, 4, seed=6))
    assert np.array_equal(model.predict(Xn), loaded.predict(Xn))


def test_diverged_runs_are_dropped_with_their_ids(tmp_path, synthetic_rows):
    rows = synthetic_rows(20, 3, seed=0)
    rows[3]["val_loss/arxiv"], rows[7]["val_loss/dm_mathematics"] = float("nan"), float("inf")
    write_results(tmp_path / "r.parquet", rows)
    with pytest.warns(
        UserWarning,
        match=r"dropped 2 run\(s\) whose target is NaN or inf \(diverged\?\): "
        r"s0-r0003, s0-r0007",
    ):
        main(["fit", "--results", str(tmp_path / "r.parquet"), "--regressor", "linear", "--out", str(tmp_path / "m")])
    assert json.loads((tmp_path / "m" / "cv.json").read_text())["n_runs"] == 18
    # a target that does not use the diverged column keeps every run
    main(
        [
            "fit",
            "--results",
            str(tmp_path / "r.parquet"),
            "--target",
            "val_loss/enron_emails",
            "--regressor",
            "linear",
            "--out",
            str(tmp_path / "m"),
        ]
    )
    assert json.loads((tmp_path / "m" / "cv.json").read_text())["n_runs"] == 20


def test_too_few_runs_for_the_folds_fall_back_to_leave_one_out_with_a_note(tmp_path, synthetic_rows, capsys):
    rows = synthetic_rows(10, 3, seed=0)
    rows[0]["val_loss/arxiv"] = float("nan")
    write_results(tmp_path / "r.csv", rows)
    with pytest.warns(UserWarning, match="dropped 1 run"):
        main(["fit", "--results", str(tmp_path / "r.csv"), "--regressor", "linear", "--out", str(tmp_path / "m")])
    out = capsys.readouterr().out
    assert (
        "note: 9 runs are too few for 5-fold CV (it needs 10, 2 per fold); using leave-one-out CV instead (9 "
        "folds of one run; Spearman over the pooled predictions)"
    ) in out
    cv = json.loads((tmp_path / "m" / "cv.json").read_text())
    assert (cv["folds"], cv["leave_one_out"], cv["n_runs"]) == (9, True, 9)
    linear = cv["candidates"]["linear"]
    assert [f["n_test"] for f in linear["folds"]] == [1] * 9
    # leave-one-out: the Spearman of the pooled out-of-fold predictions, as written to cv_predictions.csv
    with open(tmp_path / "m" / "cv_predictions.csv") as f:
        pooled = [(float(r["prediction"]), float(r["true"])) for r in csv.DictReader(f)]
    assert len(pooled) == 9 and linear["mean_spearman"] == linear["oof_spearman"]
    assert linear["mean_spearman"] == pytest.approx(spearmanr(*zip(*pooled, strict=True))[0])
    assert f"leave-one-out CV Spearman {linear['mean_spearman']:.4f}" in out
    # 10 runs keep 5-fold CV
    main(
        [
            "fit",
            "--results",
            str(tmp_path / "r.csv"),
            "--target",
            "val_loss/enron_emails",
            "--regressor",
            "linear",
            "--out",
            str(tmp_path / "m2"),
        ]
    )
    assert json.loads((tmp_path / "m2" / "cv.json").read_text())["folds"] == 5
    assert "leave-one-out" not in capsys.readouterr().out
    # below 4 runs nothing can be fitted: one clear error, nothing written
    write_results(tmp_path / "r3.csv", rows[1:4])
    with pytest.raises(ValueError) as e:
        main(["fit", "--results", str(tmp_path / "r3.csv"), "--out", str(tmp_path / "m3")])
    assert str(e.value) == (
        f"fitting needs at least 4 runs with a finite target (leave-one-out CV below 10), --results "
        f"{tmp_path / 'r3.csv'} has 3: add proxy runs"
    )
    assert not (tmp_path / "m3").exists()


def test_unknown_target_lists_the_available_columns(tmp_path, results_table):
    path = results_table(12, 2)
    with pytest.raises(ValueError) as e:
        main(["fit", "--results", str(path), "--target", "val_loss/pile_cc", "--out", str(tmp_path / "m")])
    assert str(e.value).startswith("--target: no metric column matches 'val_loss/pile_cc' in --results")
    assert str(e.value).endswith(
        "Available: val_loss/arxiv, val_loss/arxiv@1000000, val_loss/dm_mathematics, val_loss/dm_mathematics@1000000"
    )
    assert not (tmp_path / "m").exists()


def test_model_from_another_format_version_is_refused(trained, tmp_path):
    old = tmp_path / "old_model"
    shutil.copytree(trained / "model", old)
    meta = json.loads((old / "model.json").read_text())
    (old / "model.json").write_text(json.dumps({**meta, "format_version": 99, "regmix_plugin_version": "9.9"}))
    with pytest.raises(ValueError) as e:
        main(
            ["predict", "--model", str(old), "--mixtures", str(trained / "test.csv"), "--out", str(tmp_path / "p.csv")]
        )
    assert f"--model {str(old)!r} was written by regmix-plugin 9.9 in model format 99" in str(e.value)
    assert "this version reads format 1. Re-run `regmix fit --out" in str(e.value)
    with pytest.raises(FileNotFoundError, match="has no model.json; write it with `regmix fit --out"):
        load_model(tmp_path)
    assert not (tmp_path / "p.csv").exists()


def test_out_that_is_not_a_model_directory_is_left_alone(tmp_path, results_table):
    path = results_table(12, 2)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="--out .* exists and is not a model directory; choose a new or empty path"):
        main(["fit", "--results", str(path), "--regressor", "linear", "--out", str(tmp_path / "notes")])
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_official_pair_fit_then_predict_keeps_the_mixture_files_ids_and_order(tmp_path, synthetic_rows):
    rows = synthetic_rows(24, 3, seed=2)
    domains = ["arxiv", "dm_mathematics", "enron_emails"]
    mix = ["index," + ",".join(f"train_the_pile_{d}" for d in domains)]
    mix += [f"{100 + i}," + ",".join(repr(r[f"weight/{d}"]) for d in domains) for i, r in enumerate(rows)]
    loss = ["index," + ",".join(f"metric/the_pile_{d}_val_loss" for d in reversed(domains))]
    loss += [
        f"{100 + i}," + ",".join(repr(r[f"val_loss/{d}"]) for d in reversed(domains))
        for i, r in reversed(list(enumerate(rows)))
    ]
    (tmp_path / "mix.csv").write_text("\n".join(mix) + "\n")
    (tmp_path / "loss.csv").write_text("\n".join(loss) + "\n")
    main(
        [
            "fit",
            "--mixtures",
            str(tmp_path / "mix.csv"),
            "--losses",
            str(tmp_path / "loss.csv"),
            "--target",
            "val_loss/arxiv",
            "--regressor",
            "linear",
            "--out",
            str(tmp_path / "m"),
        ]
    )
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["target"] == {"metric/the_pile_arxiv_val_loss": 1.0} and meta["domains"] == domains
    main(
        [
            "predict",
            "--model",
            str(tmp_path / "m"),
            "--mixtures",
            str(tmp_path / "mix.csv"),
            "--out",
            str(tmp_path / "p.csv"),
        ]
    )
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "index,prediction"
    assert [line.split(",")[0] for line in lines[1:]] == [str(100 + i) for i in range(24)]
    X, y = _xy(rows)
    expected = load_model(tmp_path / "m").predict(X)
    assert [float(line.split(",")[1]) for line in lines[1:]] == pytest.approx(expected.tolist(), rel=1e-12)
    assert spearmanr(expected, y)[0] > 0.8  # the loss of arxiv is close to linear in the weights


def test_config_file_and_print_config(tmp_path, results_table, capsys):
    path = results_table(12, 2)
    with pytest.raises(SystemExit) as e:
        main(["fit", "--print_config"])
    assert e.value.code == 0
    printed = capsys.readouterr().out
    assert "regressor: auto" in printed and "cv_folds: 5" in printed and "target: val_loss/*" in printed
    config = tmp_path / "fit.yaml"
    config.write_text(
        f"results: {path}\nregressor: linear\nout: {tmp_path / 'm'}\n"
        "target:\n  val_loss/arxiv: 0.25\n  val_loss/dm_mathematics: 0.75\n"
    )
    main(["fit", "--config", str(config)])
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["target"] == {"val_loss/arxiv": 0.25, "val_loss/dm_mathematics": 0.75}
    assert meta["regressor"] == "linear"
