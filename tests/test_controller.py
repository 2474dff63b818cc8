"""Online RegMix-D in real `litgpt pretrain` runs: decisions recorded, exact replay on resume, faults survived."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import PLAN, fit_test_trajectory, regmixd_config

import regmix_plugin
from regmix_plugin.commands.inspect_run import read_data_state, realized_mixture
from regmix_plugin.formats.regmixd_run import read_decisions
from regmix_plugin.litgpt_compat import run_pretrain, write_config

STEPS, MICRO, SEQ = 24, 4, 32


def config(out_dir, prepared, tokenizer_dir, model, num_workers=0):
    return regmixd_config(out_dir, prepared, tokenizer_dir, model, STEPS, num_workers=num_workers)


def decisions(out_dir):
    return [json.loads(line) for line in (out_dir / "decisions.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, prepared, tokenizer_dir, traj_model):
    out = tmp_path_factory.mktemp("online") / "full"
    run_pretrain(config(out, prepared, tokenizer_dir, traj_model))
    return out


@pytest.mark.slow
def test_decisions_are_recorded_and_trained_on(uninterrupted):
    recs = decisions(uninterrupted)
    assert [r["stage"] for r in recs] == [1, 2]
    assert [r["decided_at_batch"] for r in recs] == [8, 16]  # no workers: no lag
    assert [r["checkpoint"] for r in recs] == ["step-00000008", "step-00000016"]
    for r in recs:
        assert r["fault"] is None and abs(sum(r["weights"].values()) - 1) < 1e-9 and set(r["observed"]) >= {"prose"}
    state = read_data_state(uninterrupted / "final")
    assert state["regmixd"]["decisions"] == recs

    def nonzero(w):
        return {d: v for d, v in w.items() if v > 0}

    assert [nonzero(s["weights"]) for s in state["stages"]] == [PLAN] + [nonzero(r["weights"]) for r in recs]
    # the stream took each stage's decided weights exactly (32 samples per stage)
    rows = realized_mixture(uninterrupted / "final")
    for d in ("code", "prose"):
        expected = 16 + 32 * recs[0]["weights"].get(d, 0) + 32 * recs[1]["weights"].get(d, 0)
        assert abs(rows[d]["samples"] - expected) <= 2, (d, rows[d], expected)
    assert recs[0]["weights"] != PLAN  # the controller did move the mixture


@pytest.fixture(scope="module")
def with_workers(tmp_path_factory, prepared, tokenizer_dir, traj_model):
    """The same online run with 2 dataloader workers: each worker stream reads the decision files itself."""
    out = tmp_path_factory.mktemp("online") / "workers"
    run_pretrain(config(out, prepared, tokenizer_dir, traj_model, num_workers=2))
    return out


@pytest.mark.slow
def test_dataloader_workers_train_on_the_decided_weights(with_workers, uninterrupted):
    recs = decisions(with_workers)
    lag = 2 * 2  # num_workers * torch's default prefetch_factor: decided before any worker can need the file
    assert [r["stage"] for r in recs] == [1, 2]
    assert [r["decided_at_batch"] for r in recs] == [8 - lag, 16 - lag]
    assert [r["checkpoint"] for r in recs] == ["step-00000004", "step-00000012"]
    assert all(r["fault"] is None and abs(sum(r["weights"].values()) - 1) < 1e-9 for r in recs)
    # each worker stream reads its own disjoint share of every domain, so the scored checkpoints and observed
    # losses differ from the num_workers=0 run's; the rest of a decision is the same function of the same plan
    # (stage spans, mixture in force, epoch allowance, candidate seed): with the fixture's linear model, whose
    # best mixture does not move with the observed losses, the decided weights are the same (to rounding: the
    # pessimistic search's fold spread does take the observed state in, ~1e-16 here)
    base = decisions(uninterrupted)
    assert [(r["stage"], r["fraction"]) for r in recs] == [(r["stage"], r["fraction"]) for r in base]
    for r, b in zip(recs, base, strict=True):
        assert r["weights"] == pytest.approx(b["weights"], abs=1e-12)
    assert all(r["observed"] != b["observed"] for r, b in zip(recs, base, strict=True))
    assert recs[0]["weights"] != PLAN  # a stream that ignored the decision would keep PLAN

    def nonzero(w):
        return {d: v for d, v in w.items() if v > 0}

    # each worker stream switched to the decided weights (its saved override is what it blended with) ...
    mid, final = read_data_state(with_workers / "step-00000012"), read_data_state(with_workers / "final")
    assert sorted(final["streams"]) == [0, 1]
    for k, state in ((1, mid), (2, final)):
        for stream in state["streams"].values():
            # (the recorded weights, as MixtureData validates them: renormalised, so equal to ~1e-10)
            assert stream["stage"] == k and nonzero(stream["override"]) == pytest.approx(
                nonzero(recs[k - 1]["weights"]), rel=1e-9, abs=1e-12
            )
            # ... exactly: 8 samples per stream into stage 1 at step 12, 16 into stage 2 at the end
            n = sum(stream["stage_samples"].values())
            assert n == {1: 8, 2: 16}[k]
            for d, w in recs[k - 1]["weights"].items():
                assert abs(stream["stage_samples"].get(d, 0) - w * n) < 1, (k, d, stream, w)
    assert final["regmixd"]["decisions"] == recs
    assert [nonzero(s["weights"]) for s in final["stages"]] == [PLAN] + [nonzero(r["weights"]) for r in recs]


def _resume(tmp_path, uninterrupted, prepared, tokenizer_dir, model, lines, step="step-00000012", damage=None):
    """Resume in a new out_dir from a copy of the uninterrupted run's ``step`` and its first ``lines`` decisions."""
    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copytree(uninterrupted / step, out / step)
    if damage is not None:
        damage(out / step)
    kept = (uninterrupted / "decisions.jsonl").read_text().splitlines()[:lines]
    (out / "decisions.jsonl").write_text("".join(line + "\n" for line in kept))
    cfg = config(out, prepared, tokenizer_dir, model)
    cfg["resume"] = "auto"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a replayed decision must not fault (nothing is recomputed)
        run_pretrain(cfg)
    return out


