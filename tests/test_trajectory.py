"""RegMix-D's trajectory model and schedule format: rows, run-wise CV, no-pickle round trip, schedule search."""

from __future__ import annotations

import numpy as np
import pytest
from regmixd_truth import DOMAINS, LOSS_DOMAINS, proxy_records, true_losses

from regmix_plugin.commands.fit_trajectory import fit_trajectories
from regmix_plugin.formats.schedule import (
    Schedule,
    ScheduleStage,
    read_schedule,
    write_schedule,
)
from regmix_plugin.formats.trajectory_model import load_trajectory_model
from regmix_plugin.models.schedule_search import SearchArgs, derive_schedule
from regmix_plugin.models.trajectory import build_rows, fit_model, trajectories_from_records
from regmix_plugin.weights import ConstraintArgs


@pytest.fixture(scope="module")
def trajs():
    return trajectories_from_records(proxy_records(24, 3, seed=0))


def test_rows_use_the_mixture_of_each_interval_and_the_state_at_its_start(trajs):
    runs, _, _ = trajs
    tr = runs[0]
    X, Y, G = build_rows([tr], "losses", np.full(4, 9.0))
    assert X.shape == (6, 2 + 3 + 4) and (G == 0).all()
    # interval (1/3, 1/2) lies in stage 1: its mixture is stage 1's weights; its state the losses at 1/3
    np.testing.assert_allclose(X[2, :2], [2 / 6, 3 / 6], atol=1e-6)  # eval points fall on whole tokens
    np.testing.assert_allclose(X[2, 2:5], tr.segments[1][2], atol=1e-5)
    np.testing.assert_allclose(X[2, 5:], tr.losses[1])
    np.testing.assert_allclose(X[0, 5:], 9.0)  # the constant start state
    np.testing.assert_allclose(Y, tr.losses)
    Xm, _, _ = build_rows([tr], "mixtures", np.zeros(4))
    np.testing.assert_allclose(
        Xm[3, 5:], (tr.segments[0][2] + tr.segments[1][2] * 0.5) / 1.5, atol=1e-5
    )  # mean before t=1/2


def test_static_records_are_one_segment(trajs):
    runs, _, _ = trajectories_from_records(proxy_records(4, 1, seed=3))
    assert all(len(r.segments) == 1 and r.segments[0][:2] == (0.0, 1.0) for r in runs)


def test_cv_splits_by_run_and_reports_both_feature_sets(trajs, tmp_path, monkeypatch):
    from sklearn import model_selection

    runs, wd, ld = trajs
    seen = []
    original = model_selection.GroupKFold.split

    def spy(self, X, y=None, groups=None):
        for train, test in original(self, X, y, groups):
            seen.append((set(np.asarray(groups)[train]), set(np.asarray(groups)[test])))
            yield train, test

    monkeypatch.setattr(model_selection.GroupKFold, "split", spy)
    cv = fit_trajectories(runs, wd, ld, "val_loss/target", "auto", "linear", tmp_path / "m", 4, seed=0)
    assert set(cv["candidates"]) == {"losses/linear", "mixtures/linear"}
    assert len(seen) == 8 and all(not (tr & te) for tr, te in seen)  # no run on both sides of a fold
    assert cv["chosen"] == min(cv["candidates"], key=lambda k: cv["candidates"][k]["rollout_rmse"])
    for s in cv["candidates"].values():
        assert np.isfinite(s["step_rmse"]) and np.isfinite(s["rollout_rmse"])


@pytest.mark.parametrize("regressor", ["linear", "lightgbm", "gp"])
def test_saved_model_predicts_exactly_what_the_fitted_one_did(trajs, tmp_path, regressor):
    from regmix_plugin.formats.trajectory_model import save_model
    from regmix_plugin.models.trajectory import resolve_target

    runs, wd, ld = trajs
    model = fit_model(runs, wd, ld, resolve_target("val_loss/target", ld), "losses", regressor)
    save_model(model, tmp_path / "m")
    assert not list((tmp_path / "m").rglob("*.pkl")) and not list((tmp_path / "m").rglob("*.pickle"))
    back = load_trajectory_model(tmp_path / "m")
    segs = runs[0].segments
    np.testing.assert_allclose(back.rollout(segs), model.rollout(segs), rtol=1e-10)
    assert back.target == {"target": 1.0} and back.loss_domains == list(LOSS_DOMAINS)


