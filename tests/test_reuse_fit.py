"""`fit`, `optimize` and `propose` on results that carry a reuse structure: the reduced coordinates, end to end."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import yaml
from conftest import PILE17, synthetic_true_losses

from regmix_plugin.commands.fit import fit
from regmix_plugin.commands.optimize import optimize
from regmix_plugin.formats.mixture_table import read_mixtures
from regmix_plugin.formats.model_dir import load_fitted
from regmix_plugin.formats.results import read_results, write_results
from regmix_plugin.formats.reuse import BLOCK, ReuseStructure
from regmix_plugin.models.acquisition import propose_batch

DOMAINS = PILE17[:5]  # arxiv, dm_mathematics, enron_emails, europarl, freelaw
RATIOS = {"arxiv": 0.5, "enron_emails": 0.3, "freelaw": 0.2}  # the reused block; dm_mathematics, europarl are free


@pytest.fixture(scope="module")
def reuse_results(tmp_path_factory):
    """A results table of 40 reuse proxies: rows drawn over (block total, free domains), synthetic losses."""
    s = ReuseStructure(DOMAINS, RATIOS, "v1/mixture.yaml", decimals=4)
    rng = np.random.default_rng(0)
    rows = []
    for i, reduced in enumerate(rng.dirichlet([2.0, 1.0, 1.0], size=40)):
        w = s.round_units(reduced, 4) / 10**4
        loss = synthetic_true_losses(w, len(DOMAINS))[0] + 0.005 * rng.standard_normal(len(DOMAINS))
        row = {
            "run_id": f"r{i:03d}",
            "status": "done",
            **{f"weight/{d}": float(x) for d, x in zip(DOMAINS, w, strict=True)},
        }
        rows.append(row | {f"val_loss/{d}": float(x) for d, x in zip(DOMAINS, loss, strict=True)})
    path = tmp_path_factory.mktemp("reuse_fit") / "results.csv"
    write_results(path, rows, s)
    return path, s


def test_fit_uses_the_reduced_coordinates_and_the_saved_model_says_so(reuse_results, tmp_path, capsys):
    results, s = reuse_results
    assert read_results(results).reuse == s  # the note survives the results table
    fit(results=results, regressor="linear", out=tmp_path / "model", cv_folds=4)
    assert "fitting in the reduced coordinates" in capsys.readouterr().out
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["domains"] == list(DOMAINS)
    assert meta["features"] == [BLOCK, "dm_mathematics", "europarl"]
    assert meta["reuse"]["block"] == pytest.approx(RATIOS) and meta["reuse"]["source"] == "v1/mixture.yaml"
    fitted = load_fitted(tmp_path / "model")
    assert fitted.regressor.coef_.shape == (3,)  # one coefficient per reduced coordinate, not per domain
    W = read_results(results).weights[:5]
    np.testing.assert_allclose(fitted.predict(W), fitted.regressor.predict(s.reduce(W)))
    assert sum(meta["run_mean_mixture"].values()) == pytest.approx(1.0)


def test_auto_leaves_out_the_laws_and_a_law_is_refused(reuse_results, tmp_path):
    results, _ = reuse_results
    with pytest.raises(ValueError, match="--regressor mixing_law: a mixing law .* sampled with --reuse"):
        fit(results=results, regressor="mixing_law", out=tmp_path / "law")
    fit(results=results, regressor="auto", out=tmp_path / "auto", cv_folds=4)
    cv = json.loads((tmp_path / "auto" / "cv.json").read_text())
    assert set(cv["candidates"]) == {"linear", "gp", "lightgbm", "ensemble"}  # the ensemble of gp and lightgbm only
    fit(results=results, regressor="ensemble", out=tmp_path / "ens", cv_folds=4)
    members = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert [m if isinstance(m, str) else m["name"] for m in members["members"]] == ["gp", "lightgbm"]


@pytest.mark.parametrize("regressor", ["gp", "lightgbm"])
def test_optimize_returns_a_full_mixture_that_keeps_the_block_ratios(reuse_results, tmp_path, regressor):
    results, s = reuse_results
    fit(results=results, regressor=regressor, out=tmp_path / "model", cv_folds=4)
    optimize(model=tmp_path / "model", out=tmp_path / "mixture.yaml", n_candidates=20_000, top_k=50, seed=1)
    record = yaml.safe_load((tmp_path / "mixture.yaml").read_text())
    w = record["weights"]
    assert list(w) == list(DOMAINS) and sum(w.values()) == pytest.approx(1.0, abs=1e-9)
    block = sum(w[d] for d in RATIOS)
    assert 0 < block < 1 and w["dm_mathematics"] > 0 and w["europarl"] > 0  # the searched coordinates moved
    for d, r in RATIOS.items():
        assert w[d] == pytest.approx(block * r, rel=1e-8)
    assert record["reuse"]["searched"] == [BLOCK, "dm_mathematics", "europarl"]


def test_propose_draws_candidates_that_keep_the_ratios(reuse_results, tmp_path, capsys):
    results, s = reuse_results
    fit(results=results, regressor="gp", out=tmp_path / "model", cv_folds=4)
    ids = propose_batch(tmp_path / "model", results, out=tmp_path / "proposed.csv", n=4, n_candidates=500)
    assert "in the trust region L 0.8," in capsys.readouterr().out  # its box lives in the reduced coordinates
    proposed = read_mixtures(tmp_path / "proposed.csv", known=list(DOMAINS))  # refuses a row that breaks them
    assert proposed.ids == ids and proposed.reuse is not None and proposed.reuse.block == s.block
    assert not s.broken(proposed.weights).any()
    assert len({round(float(x), 4) for x in s.reduce(proposed.weights)[:, 0]}) > 1


def test_predict_names_the_rows_that_break_the_ratios_and_answers_for_their_projection(reuse_results, tmp_path):
    from regmix_plugin.commands.fit import predict
    from regmix_plugin.formats.mixture_table import write_mixtures

    results, s = reuse_results
    fit(results=results, regressor="linear", out=tmp_path / "model", cv_folds=4)
    keeps = {"arxiv": 0.25, "enron_emails": 0.15, "freelaw": 0.1, "dm_mathematics": 0.3, "europarl": 0.2}
    breaks = {**keeps, "arxiv": 0.1, "freelaw": 0.25}  # the same block total (0.5), other ratios
    rows = {"keeps": keeps, "breaks": breaks, "uniform": {d: 0.2 for d in DOMAINS}}
    write_mixtures(tmp_path / "plain.csv", rows, list(DOMAINS))  # no '# reuse:' line: nothing refuses them
    with pytest.warns(UserWarning, match=r"run\(s\) breaks, uniform break the reuse block's fixed ratios.*projected"):
        predict(model=tmp_path / "model", mixtures=tmp_path / "plain.csv", out=tmp_path / "pred.csv")
    got = dict(line.split(",") for line in (tmp_path / "pred.csv").read_text().splitlines()[1:])
    assert float(got["breaks"]) == pytest.approx(float(got["keeps"]))  # the projection of both is the same row
    write_mixtures(tmp_path / "kept.csv", {"keeps": keeps}, list(DOMAINS))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rows that keep the ratios predict without a word
        predict(model=tmp_path / "model", mixtures=tmp_path / "kept.csv", out=tmp_path / "pred2.csv")