def _same_final(a, b):
    x = torch.load(a / "final" / "lit_model.pth", weights_only=True)["model"]
    y = torch.load(b / "final" / "lit_model.pth", weights_only=True)["model"]
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _kill_mid_run(cfg, out, ready):
    """Start ``litgpt pretrain --config`` as its own process group, SIGKILL the group once ``ready()``; return
    the checkpoint directories on disk at the kill (the group is stopped first, so the list is exact).

    The kill may land inside litgpt's next checkpoint write: its weights are renamed into place whole (Fabric
    saves through an fsspec transaction), its yaml and tokenizer copies come after them, and a resumed run
    must cope with such a directory (see the test below on one).
    """
    path = write_config(cfg, out / "pretrain_config.yaml")
    root = str(Path(regmix_plugin.__file__).resolve().parents[1])  # the subprocess imports this checkout
    pypath = os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pypath}
    with open(out / "killed.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "litgpt", "pretrain", "--config", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while not ready():
            assert proc.poll() is None, f"the run ended before the kill point:\n{_tail(out / 'killed.log')}"
            assert time.monotonic() < deadline, "no mid-run checkpoint after 300 s"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGSTOP)
        _wait_stopped(proc.pid)
        saved = sorted(p for p in [*out.glob("step-*"), out / "final"] if (p / "lit_model.pth").exists())
        at_kill = [p.name for p in saved]
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, "the run had already ended: the kill did not land mid-run"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return at_kill


def _wait_stopped(pid):
    """Return once ``pid`` is stopped (SIGSTOP is delivered asynchronously)."""
    stat = Path(f"/proc/{pid}/stat")
    for _ in range(2000):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] in "TtZ":
                return
        except OSError:
            return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} did not stop")