def test_schedule_counts_the_epoch_bound_over_the_whole_run(trajs):
    from regmix_plugin.models.trajectory import resolve_target

    runs, wd, ld = trajs
    model = fit_model(runs, wd, ld, resolve_target("val_loss/target", ld), "mixtures", "linear")
    allowance = np.array([0.2, 1.0, 1.0])  # `fast` may fill at most 20% of the whole run
    search = SearchArgs(n_candidates=4000, top_k=32, smoothing=0.0, objective="greedy")
    plan = derive_schedule(model, 3, np.ones(3) / 3, np.zeros(3), np.ones(3), allowance, search)
    used = sum(m[0] / 3 for m in plan["mixtures"])
    assert used <= 0.2 + 1e-9
    assert all(abs(m.sum() - 1) < 1e-9 and (m >= 0).all() for m in plan["mixtures"])


def test_smoothing_pulls_toward_the_previous_stage(trajs):
    from regmix_plugin.models.trajectory import resolve_target

    runs, wd, ld = trajs
    model = fit_model(runs, wd, ld, resolve_target("val_loss/target", ld), "mixtures", "linear")
    args = {"n_candidates": 4000, "top_k": 32, "objective": "greedy"}  # smoothing is greedy's (joint has none)
    raw = derive_schedule(model, 2, np.ones(3) / 3, np.zeros(3), np.ones(3), None, SearchArgs(**args, smoothing=0.0))
    smooth = derive_schedule(model, 2, np.ones(3) / 3, np.zeros(3), np.ones(3), None, SearchArgs(**args, smoothing=0.5))
    np.testing.assert_allclose(smooth["mixtures"][0], raw["mixtures"][0])

    def gap(p):
        return np.abs(p["mixtures"][1] - p["mixtures"][0]).sum()

    assert gap(smooth) < gap(raw)


def test_schedule_yaml_round_trip_and_validation(tmp_path):
    sched = Schedule(
        [ScheduleStage({"a": 0.25, "b": 0.75}, 0.4), ScheduleStage({"a": 1.0, "b": 0.0})],
        prediction={"at_schedule": 2.5, "at_best_static": 2.6},
        search={"top_k": 8},
    )
    write_schedule(tmp_path / "s.yaml", sched)
    back = read_schedule(tmp_path / "s.yaml")
    assert back.stages == sched.stages
    assert back.mixture_data_schedule() == [
        {"until_fraction": 0.4, "weights": {"a": 0.25, "b": 0.75}},
        {"weights": {"a": 1.0}},
    ]
    (tmp_path / "bad.yaml").write_text(
        "stages:\n- {until_fraction: 0.6, weights: {a: 1}}\n"
        "- {until_fraction: 0.5, weights: {a: 2}}\n- {weights: {a: 1}}\n"
    )
    with pytest.raises(ValueError) as e:
        read_schedule(tmp_path / "bad.yaml")
    assert "stages[1].until_fraction 0.5 must be in (0.6, 1)" in str(e.value) and "sum to 2" in str(e.value)
    with pytest.raises(ValueError, match="no 'stages:' list"):
        (tmp_path / "m.yaml").write_text("weights: {a: 1}\n")
        read_schedule(tmp_path / "m.yaml")


