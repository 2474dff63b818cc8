"""RegMix-D on a reuse sweep: the trajectory model fits in the reduced coordinates, `regmix schedule` searches them,
and every stage it writes is a full mixture keeping the block's ratios and every underlying epoch bound."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from regmixd_truth import DOMAINS, LOSS_DOMAINS, true_losses

from regmix_plugin.commands.fit_trajectory import fit_trajectories
from regmix_plugin.commands.schedule import schedule
from regmix_plugin.formats.reuse import BLOCK, ReuseStructure
from regmix_plugin.formats.schedule import read_schedule
from regmix_plugin.formats.trajectory_model import load_trajectory_model
from regmix_plugin.models.schedule_search import SearchArgs
from regmix_plugin.models.trajectory import trajectories_from_records
from regmix_plugin.weights import ConstraintArgs

# the ground truth's domains: `other` and `slow` unchanged (one block, 2:3), `fast` new
REUSE = ReuseStructure(DOMAINS, {"other": 0.4, "slow": 0.6}, "v1/mixture.yaml", decimals=4)
TOKENS = {"fast": 1_000_000, "other": 1_000_000, "slow": 100_000}  # slow: at most 0.1 of a 1M run at max_epochs 1


def reuse_records(n_runs: int, stages: int, seed: int) -> dict:
    """Staged proxies drawn over (block total, fast), expanded with the block's ratios; exact losses plus noise."""
    rng = np.random.default_rng(seed)
    times = [(i + 1) / 6 for i in range(6)]
    records = {}
    for r in range(n_runs):
        ws = [REUSE.round_units(rng.dirichlet([1.0, 1.0]), 4) / 10**4 for _ in range(stages)]
        L = true_losses([(k / stages, (k + 1) / stages, w) for k, w in enumerate(ws)], times)
        L = L + 0.005 * rng.standard_normal(L.shape)
        sched = [{"weights": dict(zip(DOMAINS, map(float, w), strict=True))} for w in ws]
        for k in range(stages - 1):
            sched[k]["until_fraction"] = (k + 1) / stages
        records[f"r{r:02d}"] = {
            "run_id": f"r{r:02d}",
            "status": "done",
            "tokens": 1_000_000,
            "schedule": sched,
            "losses": [
                {
                    "tokens": round(t * 1e6),
                    "final": t == 1.0,
                    "losses": dict(zip(LOSS_DOMAINS, map(float, row), strict=True)),
                }
                for t, row in zip(times, L, strict=True)
            ],
        }
    return records


def keeps_every_bound(sched, allowance: dict[str, float]) -> np.ndarray:
    ends = [st.until_fraction or 1.0 for st in sched.stages]
    spans = np.diff([0.0, *ends])
    W = np.array([[st.weights[d] for d in DOMAINS] for st in sched.stages])
    assert not REUSE.broken(W, tolerance=1e-9).any()  # every stage: the block at 2:3, to the written digits
    np.testing.assert_allclose(W.sum(1), 1.0, atol=1e-9)
    used = spans @ W  # share of the whole run per underlying domain
    for d, cap in allowance.items():
        assert used[DOMAINS.index(d)] <= cap + 1e-9, (d, used)
    return used


@pytest.fixture(scope="module")
def reuse_model(tmp_path_factory):
    trajs, wd, ld = trajectories_from_records(reuse_records(16, 3, seed=0))
    out = tmp_path_factory.mktemp("reuse_traj") / "model"
    fit_trajectories(trajs, wd, ld, "val_loss/target", "auto", "linear", out, cv_folds=4, reuse=REUSE)
    return out


def test_the_trajectory_model_fits_in_the_reduced_coordinates_and_says_so(reuse_model):
    meta = json.loads((reuse_model / "trajectory.json").read_text())
    assert meta["weight_domains"] == list(DOMAINS)  # it still takes, and a schedule is written over, every domain
    assert meta["mixture_features"] == [BLOCK, "fast"]
    assert meta["reuse"]["block"] == pytest.approx({"other": 0.4, "slow": 0.6})
    model = load_trajectory_model(reuse_model)
    assert model.reuse == REUSE and all(m.reuse == REUSE for m in model.members)
    state = len(LOSS_DOMAINS) if model.features == "losses" else 2
    assert model.regressors["target"].coef_.shape == (2 + 2 + state,)  # t_a, t_b, @block, fast, state
    # a full mixture and the same block total at other ratios predict alike: the model sees the reduced row only
    w, other_ratios = np.array([0.3, 0.28, 0.42]), np.array([0.3, 0.5, 0.2])
    s0 = model.start_state(1)
    np.testing.assert_allclose(model.step(0.0, 0.5, w, s0), model.step(0.0, 0.5, other_ratios, s0))