def _tail(path, chars=3000):
    return path.read_text()[-chars:] if path.is_file() else ""


def _without_run_id(recs):
    return [{k: v for k, v in r.items() if k != "run"} for r in recs]


def _without_waits(streams: dict) -> dict:
    """Stream states less the seconds each stage entry waited for its decision: a measurement, not state (one
    run waits 0.0 s where another waits 0.004 s), while everything else must be equal."""
    return {
        k: {**st, "stage_log": [{f: v for f, v in e.items() if f != "waited_s"} for e in st.get("stage_log", [])]}
        for k, st in streams.items()
    }


@pytest.mark.slow
def test_run_killed_mid_way_and_resumed_reproduces_decisions_and_weights(
    with_workers, tmp_path, prepared, tokenizer_dir, traj_model
):
    """A real SIGKILL of `litgpt pretrain` (2 dataloader workers) between two decisions; `resume: auto`.

    The workers' lag puts the decisions at batches 4 and 12; the kill lands after the step-8 checkpoint: stage 1
    is replayed (from the checkpoint), stage 2 is decided by the resumed run, each worker stream reads them.
    """
    workers, reference, kill_after = 2, with_workers, "step-00000008"
    out = tmp_path / "killed"
    out.mkdir()
    cfg = config(out, prepared, tokenizer_dir, traj_model, num_workers=workers)
    at_kill = _kill_mid_run(cfg, out, lambda: (out / kill_after / "lit_model.pth").is_file())
    assert kill_after in at_kill and "final" not in at_kill and "step-00000024" not in at_kill, at_kill
    logged = read_decisions(out / "decisions.jsonl")
    assert [r["stage"] for r in logged][:1] == [1]  # stage 1 was decided before the kill
    cfg["resume"] = "auto"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a replayed decision must not fault (nothing is recomputed)
        run_pretrain(cfg)
    # each stage decided once (a recomputed decision would add a line) and equal to the uninterrupted run's:
    # batch, checkpoint scored, observed losses, weights, prediction; only the run id differs
    recs = decisions(out)
    assert _without_run_id(recs) == _without_run_id(decisions(reference)), at_kill
    assert read_data_state(out / "final")["regmixd"]["decisions"] == recs
    streams = read_data_state(out / "final")["streams"]
    assert _without_waits(streams) == _without_waits(read_data_state(reference / "final")["streams"])
    assert _same_final(out, reference), at_kill  # bit-exact: same data, same kernels, restored optimizer


@pytest.mark.slow
def test_resume_replays_logged_decisions_without_the_model(uninterrupted, tmp_path, prepared, tokenizer_dir):
    # both decisions were logged before the kill; with the model gone, only a replay can reproduce them
    out = _resume(tmp_path, uninterrupted, prepared, tokenizer_dir, tmp_path / "no-model", lines=2)
    assert read_data_state(out / "final")["regmixd"]["decisions"] == decisions(uninterrupted)
    assert _same_final(out, uninterrupted)


@pytest.mark.slow
def test_resume_decides_from_a_checkpoint_whose_config_files_a_kill_left_unwritten(
    uninterrupted, tmp_path, prepared, tokenizer_dir, traj_model
):
    # litgpt writes a checkpoint's weights first (renamed into place whole), then hyperparameters.yaml, the
    # tokenizer files and model_config.yaml; a SIGKILL in between (seen in a real kill: model_config.yaml left
    # at 0 bytes) leaves weights that `resume: auto` loads. Killed at step 16, before stage 2 was decided: the
    # resumed run must score that checkpoint as the uninterrupted run did, not fault and keep the mixture in force.
    def damage(step_dir):
        (step_dir / "model_config.yaml").write_text("")
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (step_dir / name).unlink()

    out = _resume(tmp_path, uninterrupted, prepared, tokenizer_dir, traj_model, 1, "step-00000016", damage)
    assert _without_run_id(decisions(out)) == _without_run_id(decisions(uninterrupted))
    assert _same_final(out, uninterrupted)