def test_ground_truth_rewards_a_schedule():
    """The ground truth itself: front-loading `fast` beats the best static mixture (grid search)."""
    g = np.array([(a, b, 1 - a - b) for a in np.arange(0, 1.001, 0.05) for b in np.arange(0, 1.001 - a, 0.05)])
    best_static = true_losses([(0, 1, np.clip(g, 0, 1))])[:, 0, 3].min()
    sched = [
        (0, 1 / 3, np.array([0.75, 0.2, 0.05])),
        (1 / 3, 2 / 3, np.array([0.05, 0.2, 0.75])),
        (2 / 3, 1, np.array([0.0, 0.12, 0.88])),
    ]
    assert true_losses(sched)[0, 3] < best_static - 0.02
    assert tuple(sorted(DOMAINS)) == DOMAINS


def _recency_model():
    """A linear transition model of a known law: the loss after an interval is half the loss before it plus
    3, minus the ``scarce`` share of the interval (the mixture trained on last counts most)."""
    from regmix_plugin.models.trajectory import resolve_target

    rng = np.random.default_rng(0)
    records = {}
    for r in range(24):
        s1, s2 = rng.uniform(0, 1, 2)
        l1 = 0.5 * 6.0 + 3 - s1
        l2 = 0.5 * l1 + 3 - s2
        sched = [
            {"until_fraction": 0.5, "weights": {"near": 1 - s1, "scarce": s1}},
            {"weights": {"near": 1 - s2, "scarce": s2}},
        ]
        losses = [
            {"tokens": 50, "final": False, "losses": {"target": l1}},
            {"tokens": 100, "final": True, "losses": {"target": l2}},
        ]
        records[f"r{r}"] = {"run_id": f"r{r}", "status": "done", "tokens": 100, "schedule": sched, "losses": losses}
    runs, wd, ld = trajectories_from_records(records)
    return fit_model(runs, wd, ld, resolve_target("val_loss/target", ld), "losses", "linear")


def test_joint_objective_spends_a_scarce_domain_where_it_pays_and_greedy_does_not():
    """With `scarce` capped at 30% of the run, greedy gives it all to stage 1 (best loss at stage 1's end) and
    has none left for stage 2, where it counts for the final loss; `joint` keeps it for stage 2."""
    model = _recency_model()
    allowance = np.array([1.0, 0.3])  # near, scarce
    args = {"n_candidates": 8000, "top_k": 32, "smoothing": 0.0}
    greedy = derive_schedule(
        model, 2, np.ones(2) / 2, np.zeros(2), np.ones(2), allowance, SearchArgs(**args, objective="greedy")
    )
    joint = derive_schedule(
        model, 2, np.ones(2) / 2, np.zeros(2), np.ones(2), allowance, SearchArgs(**args, objective="joint")
    )
    for plan in (greedy, joint):
        assert sum(m[1] / 2 for m in plan["mixtures"]) <= 0.3 + 1e-9  # both keep the whole-run bound
    assert greedy["mixtures"][0][1] > 0.5 and greedy["mixtures"][1][1] < 0.1
    assert joint["mixtures"][1][1] > 0.5 and joint["mixtures"][0][1] < 0.1
    # the law's final loss: 0.25 * 6 + 1.5 + 3 - s1 / 2 - s2
    final = {k: 6.0 - p["mixtures"][0][1] / 2 - p["mixtures"][1][1] for k, p in (("g", greedy), ("j", joint))}
    assert final["j"] < final["g"] - 0.2
    assert joint["predicted_target"][-1] < greedy["predicted_target"][-1] - 0.2
    with pytest.raises(ValueError, match="objective"):
        derive_schedule(
            model, 2, np.ones(2) / 2, np.zeros(2), np.ones(2), allowance, SearchArgs(**args, objective="lookahead")
        )


