"""`regmix propose`: constraints, no duplicates, spread batches, pool mode, and a lower regret than random picks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import PILE17, synthetic_result_rows, synthetic_true_losses

from regmix_plugin.draws import distinct_draws
from regmix_plugin.formats.mixture_table import read_mixtures, write_mixtures
from regmix_plugin.formats.model_dir import load_fitted
from regmix_plugin.formats.results import write_results
from regmix_plugin.models.acquisition import believer_batch
from regmix_plugin.weights import largest_remainder

D = 4
DOMAINS = list(PILE17[:D])


def _fit(cli, tmp_path, rows, name="model", regressor="gp"):
    write_results(tmp_path / f"{name}.csv", rows)
    code, _, err = cli("fit", "--results", tmp_path / f"{name}.csv", "--regressor", regressor, "--out", tmp_path / name)
    assert code == 0, err
    return tmp_path / name, tmp_path / f"{name}.csv"


def _keys(weights, decimals=4):
    return {tuple(int(u) for u in largest_remainder(w, 10**decimals)) for w in weights}


@pytest.mark.parametrize("regressor", ["gp", "ensemble"])
def test_every_proposal_respects_each_constraint(cli, tmp_path, regressor):
    model, results = _fit(cli, tmp_path, synthetic_result_rows(24, D, seed=0), regressor=regressor)
    out = tmp_path / "next.csv"
    code, printed, err = cli(
        "propose", "--model", model, "--results", results, "--n", 8, "--out", out,
        "--domain_tokens", "{arxiv: 1e6, dm_mathematics: 1e6, enron_emails: 1e6, europarl: 2e5}",
        "--constraints.target_tokens", "1e6", "--constraints.max_epochs", "2",
        "--constraints.min_weight", "{arxiv: 0.15}", "--constraints.max_weight", "{dm_mathematics: 0.25}",
        "--constraints.exclude", "[enron_emails]",
    )  # fmt: skip
    assert code == 0, err
    assert ("kriging believer on each member" in printed) == (regressor == "ensemble")
    W = read_mixtures(out, known=DOMAINS).weights
    assert len(W) == 8
    assert (W[:, 0] >= 0.15).all()  # min_weight
    assert (W[:, 1] <= 0.25).all()  # max_weight
    assert (W[:, 2] == 0).all()  # exclude
    assert (W[:, 3] <= 2 * 2e5 / 1e6 + 1e-12).all()  # epoch bound: 2 epochs of 2e5 tokens in a 1e6-token run
    np.testing.assert_allclose(W.sum(1), 1.0, atol=1e-12)


def test_proposals_never_duplicate_a_trained_or_pending_row(cli, tmp_path):
    rows = synthetic_result_rows(20, D, seed=1)
    model, results = _fit(cli, tmp_path, rows)
    trained = np.array([[r[f"weight/{d}"] for d in DOMAINS] for r in rows])
    pending = np.random.default_rng(0).dirichlet(np.ones(D), 4)
    new = np.random.default_rng(1).dirichlet(np.ones(D), 3)
    write_mixtures(tmp_path / "pending.csv", _named(pending, "pend"), DOMAINS)
    # the pool repeats every trained and pending row (rounded, under other ids) next to 3 new ones
    rounded = np.array([largest_remainder(w, 10**4) / 10**4 for w in np.vstack([trained, pending])])
    write_mixtures(tmp_path / "pool.csv", _named(np.vstack([rounded, new]), "pool"), DOMAINS)
    out = tmp_path / "next.csv"
    args = ("--model", model, "--results", results, "--pending", tmp_path / "pending.csv", "--out", out)
    code, stdout, err = cli("propose", *args, "--candidates", tmp_path / "pool.csv", "--n", 10)
    assert code == 0, err
    got = read_mixtures(out, known=DOMAINS)
    assert _keys(got.weights) == _keys(new)  # only the new rows: 3 of the 10 asked for, with a note
    assert "only 3 pool row(s)" in stdout
    # generator mode, twice into the same file: nothing trained, pending or already proposed comes back
    for seed in (0, 1):
        code, _, err = cli("propose", *args, "--n", 6, "--seed", seed)
        assert code == 0, err
    got = read_mixtures(out, known=DOMAINS)
    assert len(got.ids) == len(set(got.ids)) == 15
    assert len(_keys(got.weights)) == 15
    assert not _keys(got.weights) & (_keys(trained) | _keys(pending))
    assert not set(got.ids) & ({r["run_id"] for r in rows} | {f"pend-{i}" for i in range(4)})


def test_pool_mode_returns_only_pool_rows_with_their_ids(cli, tmp_path):
    model, results = _fit(cli, tmp_path, synthetic_result_rows(20, D, seed=2))
    pool = np.random.default_rng(5).dirichlet(np.ones(D), 40)
    write_mixtures(tmp_path / "pool.csv", _named(pool, "pool"), DOMAINS)
    out = tmp_path / "next.csv"
    code, _, err = cli("propose", "--model", model, "--results", results, "--candidates", tmp_path / "pool.csv",
                       "--n", 8, "--out", out)  # fmt: skip
    assert code == 0, err
    got = read_mixtures(out, known=DOMAINS)
    by_id = dict(zip(_named(pool, "pool"), pool, strict=True))
    assert len(got.ids) == 8 and set(got.ids) <= set(by_id)
    for i, w in zip(got.ids, got.weights, strict=True):
        np.testing.assert_allclose(w, by_id[i])


def test_no_two_rows_of_a_batch_are_closer_than_min_l1(cli, tmp_path):
    """The rule: no two rows of a proposed batch are closer than ``--min_l1`` (default 0.1) in L1, and the first
    pick is the plain LCB minimum. On this GP the plain believer (``min_l1`` 0) does not meet it: its closest pair
    is the top-8 by the bound's, L1 0.0574, so the exclusion is what spreads the batch."""
    model, results = _fit(cli, tmp_path, synthetic_result_rows(24, D, seed=3))
    gp = load_fitted(model).regressor
    C = distinct_draws(np.full(D, 1 / D), 5000, seed=0)[:, 0, :] / 1e4
    n, kappa = 8, 1.96
    mean, std = gp.predict(C, return_std=True)
    top = np.argsort(mean - kappa * std)[:n]
    plain, _, _ = believer_batch(gp, C, n, kappa, min_l1=0.0)
    picks, _, _ = believer_batch(gp, C, n, kappa)
    assert picks[0] == plain[0] == top[0]  # the first pick is the plain LCB minimum
    assert _min_l1(C[plain]) < 0.1 and _min_l1(C[top]) < 0.1
    assert len(picks) == n and _min_l1(C[picks]) >= 0.1
    # the command: a generator-mode batch of 8 from the same model keeps the promise too
    out = tmp_path / "next.csv"
    code, _, err = cli("propose", "--model", model, "--results", results, "--n", n, "--out", out)
    assert code == 0, err
    W = read_mixtures(out, known=DOMAINS).weights
    assert len(W) == n and _min_l1(W) >= 0.1