@pytest.mark.slow
def test_missing_model_keeps_the_current_mixture_and_the_run_finishes(tmp_path, prepared, tokenizer_dir):
    out = tmp_path / "faulty"
    with pytest.warns(UserWarning, match="stage 1 keeps the current mixture") as caught:
        run_pretrain(config(out, prepared, tokenizer_dir, tmp_path / "deleted-model"))
    assert sum("keeps the current mixture" in str(w.message) for w in caught) == 2  # one per switch
    recs = decisions(out)
    assert [r["weights"] for r in recs] == [None, None] and all(
        "no-such" in r["fault"] or "trajectory.json" in r["fault"] for r in recs
    )
    rows = realized_mixture(out / "final")
    assert abs(rows["prose"]["samples"] - rows["code"]["samples"]) <= 1  # 50/50 all run long
    assert (out / "final" / "lit_model.pth").is_file()


@pytest.mark.slow
def test_schedule_yaml_round_trips_through_recipe_into_litgpt_pretrain(tmp_path, prepared, tokenizer_dir):
    """`regmix schedule`'s file -> `regmix recipe` -> a recipe stock `litgpt pretrain` runs, stage by stage."""
    from regmix_plugin.__main__ import main
    from regmix_plugin.formats.schedule import Schedule, ScheduleStage, write_schedule

    stages = [ScheduleStage({"code": 0.25, "prose": 0.75}, 0.5), ScheduleStage({"code": 1.0, "prose": 0.0})]
    write_schedule(tmp_path / "schedule.yaml", Schedule(stages, prediction={"at_schedule": 3.1, "at_best_static": 3.2}))
    template = Path(__file__).resolve().parents[1] / "recipes" / "tiny_cpu.yaml"
    main(
        [
            "recipe",
            "--mixture",
            str(tmp_path / "schedule.yaml"),
            "--template",
            str(template),
            "--out",
            str(tmp_path / "recipe.yaml"),
        ]
    )
    text = (tmp_path / "recipe.yaml").read_text()
    cfg = yaml.safe_load(text)
    assert cfg["data"]["init_args"]["weights"] is None
    assert cfg["data"]["init_args"]["schedule"] == [
        {"until_fraction": 0.5, "weights": {"code": 0.25, "prose": 0.75}},
        {"weights": {"code": 1.0, "prose": 0.0}},
    ]
    assert "# Source code (type: float)" not in text.split("schedule:")[0].split("weights: null")[-1]
    assert "# The run's token budget" in text  # the template's comments stay
    budget = 16 * MICRO * SEQ
    cfg.update(out_dir=str(tmp_path / "run"), tokenizer_dir=str(tokenizer_dir))
    cfg["data"]["init_args"].update(data_path=str(prepared), max_tokens=budget, num_workers=0)
    cfg["train"].update(max_tokens=budget, micro_batch_size=MICRO, global_batch_size=MICRO, save_interval=8)
    cfg["model_config"].update(block_size=SEQ)
    cfg["eval"].update(initial_validation=False, final_validation=False)
    run_pretrain(cfg)
    half = realized_mixture(tmp_path / "run" / "step-00000008")  # end of stage 0: 32 samples at 25/75
    assert (half["code"]["samples"], half["prose"]["samples"]) == (8, 24)
    full = realized_mixture(tmp_path / "run" / "final")  # then 32 samples of code only
    assert (full["code"]["samples"], full["prose"]["samples"]) == (40, 24)


def test_a_bad_objective_or_pessimism_is_refused_when_the_recipe_is_read_not_at_a_switch(tmp_path):
    from regmix_plugin.pretrain.controller import RegMixDController

    with pytest.raises(ValueError, match="objective must be greedy or joint, got 'lookahead'"):
        RegMixDController(str(tmp_path / "m"), str(tmp_path), objective="lookahead")
    with pytest.raises(ValueError, match="pessimism must be a finite number >= 0, got -1"):
        RegMixDController(str(tmp_path / "m"), str(tmp_path), pessimism=-1.0)
    ok = RegMixDController(str(tmp_path / "m"), str(tmp_path), objective="greedy", pessimism=0.0)
    assert (ok.objective, ok.pessimism) == ("greedy", 0.0)


