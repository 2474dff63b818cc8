"""`regmix sweep`: real `litgpt pretrain` proxies (12 steps of a 37k-parameter model) on the tiny corpus.

The local sweep runs once per module (2 spawned workers, checkpoints kept) and the other tests compare
against it: the submitit path, `regmix evaluate` on its checkpoints, the refused changes of set-up.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import pretrain_config

from regmix_plugin.commands.evaluate import evaluate
from regmix_plugin.commands.sweep import EvalArgs, LocalArgs, sweep, sweep_status
from regmix_plugin.formats.mixture_table import write_mixtures

DOMAINS = ["code", "prose", "tiny"]
MIXES = {
    "m1": {"code": 0.5, "prose": 0.5, "tiny": 0.0},
    "m2": {"code": 0.2, "prose": 0.5, "tiny": 0.3},
    "m3": {"code": 0.0, "prose": 1.0, "tiny": 0.0},
    "m4": {"code": 0.7, "prose": 0.1, "tiny": 0.2},
    "m5": {"code": 1.0, "prose": 0.0, "tiny": 0.0},
    "m6": {"code": 0.3, "prose": 0.3, "tiny": 0.4},
}
# 12 steps x 4 x 32 tokens = 48 samples; tiny has 114 train blocks, so tiny = 1 is 48 > 0.3 x 114 samples
BAD = {"bad": {"code": 0.0, "prose": 0.0, "tiny": 1.0}}
EVAL = dict(eval=EvalArgs(points=2, val_tokens=256, batch_size=4))  # checkpoints at steps 4 and 8, then final


def _recipe(path: Path, prepared, tokenizer_dir, **train) -> Path:
    cfg = pretrain_config(Path("unused"), prepared, tokenizer_dir, None, max_epochs=0.3)
    cfg["train"].update(max_tokens=12 * 4 * 32, **train)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _table(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {r["run_id"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def env(tmp_path_factory, prepared, tokenizer_dir):
    root = tmp_path_factory.mktemp("sweep")
    write_mixtures(root / "mixtures.csv", {**MIXES, **BAD}, DOMAINS)
    write_mixtures(root / "good.csv", MIXES, DOMAINS)
    return {
        "root": root,
        "data": prepared,
        "tok": tokenizer_dir,
        "recipe": _recipe(root / "proxy.yaml", prepared, tokenizer_dir),
    }


@pytest.fixture(scope="module")
def local_sweep(env):
    out = env["root"] / "local"
    counts = sweep(
        mixtures=env["root"] / "mixtures.csv",
        data_path=env["data"],
        recipe=env["recipe"],
        out_dir=out,
        local=LocalArgs(workers=2),
        keep_checkpoints=True,
        **EVAL,
    )
    return out, counts


@pytest.mark.slow
def test_local_sweep_has_every_loss_at_every_eval_point_and_isolates_a_failure(env, local_sweep, capsys):
    out, counts = local_sweep
    assert counts == {"done": 6, "failed": 1, "skipped": 0, "pending": 0}
    table = _table(out / "results.csv")
    assert list(table) == ["m1", "m2", "m3", "m4", "m5", "m6", "bad"]
    loss_cols = [f"val_loss/{d}{at}" for d in DOMAINS for at in ("", "@512", "@1024")]
    for run_id, w in MIXES.items():
        row = table[run_id]
        assert row["status"] == "done" and row["tokens"] == "1536" and row["seed"] == "42" and row["error"] == ""
        assert {d: float(row[f"weight/{d}"]) for d in DOMAINS} == w
        assert all(math.isfinite(float(row[c])) and 0 < float(row[c]) < 10 for c in loss_cols)
        assert float(row["val_loss/prose"]) < float(row["val_loss/prose@512"])  # it learned something
    bad = table["bad"]
    assert bad["status"] == "failed" and "max_epochs" in bad["error"] and all(bad[c] == "" for c in loss_cols)
    rec = json.loads((out / "runs" / "bad.json").read_text())
    assert "would repeat more than --data.max_epochs" in rec["log_tail"]
    assert (out / "runs" / "m1.log").stat().st_size > 0
    # re-running skips everything that is recorded; --status reads without running
    capsys.readouterr()
    again = sweep(
        mixtures=env["root"] / "mixtures.csv",
        data_path=env["data"],
        recipe=env["recipe"],
        out_dir=out,
        local=LocalArgs(workers=2),
        keep_checkpoints=True,
        retry_failed=False,
        **EVAL,
    )
    assert again == {"done": 0, "failed": 0, "skipped": 7, "pending": 0}
    assert _table(out / "results.csv") == table
    capsys.readouterr()
    assert sweep_status(out) == {"done": 6, "failed": 1, "pending": 0}
    printed = capsys.readouterr().out
    assert "7 runs: 6 done, 1 failed, 0 pending" in printed and "  bad: ValueError: with --data.max_tokens" in printed
    assert re.search(r"usage over 6 done runs: cpu; tokens/s median [\d,]+ \(min [\d,]+, max [\d,]+\)\n", printed)
    assert re.search(r"  m6: cpu, [\d,]+ tokens/s, loss plain, eager\n", printed)


@pytest.mark.slow
def test_sweep_losses_are_regmix_evaluate_on_the_checkpoints(env, local_sweep, tmp_path):
    out, _ = local_sweep
    row = _table(out / "results.csv")["m2"]
    final = evaluate(out / "runs" / "m2" / "final", env["data"], tmp_path / "losses.csv", val_tokens=256, batch_size=4)
    at512 = evaluate(out / "runs" / "m2" / "step-00000004", env["data"], None, val_tokens=256, batch_size=4)
    assert final == {d: float(row[f"val_loss/{d}"]) for d in DOMAINS}
    assert at512 == {d: float(row[f"val_loss/{d}@512"]) for d in DOMAINS}


@pytest.mark.slow
def test_submitit_local_executor_gives_the_same_table(env, local_sweep):
    out = env["root"] / "submitit"
    counts = sweep(
        mixtures=env["root"] / "mixtures.csv",
        data_path=env["data"],
        recipe=env["recipe"],
        out_dir=out,
        launcher="slurm",
        slurm={"cluster": "local", "tasks": 2, "cpus_per_task": 1},
        **EVAL,
    )
    assert counts == {"done": 6, "failed": 1, "skipped": 0, "pending": 0}
    local, slurm = _table(local_sweep[0] / "results.csv"), _table(out / "results.csv")
    assert list(slurm) == list(local)
    for run_id in local:
        drop = {"wall_s"}
        assert {k: v for k, v in slurm[run_id].items() if k not in drop} == {
            k: v for k, v in local[run_id].items() if k not in drop
        }
    assert not (out / "runs" / "m1").exists()  # no checkpoints kept unless asked


@pytest.mark.slow
def test_kill_9_then_rerun_completes_each_run_exactly_once(env, tmp_path):
    out = tmp_path / "killed"
    args = [
        "--mixtures",
        str(env["root"] / "good.csv"),
        "--data_path",
        str(env["data"]),
        "--recipe",
        str(env["recipe"]),
        "--out_dir",
        str(out),
        "--local.workers",
        "1",
        "--eval.points",
        "2",
        "--eval.val_tokens",
        "256",
        "--eval.batch_size",
        "4",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "regmix_plugin", "sweep", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.time() + 240
    while len(list((out / "runs").glob("m*.json"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.3)  # a rename already inside the kernel when the worker got its SIGKILL still completes
    at_kill = sorted(p.name for p in (out / "runs").glob("*.json"))
    time.sleep(2)
    before = {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")}
    assert sorted(before) == at_kill, "the worker must die with the sweep (no orphan writing records)"
    assert 2 <= len(before) < 6, "kill the sweep part-way"
    # a kill between a run's record and the deletion of its out_dir leaves that dir: make sure one exists
    (out / "runs" / Path(sorted(before)[0]).stem / "final").mkdir(parents=True, exist_ok=True)
    # the same sweep again, trained in this process (workers=0) to save a worker start-up
    counts = sweep(
        mixtures=env["root"] / "good.csv",
        data_path=env["data"],
        recipe=env["recipe"],
        out_dir=out,
        local=LocalArgs(workers=0, threads=1),
        **EVAL,
    )
    assert counts["skipped"] == len(before) and counts["done"] == 6 - len(before) and counts["failed"] == 0
    assert all((out / "runs" / name).read_bytes() == data for name, data in before.items())  # finished runs kept
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["run_id"] for r in rows) == sorted(MIXES)  # each run exactly once
    assert all(r["status"] == "done" and math.isfinite(float(r["val_loss/tiny@1024"])) for r in rows)
    assert sorted(p.name for p in (out / "runs").iterdir() if p.is_dir()) == []
    assert not list(out.rglob("*.tmp"))


@pytest.mark.slow
def test_diverged_run_is_recorded_failed(env, tmp_path):
    cfg = yaml.safe_load(env["recipe"].read_text())
    cfg["optimizer"]["init_args"]["lr"] = float("inf")
    recipe = tmp_path / "inf.yaml"
    recipe.write_text(yaml.safe_dump(cfg))
    write_mixtures(tmp_path / "one.csv", {"m1": MIXES["m1"]}, DOMAINS)
    counts = sweep(
        mixtures=tmp_path / "one.csv",
        data_path=env["data"],
        recipe=recipe,
        out_dir=tmp_path / "s",
        local=LocalArgs(workers=0, threads=1),
        **EVAL,
    )
    assert counts["failed"] == 1
    rec = json.loads((tmp_path / "s" / "runs" / "m1.json").read_text())
    assert rec["status"] == "failed" and rec["error"].startswith("diverged: RuntimeError: The total norm")


def _refused(env, out, match, **kw):
    args = dict(mixtures=env["root"] / "mixtures.csv", data_path=env["data"], recipe=env["recipe"], out_dir=out, **EVAL)
    args.update(kw)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        sweep(**args)
    assert not (Path(out) / "runs").exists(), "a refused sweep must start no run"


def test_bad_inputs_each_get_their_message_and_start_no_run(env, tmp_path, tokenizer_dir):
    out = tmp_path / "never"
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("run_id,weight/code,weight/prose,weight/web\nr1,0.5,0.5,0\n")
    _refused(
        env, out, r"missing column\(s\) for domain\(s\) tiny(.|\n)*domain\(s\) web that the prepared", mixtures=wrong
    )
    wrong.write_text("run_id,weight/code,weight/prose,weight/tiny\nr1,0.5000,0.4000,0.0000\n")
    _refused(env, out, r"row 1 \(run_id r1\)(.|\n)*sum to 0\.9", mixtures=wrong)
    data = tmp_path / "data"
    shutil.copytree(env["data"], data)
    shutil.rmtree(data / "code" / "train")
    _refused(env, out, r"domain 'code': .*code/train/index.json is missing", data_path=data)
    from regmix_plugin.tokenizer import train_tokenizer

    other = train_tokenizer(["completely different text for another vocabulary"] * 4, tmp_path / "tok2", 300)
    _refused(env, out, r"tokenizer mismatch: --tokenizer_dir", tokenizer_dir=other)
    cfg = yaml.safe_load(env["recipe"].read_text())
    cfg["train"]["bogus_key"] = 1
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    _refused(env, out, r"`litgpt pretrain` would reject the recipe(.|\n)*bogus_key", recipe=tmp_path / "bad.yaml")
    _refused(
        env,
        out,
        r"--eval.points 20 needs at least 21 optimizer steps; the recipe trains 12",
        eval=EvalArgs(points=20, val_tokens=256, batch_size=4),
    )


@pytest.mark.slow
def test_changed_setup_under_an_existing_sweep_is_refused(env, local_sweep, tmp_path):
    out, _ = local_sweep
    cfg = yaml.safe_load(env["recipe"].read_text())
    cfg["optimizer"]["init_args"]["lr"] = 2e-3
    (tmp_path / "lr.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=r"different set-up \(changed: recipe\)(.|\n)*poison"):
        sweep(
            mixtures=env["root"] / "mixtures.csv",
            data_path=env["data"],
            recipe=tmp_path / "lr.yaml",
            out_dir=out,
            **EVAL,
        )
    with pytest.raises(ValueError, match=r"different set-up \(changed: eval\)"):
        sweep(
            mixtures=env["root"] / "mixtures.csv",
            data_path=env["data"],
            recipe=env["recipe"],
            out_dir=out,
            eval=EvalArgs(points=2, val_tokens=512, batch_size=4),
        )
    changed = tmp_path / "changed.csv"
    write_mixtures(changed, {"m1": {"code": 0.4, "prose": 0.6, "tiny": 0.0}}, DOMAINS)
    with pytest.raises(ValueError, match=r"changes the weights of run\(s\) already recorded .*: m1"):
        sweep(mixtures=changed, data_path=env["data"], recipe=env["recipe"], out_dir=out, **EVAL)


@pytest.mark.slow
def test_fit_trajectory_on_this_small_sweep_falls_back_to_leave_one_out_like_fit(local_sweep, tmp_path, capsys):
    from regmix_plugin.__main__ import main

    out, _ = local_sweep
    sweep_dir = tmp_path / "sweep"  # the records only: the runs below are dropped from a copy
    (sweep_dir / "runs").mkdir(parents=True)
    for rec in (out / "runs").glob("*.json"):
        shutil.copy(rec, sweep_dir / "runs" / rec.name)
    capsys.readouterr()
    # 6 finished real proxies: too few for the default 5 folds (2 runs each); `regmix fit` says the same words
    note = (
        "note: 6 runs are too few for 5-fold CV (it needs 10, 2 per fold); using leave-one-out CV instead (6 "
        "folds of one run; Spearman over the pooled predictions)"
    )
    main(["fit_trajectory", "--sweep", str(sweep_dir), "--target", "val_loss/*", "--out", str(tmp_path / "traj")])
    assert capsys.readouterr().out.splitlines()[0] == note
    cv = json.loads((tmp_path / "traj" / "cv.json").read_text())
    assert (cv["folds"], cv["leave_one_out"], cv["n_runs"]) == (6, True, 6)
    for scores in cv["candidates"].values():
        assert [(f["n_train_runs"], f["n_test_runs"]) for f in scores["folds"]] == [(5, 1)] * 6
    assert len(json.loads((tmp_path / "traj" / "trajectory.json").read_text())["members"]) == 6
    main(
        [
            "fit",
            "--results",
            str(out / "results.csv"),
            "--target",
            "val_loss/*",
            "--regressor",
            "linear",
            "--out",
            str(tmp_path / "model"),
        ]
    )
    assert capsys.readouterr().out.splitlines()[0] == note
    # fewer than 4 finished runs: the one message `regmix fit` gives too
    for name in ("m1", "m2", "m3"):
        (sweep_dir / "runs" / f"{name}.json").unlink()
    with pytest.raises(SystemExit) as exit_:
        main(["fit_trajectory", "--sweep", str(sweep_dir), "--out", str(tmp_path / "t2")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"regmix fit_trajectory: error: fitting needs at least 4 runs with a finite target (leave-one-out CV below "
        f"10), the sweep {str(sweep_dir)!r} has 3: add proxy runs\n"
    )
