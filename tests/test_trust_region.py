"""The trust region of `regmix propose` and the active loop (TuRBO, Eriksson et al. 2019): its box, its growth
when a batch does not fit, and its length from round to round."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import PILE17, synthetic_result_rows

from regmix_plugin.commands.sweep.active import ActiveArgs, observed, trust_region
from regmix_plugin.formats.mixture_table import read_mixtures, write_mixtures
from regmix_plugin.formats.model_dir import load_fitted
from regmix_plugin.formats.results import write_results
from regmix_plugin.models.acquisition import TRUST_INIT, TRUST_MAX, TrustRegion

D = 4
DOMAINS = list(PILE17[:D])


def _fit(cli, tmp_path, rows):
    write_results(tmp_path / "r.csv", rows)
    code, _, err = cli("fit", "--results", tmp_path / "r.csv", "--regressor", "gp", "--out", tmp_path / "m")
    assert code == 0, err
    return tmp_path / "m", tmp_path / "r.csv"


def _box(model, results, length, centre=None):
    """The box by hand: around the run with the best posterior mean (or row ``centre`` of ``results``), sides
    length * w in sqrt weights, w the length scales clipped to [0.005, 2] over their mean, at geometric mean 1."""
    fitted = load_fitted(model)
    W = read_mixtures(results, known=DOMAINS).weights
    z = np.sqrt(W[np.argmin(fitted.predict(W)) if centre is None else centre])
    scales = np.clip(fitted.regressor.length_scale_, 0.005, 2.0)
    w = scales / scales.mean()
    w = w / np.prod(w) ** (1 / len(w))
    return np.clip(z - length * w / 2, 0, 1), np.clip(z + length * w / 2, 0, 1)


def _inside(W, box):
    Z, (lo, hi) = np.sqrt(W), box
    return ((lo - 1e-9 <= Z) & (hi + 1e-9 >= Z)).all(1)


@pytest.mark.parametrize("pool", [False, True])
def test_proposals_lie_in_the_box_around_the_run_with_the_best_predicted_target(cli, tmp_path, pool):
    model, results = _fit(cli, tmp_path, synthetic_result_rows(16, D, seed=6))
    box = _box(model, results, TRUST_INIT)
    extra = []
    if pool:
        rows = np.random.default_rng(7).dirichlet(np.ones(D), 400)
        write_mixtures(tmp_path / "pool.csv", {f"p{i}": dict(zip(DOMAINS, w, strict=True)) for i, w in
                                                enumerate(rows)}, DOMAINS)  # fmt: skip
        assert 8 <= _inside(rows, box).sum() < 400  # the box keeps some of the pool out
        extra = ["--candidates", tmp_path / "pool.csv"]
    out = tmp_path / "next.csv"
    code, printed, err = cli("propose", "--model", model, "--results", results, "--n", 6, "--out", out, *extra)
    assert code == 0, err
    assert "in the trust region L 0.8," in printed
    W = read_mixtures(out, known=DOMAINS).weights
    assert len(W) == 6 and _inside(W, box).all()
    # null: the whole space (the rule before the trust region)
    code, printed, err = cli("propose", "--model", model, "--results", results, "--n", 6, "--out",
                             tmp_path / "all.csv", "--trust_length", "null", *extra)  # fmt: skip
    assert code == 0, err and "in the whole space" in printed


def test_a_box_too_small_for_a_spread_batch_doubles_until_it_holds_one(cli, tmp_path):
    model, results = _fit(cli, tmp_path, synthetic_result_rows(16, D, seed=6))
    out = tmp_path / "next.csv"
    args = ("--model", model, "--results", results, "--n", 6, "--out", out, "--trust_length", 0.05)
    code, printed, err = cli("propose", *args)
    assert code == 0, err
    grown = re.search(r"trust region L (\S+) \(grown from --trust_length 0.05 to fit the batch at --min_l1\)", printed)
    assert grown, printed
    length = float(grown.group(1))
    assert length in [0.05 * 2**k for k in range(1, 8)]
    W = read_mixtures(out, known=DOMAINS).weights
    assert len(W) == 6 and _inside(W, _box(model, results, length)).all()
    assert not _inside(W, _box(model, results, length / 2)).all()  # the smaller box could not hold them


def test_the_length_follows_turbos_rules():
    r = TrustRegion()
    assert (r.length, TrustRegion.failure_tolerance(8, 4), TrustRegion.failure_tolerance(2, 17)) == (0.8, 1, 9)
    for _ in range(2):
        r = r.after(True, 4, 17)
    assert (r.length, r.successes) == (0.8, 2)
    r = r.after(True, 4, 17)  # the third success in a row doubles it
    assert (r.length, r.successes) == (1.6, 0)
    for _ in range(3):
        r = r.after(True, 4, 17)
    assert r.length == TRUST_MAX  # never past L_max
    r = r.after(False, 4, 17)  # a failure resets the successes; ceil(17 / 4) = 5 failures halve it
    assert (r.successes, r.failures) == (0, 1)
    for _ in range(4):
        r = r.after(False, 4, 17)
    assert (r.length, r.failures) == (0.8, 0)
    small = TrustRegion(0.5**7)
    assert small.after(False, 8, 4, restart=0.4) == TrustRegion(0.4)  # below L_min: starts over
    assert TrustRegion.improved(3.0, 2.99) and not TrustRegion.improved(3.0, 2.998)  # by more than 1e-3 x |best|


def test_the_loop_replays_the_length_from_the_results(tmp_path):
    rows = synthetic_result_rows(14, D, seed=1)
    ids = [f"mix-{i:04d}" for i in range(1, 7)] + [f"round{j:02d}-{i:04d}" for j in (1, 2, 3, 4) for i in (1, 2)]
    best = min(r["val_loss/arxiv"] for r in rows[:6])
    for r, i in zip(rows, ids, strict=True):
        r["run_id"] = i
    # round 1 beats the start; rounds 2-4 do not (each no better than round 1's best)
    rows[6]["val_loss/arxiv"] = best - 0.1
    for r in rows[8:]:
        r["val_loss/arxiv"] = best
    write_results(tmp_path / "results.csv", rows)
    loop = ActiveArgs(batch=2, target="val_loss/arxiv")
    lengths = [trust_region(*observed(tmp_path / "results.csv", loop), loop, k, D) for k in range(5)]
    # q = 2, d = 4: 2 failures in a row halve it
    assert [(r.length, r.successes, r.failures) for r in lengths] == [
        (0.8, 0, 0), (0.8, 1, 0), (0.8, 0, 1), (0.4, 0, 0), (0.4, 0, 1)
    ]  # fmt: skip
    null = ActiveArgs(trust_length=None, target="val_loss/arxiv")
    assert trust_region(*observed(tmp_path / "results.csv", null), null, 4, D) is None


def test_a_bad_trust_length_is_refused_by_name(cli, tmp_path):
    model, results = _fit(cli, tmp_path, synthetic_result_rows(12, D, seed=0))
    for bad in ("0", "-1", "5"):
        code, _, err = cli("propose", "--model", model, "--results", results, "--trust_length", bad,
                           "--out", tmp_path / "o.csv")  # fmt: skip
        assert code == 2 and "--trust_length must be in (0, 1.6]" in err and not (tmp_path / "o.csv").exists()
        assert "--loop.trust_length" in " ".join(ActiveArgs(trust_length=float(bad)).problems())


def test_a_loop_started_before_the_trust_region_resumes_with_null_and_says_so(tmp_path):
    import json

    from regmix_plugin.commands.sweep.active import STATE, _check_state

    identity = ActiveArgs().identity()
    del identity["trust_length"]  # active.json as written before the setting existed
    (tmp_path / STATE).write_text(json.dumps({"identity": identity, "rounds": {}}))
    with pytest.raises(ValueError, match=r"--loop.trust_length: not recorded, the loop predates it; pass null"):
        _check_state(tmp_path, ActiveArgs())
    _check_state(tmp_path, ActiveArgs(trust_length=None))  # resumes


def test_the_centre_is_a_finished_run_never_a_failed_one(cli, tmp_path):
    rows = synthetic_result_rows(16, D, seed=6)
    model, results = _fit(cli, tmp_path, rows)
    fitted = load_fitted(model)
    W = read_mixtures(results, known=DOMAINS).weights
    order = np.argsort(fitted.predict(W))
    keep = int(order[-1])  # the run predicted worst is the only finished one; every other run failed
    for i, r in enumerate(rows):
        if i != keep:
            r["status"] = "failed"
    write_results(results, rows)
    code, _, err = cli("propose", "--model", model, "--results", results, "--n", 4, "--out", tmp_path / "n.csv")
    assert code == 0, err
    P = read_mixtures(tmp_path / "n.csv", known=DOMAINS).weights
    assert _inside(P, _box(model, results, TRUST_INIT, centre=keep)).all()