def test_a_model_that_cannot_use_the_observed_losses_is_named_at_construction(tmp_path, prepared, traj_model):
    """A `mixtures`-feature model ignores what the controller observes: one warning naming it and the fix."""
    from regmix_plugin.pretrain.controller import RegMixDController

    model = fit_test_trajectory(prepared, tmp_path / "open-loop", "mixtures")
    with pytest.warns(UserWarning) as caught:
        RegMixDController(str(model), str(tmp_path))
    [w] = [w for w in caught if "RegMixDController" in str(w.message)]
    assert f"the trajectory model '{model}' has `mixtures` features" in str(w.message)
    assert f"regmix fit_trajectory --features losses --out {model}" in str(w.message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a `losses` model, or one not written yet, is taken without a word
        RegMixDController(str(traj_model), str(tmp_path))
        RegMixDController(str(tmp_path / "not-yet"), str(tmp_path))


@pytest.fixture(scope="module")
def losses_model(tmp_path_factory):
    """A `losses`-features GP trajectory model fitted on 24 simulated 3-stage proxies of the RegMix-D ground
    truth (tests/regmixd_truth.py: `fast` saturates early, `slow` keeps paying): its dynamics depend on the state."""
    from regmixd_truth import proxy_records

    from regmix_plugin.commands.fit_trajectory import fit_trajectories
    from regmix_plugin.formats.trajectory_model import load_trajectory_model
    from regmix_plugin.models.trajectory import trajectories_from_records

    out = tmp_path_factory.mktemp("losses-model") / "traj"
    trajs, wd, ld = trajectories_from_records(proxy_records(24, 3, seed=0))
    fit_trajectories(trajs, wd, ld, "val_loss/target", "losses", "gp", out, 3, 0)
    return out, load_trajectory_model(out)


def test_the_observed_losses_change_the_decision(losses_model, tmp_path):
    """The same model, plan and mixture in force; two observed states at the switch into stage 1: `fast`
    already mastered, or never trained. The controller spends stage 1 elsewhere in the first, on `fast` in the
    second. Measured (seeds 0-2 of the candidates): `fast` 0.003-0.008 after mastering it, 0.86-0.90 without."""
    from regmixd_truth import DOMAINS, LOSS_DOMAINS, true_losses

    from regmix_plugin.pretrain.control_plan import ControlPlan
    from regmix_plugin.pretrain.controller import RegMixDController

    path, traj = losses_model

    def decide(stage0: list[float]) -> dict[str, float]:
        ctl = RegMixDController(str(path), str(tmp_path), n_candidates=2000, top_k=16)  # shipped rule: joint, 1
        ctl.plan = ControlPlan(
            bounds=(0.0, 1 / 3, 2 / 3, 1.0),
            stage_samples=(80, 80, 80),
            per_epoch={d: 240 for d in DOMAINS},
            max_epochs=15,
            planned=({d: 1 / 3 for d in DOMAINS},) * 3,
        )
        observed = true_losses([(0.0, 1 / 3, np.array(stage0))], [1 / 3])[0]
        rec = ctl.decide(1, dict(zip(LOSS_DOMAINS, observed, strict=True)), traj)
        assert rec["observed"] == dict(zip(LOSS_DOMAINS, map(float, observed), strict=True))
        assert abs(sum(rec["weights"].values()) - 1) < 1e-9
        return rec["weights"]

    mastered = decide([1.0, 0.0, 0.0])  # stage 0 trained on `fast` only
    fresh = decide([0.0, 0.5, 0.5])  # stage 0 never touched `fast`
    assert mastered["fast"] < 0.1 < 0.5 < fresh["fast"], (mastered, fresh)
    assert mastered["slow"] > fresh["slow"], (mastered, fresh)