def test_a_pool_too_tight_for_min_l1_gives_fewer_rows_with_a_note(cli, tmp_path):
    model, results = _fit(cli, tmp_path, synthetic_result_rows(20, D, seed=2))
    base = np.array([0.25, 0.25, 0.25, 0.25])
    pool = base + 0.01 * np.array([[1, -1, 0, 0], [0, 1, -1, 0], [0, 0, 1, -1], [-1, 0, 0, 1]])  # all within 0.04
    far = np.array([[0.7, 0.1, 0.1, 0.1]])
    write_mixtures(tmp_path / "pool.csv", _named(np.vstack([pool, far]), "pool"), DOMAINS)
    out = tmp_path / "next.csv"
    args = ("--model", model, "--results", results, "--candidates", tmp_path / "pool.csv", "--out", out)
    code, stdout, err = cli("propose", *args, "--n", 4)
    assert code == 0, err
    assert "only 2 candidate(s) are at least --min_l1 0.1 apart" in stdout
    got = read_mixtures(out, known=DOMAINS)
    assert len(got.ids) == 2 and "pool-4" in got.ids
    code, _, err = cli("propose", *args[:-1], tmp_path / "next0.csv", "--n", 4, "--min_l1", 0)
    assert code == 0, err
    assert len(read_mixtures(tmp_path / "next0.csv", known=DOMAINS).ids) == 4


def _min_l1(W):
    return min(np.abs(a - b).sum() for a, b in itertools.combinations(W, 2))


def test_conditioning_on_the_predicted_mean_keeps_the_mean_and_shrinks_the_std(cli, tmp_path):
    model, _ = _fit(cli, tmp_path, synthetic_result_rows(16, D, seed=4))
    gp = load_fitted(model).regressor
    C = np.random.default_rng(0).dirichlet(np.ones(D), 50)
    mean, std = gp.predict(C, return_std=True)
    after = gp.condition_on(C[:1], mean[:1])
    mean2, std2 = after.predict(C, return_std=True)
    np.testing.assert_allclose(mean2, mean, atol=1e-8)
    assert (std2 <= std + 1e-12).all() and std2[0] < 0.5 * std[0]