@pytest.mark.parametrize("objective", ["joint", "greedy"])
def test_every_stage_of_the_schedule_keeps_the_ratios_and_every_epoch_bound(reuse_model, tmp_path, objective, capsys):
    sched = schedule(
        reuse_model,
        tmp_path / "schedule.yaml",
        stages=3,
        domain_tokens=TOKENS,
        constraints=ConstraintArgs(target_tokens=1_000_000, max_epochs=1),
        search=SearchArgs(n_candidates=3000, top_k=32, objective=objective),
    )
    assert f"searching the reduced coordinates of {reuse_model}: {BLOCK}, fast" in capsys.readouterr().out
    back = read_schedule(tmp_path / "schedule.yaml")
    assert len(back.stages) == 3
    for got, made in zip(back.stages, sched.stages, strict=True):  # written to 10 significant digits
        assert got.weights == pytest.approx(made.weights, abs=1e-9)
    # slow may fill 0.1 of the run; the block holds slow at 0.6 of it, so the block may average 1/6 at most
    used = keeps_every_bound(back, {"slow": 0.1, "other": 1.0, "fast": 1.0})
    assert used[DOMAINS.index("slow")] > 0.05  # the bound binds: the search wants more of the block
    blocks = [st.weights["other"] + st.weights["slow"] for st in back.stages]
    assert len({round(b, 6) for b in blocks}) > 1  # the block's total is searched, not frozen
    assert sched.provenance["reuse"]["searched"] == [BLOCK, "fast"]
    static = np.array([sched.prediction["best_static"][d] for d in DOMAINS])
    assert not REUSE.broken(static, tolerance=1e-9).any()


def test_schedule_refuses_bounds_no_block_total_meets(reuse_model, tmp_path):
    with pytest.raises(ValueError, match=r"keeps the reuse block other, slow at fixed ratios.*loosen them"):
        schedule(reuse_model, tmp_path / "s.yaml", stages=2, domain_tokens=TOKENS,
                 constraints=ConstraintArgs(min_weight={"other": 0.5}, max_weight={"slow": 0.6}),
                 search=SearchArgs(n_candidates=500, top_k=8))  # fmt: skip
    assert not Path(tmp_path / "s.yaml").exists()


def test_a_run_that_breaks_the_block_is_refused_by_name(tmp_path):
    records = reuse_records(6, 2, seed=1)
    records["r03"]["schedule"][1]["weights"] = {"fast": 0.2, "other": 0.6, "slow": 0.2}
    trajs, wd, ld = trajectories_from_records(records)
    with pytest.raises(ValueError, match=r"run\(s\) r03 break the reuse block's fixed ratios"):
        fit_trajectories(trajs, wd, ld, "val_loss/target", "losses", "linear", tmp_path / "m", 3, reuse=REUSE)
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_reuse_staged_proxies_to_a_schedule_end_to_end(tmp_path, prepared, tokenizer_dir, capsys):
    """sample --reuse --stages 2 -> sweep (four real 12-step proxies) -> fit_trajectory -> schedule, through the CLI:
    the corpus gained `tiny` since `code` and `prose` were mixed 1:3."""
    import yaml
    from conftest import pretrain_config

    from regmix_plugin.__main__ import main
    from regmix_plugin.formats.manifest import read_manifest
    from regmix_plugin.formats.mixture_table import read_mixtures
    from regmix_plugin.formats.mixture_yaml import write_mixture

    micro, seq, steps = 4, 32, 12
    budget = str(steps * micro * seq)
    cfg = pretrain_config(Path("unused"), prepared, tokenizer_dir, None, max_epochs=15)
    cfg["train"].update(max_tokens=steps * micro * seq)
    cfg["data"]["init_args"]["max_tokens"] = steps * micro * seq
    (tmp_path / "proxy.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    previous = tmp_path / "v1_mixture.yaml"
    write_mixture(previous, {"weights": {"code": 0.25, "prose": 0.75}}, "v1", read_manifest(prepared))
    main(["sample", "--data_path", str(prepared), "--out", str(tmp_path / "mixtures.csv"), "--n", "4",
          "--stages", "2", "--reuse", str(previous), "--constraints.target_tokens", budget,
          "--drop_below", "0.01", "--decimals", "2", "--seed", "1"])  # fmt: skip
    table = read_mixtures(tmp_path / "mixtures.csv")
    s = table.reuse
    assert s.block == ["code", "prose"] and s.free == ["tiny"] and table.stages.shape == (4, 2, 3)
    main(["sweep", "--mixtures", str(tmp_path / "mixtures.csv"), "--data_path", str(prepared),
          "--recipe", str(tmp_path / "proxy.yaml"), "--out_dir", str(tmp_path / "sweep"), "--local.workers", "0",
          "--eval.points", "2", "--eval.val_tokens", "256", "--eval.batch_size", "4"])  # fmt: skip
    capsys.readouterr()
    main(["fit_trajectory", "--sweep", str(tmp_path / "sweep"), "--target", "val_loss/*", "--cv_folds", "2",
          "--regressor", "linear", "--out", str(tmp_path / "traj")])  # fmt: skip
    assert "fitting in the reduced coordinates of the sweep" in capsys.readouterr().out
    meta = json.loads((tmp_path / "traj" / "trajectory.json").read_text())
    assert meta["mixture_features"] == [BLOCK, "tiny"] and meta["reuse"]["block"] == pytest.approx(s.ratios)
    assert meta["weight_domains"] == ["code", "prose", "tiny"] and meta["n_runs"] == 4
    main(["schedule", "--model", str(tmp_path / "traj"), "--out", str(tmp_path / "schedule.yaml"), "--stages", "2",
          "--data_path", str(prepared), "--constraints.target_tokens", budget, "--search.n_candidates", "2000",
          "--search.top_k", "16"])  # fmt: skip
    sched = read_schedule(tmp_path / "schedule.yaml")
    W = np.array([[st.weights[d] for d in s.domains] for st in sched.stages])
    assert W.shape == (2, 3) and not s.broken(W, tolerance=1e-9).any()  # code:prose stays 1:3 in each stage
    assert W[:, 1] == pytest.approx(3 * W[:, 0], rel=1e-8)
    assert sched.provenance["reuse"]["searched"] == [BLOCK, "tiny"]