def test_schedule_of_a_model_saved_without_cv_writes_and_records_the_objective(tmp_path, capsys):
    """`save_model` without CV (cv_rollout_rmse null) used to crash the schedule.yaml header."""
    from regmix_plugin.commands.schedule import schedule
    from regmix_plugin.formats.trajectory_model import save_model

    save_model(_recency_model(), tmp_path / "m")
    sched = schedule(
        tmp_path / "m",
        tmp_path / "s.yaml",
        stages=2,
        domain_tokens={"near": 1000, "scarce": 300},
        constraints=ConstraintArgs(target_tokens=1000, max_epochs=1.0),
        search=SearchArgs(n_candidates=4000, top_k=32, objective="joint"),
    )
    back = read_schedule(tmp_path / "s.yaml")
    assert back.search["objective"] == "joint" and "rollout RMSE nan" in (tmp_path / "s.yaml").read_text()
    for got, want in zip(back.stages, sched.stages, strict=True):
        assert got.weights == pytest.approx(want.weights)
    assert back.stages[1].weights["scarce"] > back.stages[0].weights["scarce"]
    assert "warning" not in capsys.readouterr().out
    schedule(
        tmp_path / "m",
        tmp_path / "g.yaml",
        stages=2,
        domain_tokens={"near": 1000, "scarce": 300},
        constraints=ConstraintArgs(target_tokens=1000, max_epochs=1.0),
        search=SearchArgs(n_candidates=4000, top_k=32, objective="greedy"),
    )
    assert "predicts the schedule worse than the best single mixture (greedy" in capsys.readouterr().out


def test_fold_models_are_kept_saved_and_make_the_search_pessimistic(trajs, tmp_path):
    """`fit_trajectory` keeps its CV folds' models; `--search.pessimism` ranks by prediction + k * their spread."""
    from regmix_plugin.models.schedule_search import chained_target, schedule_scores

    runs, wd, ld = trajs
    cv = fit_trajectories(runs, wd, ld, "val_loss/target", "losses", "gp", tmp_path / "m", 4, seed=0)
    model = load_trajectory_model(tmp_path / "m")
    assert len(model.members) == 4 == len(cv["candidates"]["losses/gp"]["folds"])
    member_preds = [m.rollout(runs[0].segments) for m in model.members]
    assert len({tuple(np.round(p, 12)) for p in member_preds}) == 4  # four different fits, none the full model's
    bounds = [0.0, 1 / 3, 2 / 3, 1.0]
    rng = np.random.default_rng(0)
    cands = rng.dirichlet(np.ones(3), size=(500, 3))
    state = model.start_state(1)[0]
    mean = chained_target(model, bounds, cands, state)
    spread = np.std([chained_target(m, bounds, cands, state) for m in model.members], axis=0)
    assert spread.min() > 0
    np.testing.assert_allclose(schedule_scores(model, bounds, cands, state, 0.0), mean)
    np.testing.assert_allclose(schedule_scores(model, bounds, cands, state, 2.0), mean + 2 * spread)
    # the pessimistic search settles where the folds agree more: the chosen schedule's spread is lower (measured
    # 0.049 at 0, 0.012 at 3)
    args = {"n_candidates": 4000, "top_k": 32, "objective": "joint"}
    plans = {
        k: derive_schedule(model, 3, np.ones(3) / 3, np.zeros(3), np.ones(3), None, SearchArgs(**args, pessimism=k))
        for k in (0.0, 3.0)
    }

    def spread_of(plan):
        sched = np.stack(plan["mixtures"])[None]
        return float(np.std([chained_target(m, bounds, sched, state) for m in model.members]))

    assert spread_of(plans[3.0]) < spread_of(plans[0.0])


def test_schedule_refuses_a_negative_pessimism_and_notes_a_model_without_folds(tmp_path, capsys):
    from regmix_plugin.commands.schedule import schedule
    from regmix_plugin.formats.trajectory_model import save_model

    save_model(_recency_model(), tmp_path / "m")  # fitted without CV: no fold models
    with pytest.raises(ValueError, match=r"--search.pessimism must be a finite number >= 0, got -1"):
        schedule(
            tmp_path / "m", tmp_path / "s.yaml", stages=2, search=SearchArgs(n_candidates=100, top_k=8, pessimism=-1.0)
        )
    schedule(tmp_path / "m", tmp_path / "s.yaml", stages=2, search=SearchArgs(n_candidates=1000, top_k=8))
    assert "has no cross-validation fold models" in capsys.readouterr().out