@pytest.mark.parametrize("bad", [("--kappa", "-1"), ("--n", "0"), ("--min_l1", "-0.1")])
def test_bad_flags_are_refused_by_name(cli, tmp_path, bad):
    model, results = _fit(cli, tmp_path, synthetic_result_rows(12, D, seed=0))
    code, _, err = cli("propose", "--model", model, "--results", results, *bad, "--out", tmp_path / "o.csv")
    assert code == 2 and bad[0] in err and not (tmp_path / "o.csv").exists()


def _named(W, prefix):
    return {f"{prefix}-{i}": dict(zip(DOMAINS, map(float, w), strict=True)) for i, w in enumerate(W)}


def _true(W):
    return synthetic_true_losses(W, D).mean(1)


def _optimum() -> float:
    from scipy.optimize import minimize

    best = np.inf
    for x0 in np.random.default_rng(0).dirichlet(np.ones(D), 8):
        r = minimize(lambda w: _true(w[None])[0], x0, bounds=[(0, 1)] * D, method="SLSQP",
                     constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}])  # fmt: skip
        best = min(best, r.fun)
    return best


def test_lcb_picks_reach_a_lower_true_regret_than_random_picks(cli, tmp_path, measured):
    """Protocol fixed before the first run: 12 random starting runs (4 domains, the synthetic power-law losses
    with noise 0.01, target the mean loss), then 2 rounds of 4: refit the GP and propose 4 (active), or draw 4
    from the same generator around the same prior (random). Regret: the best true target among the 20 runs
    minus the true optimum. Over 5 seeds, active must have the lower mean regret and win at least 3 seeds.

    Measured (protocol 2 of docs/fewer_proxies.md: candidates in a TuRBO trust region; this test unchanged): active
    mean 0.0146 [0.0019, 0.0298, 0.0346, 0.0019, 0.005] vs random 0.0263 [0.016, 0.0222, 0.0346, 0.0457, 0.013],
    margin 0.0117; active wins 3 of 5 (one tie, one loss), the least the protocol accepts. Over the whole simplex
    (``--trust_length null``) it was 0.0218, 1 win of 5: an expected failure until the trust region."""
    opt = _optimum()
    regrets = {"active": [], "random": []}
    for seed in range(5):
        start = synthetic_result_rows(12, D, seed=seed)
        W0 = np.array([[r[f"weight/{d}"] for d in DOMAINS] for r in start])
        rng = np.random.default_rng(100 + seed)
        rand = distinct_draws(W0.mean(0), 8, seed=seed)[:, 0, :] / 1e4
        regrets["random"].append(_true(np.vstack([W0, rand])).min() - opt)
        rows, W = list(start), W0
        for k in range(2):
            model, results = _fit(cli, tmp_path, rows, f"s{seed}r{k}")
            out = tmp_path / f"s{seed}r{k}-next.csv"
            code, _, err = cli("propose", "--model", model, "--results", results, "--n", 4, "--seed", seed,
                               "--out", out)  # fmt: skip
            assert code == 0, err
            new = read_mixtures(out, known=DOMAINS)
            losses = synthetic_true_losses(new.weights, D) + 0.01 * rng.standard_normal((4, D))
            for i, w, loss in zip(new.ids, new.weights, losses, strict=True):
                row = {
                    "run_id": i,
                    "status": "done",
                    **{f"weight/{d}": float(x) for d, x in zip(DOMAINS, w, strict=True)},
                }
                rows.append({**row, **{f"val_loss/{d}": float(x) for d, x in zip(DOMAINS, loss, strict=True)}})
            W = np.vstack([W, new.weights])
        assert len(W) == 20
        regrets["active"].append(_true(W).min() - opt)
    a, r = np.array(regrets["active"]), np.array(regrets["random"])
    measured(
        f"true regret after 20 runs (12 random + 2 x 4), 5 seeds: active mean {a.mean():.4f} "
        f"{np.round(a, 4).tolist()}, random mean {r.mean():.4f} {np.round(r, 4).tolist()}; "
        f"active wins {(a < r).sum()}/5"
    )
    assert a.mean() < r.mean()
    assert (a < r).sum() >= 3
