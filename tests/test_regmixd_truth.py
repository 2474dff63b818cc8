"""RegMix-D against RegMix on a ground truth where the best mixture changes during training (regmixd_truth).

Protocol, fixed before any result was seen: per seed, 48 static proxies for RegMix (`regmix fit` auto,
`regmix optimize` 100k candidates, top 128) and 48 three-stage proxies for RegMix-D (`fit_trajectory`
auto features, GP regressor, run-wise 5-fold CV; `regmix schedule` defaults: 3 stages, 100k candidates,
top 128, smoothing 0.2). Both start from the uniform prior. The judge is the noise-free ground truth.
Online: the same model and search, but each stage from the run's observed (noisy) losses at the switch.
"""

from __future__ import annotations

import numpy as np
import pytest
from regmixd_truth import DOMAINS, LOSS_DOMAINS, proxy_records, true_losses

N_RUNS, STAGES, NOISE = 48, 3, 0.01


def regmix_static(tmp_path, seed):
    from regmix_plugin.fit import fit
    from regmix_plugin.formats.mixture_yaml import read_mixture
    from regmix_plugin.formats.results import write_results
    from regmix_plugin.formats.sweep_records import RunRecord, table_rows
    from regmix_plugin.optimize import optimize

    records = proxy_records(N_RUNS, 1, seed + 100, noise=NOISE)
    records = {k: RunRecord.from_dict(r) for k, r in records.items()}
    write_results(tmp_path / "static.csv", table_rows(list(records), records))
    fit(results=tmp_path / "static.csv", target="val_loss/target", out=tmp_path / "static_model", seed=seed)
    optimize(
        tmp_path / "static_model",
        out=tmp_path / "static.yaml",
        prior={d: 1 / 3 for d in DOMAINS},
        n_candidates=100_000,
        top_k=128,
        seed=seed,
        num_threads=1,
    )
    w = read_mixture(tmp_path / "static.yaml")["weights"]
    return np.array([w[d] for d in DOMAINS])


def regmix_d(tmp_path, seed):
    from regmix_plugin.schedule import schedule
    from regmix_plugin.trajectory import (
        SearchArgs,
        fit_trajectories,
        trajectories_from_records,
    )

    trajs, wd, ld = trajectories_from_records(proxy_records(N_RUNS, STAGES, seed, noise=NOISE))
    assert wd == list(DOMAINS) and ld == list(LOSS_DOMAINS)
    cv = fit_trajectories(trajs, wd, ld, "val_loss/target", "auto", "gp", tmp_path / "traj", 5, seed)
    sched = schedule(
        tmp_path / "traj",
        tmp_path / "schedule.yaml",
        stages=STAGES,
        prior={d: 1 / 3 for d in DOMAINS},
        search=SearchArgs(seed=seed),
    )
    return cv, [np.array([st.weights[d] for d in DOMAINS]) for st in sched.stages]


def online(tmp_path, seed, first):
    """The controller's decision rule (trajectory.best_stage_mixture) on the ground truth's observed losses.

    It needs the ``losses`` feature set (the state it observes), whatever `auto` chose for offline.
    """
    from regmix_plugin.trajectory import (
        SearchArgs,
        best_stage_mixture,
        fit_trajectories,
        load_trajectory_model,
        trajectories_from_records,
    )

    trajs, wd, ld = trajectories_from_records(proxy_records(N_RUNS, STAGES, seed, noise=NOISE))
    fit_trajectories(trajs, wd, ld, "val_loss/target", "losses", "gp", tmp_path / "traj_online", 5, seed)
    model = load_trajectory_model(tmp_path / "traj_online")
    rng = np.random.default_rng(seed + 1000)
    mixes = [first]
    lower, upper = np.zeros(3), np.ones(3)
    for k in range(1, STAGES):
        segs = [(j / STAGES, (j + 1) / STAGES, m) for j, m in enumerate(mixes)]
        observed = true_losses(segs, [k / STAGES])[0] + NOISE * rng.standard_normal(4)
        mix, _ = best_stage_mixture(
            model,
            k / STAGES,
            (k + 1) / STAGES,
            observed,
            np.ones(3) / 3,
            lower,
            upper,
            SearchArgs(seed=seed),
            k,
            mixes[-1],
        )
        mixes.append(mix)
    return mixes


def target_of(mixes):
    segs = [(j / len(mixes), (j + 1) / len(mixes), m) for j, m in enumerate(mixes)]
    return float(true_losses(segs)[0, 3])


@pytest.mark.slow
def test_regmix_d_against_regmix_on_ground_truth(tmp_path, capsys):
    rows = []
    for seed in range(3):
        d = tmp_path / str(seed)
        static = regmix_static(d, seed)
        cv, offline = regmix_d(d, seed)
        live = online(d, seed, offline[0])
        rows.append((seed, target_of([static]), target_of(offline), target_of(live), cv["chosen"]))
        print(
            seed, [m.round(3).tolist() for m in offline], [m.round(3).tolist() for m in live], static.round(3).tolist()
        )
    with capsys.disabled():
        print("\nseed  regmix_static  regmix_d_offline  regmix_d_online  chosen")
        for r in rows:
            print(f"{r[0]:>4}  {r[1]:.4f}         {r[2]:.4f}            {r[3]:.4f}           {r[4]}")
    static, offline, live = (np.array([r[i] for r in rows]) for i in (1, 2, 3))
    # The claims of the issue, as measured; a failure here is a finding to report, not a test to tune.
    assert (offline < static).all(), f"offline schedule not below static RegMix on every seed: {offline} vs {static}"
    assert live.mean() <= offline.mean() + NOISE, f"online {live} worse than offline {offline}"
