"""`regmix sweep --active`: the loop on real `litgpt pretrain` proxies (test_sweep's 12-step, 37k-parameter model).

4 random starting runs, then rounds of 2 proposals up to a budget of 8: each round trained, refitted, reported;
the proposals inside the constraints, never a duplicate; killed with SIGKILL mid-round and re-run, each run trained
exactly once and the round's proposal reused, not proposed again; two loops started together on one directory
training each run once and adding each round once; the loop under submitit's local executor.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from test_sweep import DOMAINS, _recipe

from regmix_plugin.commands.sweep import EvalArgs, LocalArgs, sweep
from regmix_plugin.commands.sweep.active import ActiveArgs, observed, resolution, trust_region
from regmix_plugin.formats.manifest import read_manifest
from regmix_plugin.formats.mixture_table import read_mixtures, write_mixtures
from regmix_plugin.formats.sweep_records import read_records
from regmix_plugin.weights import ConstraintArgs, constraint_bounds, train_sizes

pytestmark = pytest.mark.slow
FAST = EvalArgs(points=0, val_tokens=128, batch_size=4)
# Both bind: the target is prose's loss, which wants prose high (the prior is prose-heavy too), and tiny holds few
# blocks, so the epoch bound at 1536 tokens (the proxy's length) caps it below 1.
CONSTRAINTS = ConstraintArgs(target_tokens=1536, max_epochs=0.3, block_size=32, max_weight={"prose": 0.6})
LOOP = ActiveArgs(initial=4, batch=2, budget=8, target="val_loss/prose", constraints=CONSTRAINTS, n_candidates=2000)


@pytest.fixture(scope="module")
def env(tmp_path_factory, prepared, tokenizer_dir):
    root = tmp_path_factory.mktemp("active")
    return {"root": root, "data": prepared, "recipe": _recipe(root / "proxy.yaml", prepared, tokenizer_dir)}


def _run(env, out, loop=LOOP, **kw):
    return sweep(
        mixtures=out / "mixtures.csv",
        data_path=env["data"],
        recipe=env["recipe"],
        out_dir=out,
        eval=FAST,
        local=LocalArgs(workers=0, threads=1),
        active=True,
        loop=loop,
        **kw,
    )


def _check_rows(env, out, n=8):
    """Every row of the sweep's mixtures: inside each constraint, unique, and trained once to a done record."""
    rows = read_mixtures(out / "mixtures.csv", "--mixtures")
    W = rows.weights
    assert len(set(rows.ids)) == len(rows.ids) == n
    assert len({tuple(np.round(w, 4)) for w in W}) == n, "no mixture twice"
    assert np.allclose(W.sum(1), 1.0, atol=1e-9) and (W >= 0).all()
    assert (W[:, rows.domains.index("prose")] <= 0.6 + 1e-9).all()
    lower, upper = constraint_bounds(
        rows.domains, CONSTRAINTS, train_sizes(rows.domains, 32, env["data"], read_manifest(env["data"]).train_tokens())
    )
    assert (upper + 1e-9 >= W).all() and (lower - 1e-9 <= W).all() and upper.min() < 1, upper
    records = read_records(out)
    assert sorted(records) == sorted(rows.ids) and all(r.status == "done" for r in records.values())
    return rows


def test_active_loop_trains_rounds_of_proposals_up_to_the_budget(env, capsys):
    out = env["root"] / "loop"
    counts = _run(env, out)
    printed = capsys.readouterr().out
    assert counts == {"done": 8, "failed": 0, "skipped": 0, "pending": 0, "rounds": 2, "stopped": "budget"}
    rows = _check_rows(env, out)
    assert rows.ids == [f"mix-{i:04d}" for i in range(1, 5)] + ["round01-0001", "round01-0002"] + [
        "round02-0001",
        "round02-0002",
    ]
    lines = re.findall(
        r"active round (\d): (\d) runs; CV Spearman (\S+); optimum predicted (\S+) \+- (\S+) .* moved (\S+)", printed
    )
    assert [(k, n) for k, n, *_ in lines] == [("0", "4"), ("1", "6"), ("2", "8")]
    assert lines[0][-1] == "-" and all(float(m) >= 0 for *_, m in lines[1:])
    state = json.loads((out / "active.json").read_text())
    for k, n, rho, pred, std, moved in lines:
        rnd = state["rounds"][k]
        assert rnd["runs"] == int(n) and f"{rnd['cv_spearman']:.3f}" == rho and f"{rnd['std']:.4f}" == std
        assert f"{rnd['predicted']:.4f}" == pred and moved == ("-" if rnd["moved"] is None else f"{rnd['moved']:.4f}")
        model = json.loads((out / "active" / f"round-0{k}" / "model" / "model.json").read_text())
        assert model["regressor"] == "gp" and model["n_runs"] == int(n) and model["target"] == {"val_loss/prose": 1.0}
    # each round's trust region (the next proposals are searched in it) is the replay of TuRBO's rules on the results
    for k in ("0", "1", "2"):
        region = trust_region(*observed(out / "results.csv", LOOP), LOOP, int(k), len(DOMAINS))
        assert state["rounds"][k]["trust_length"] == region.length
        assert f"next proposals in the trust region L {region.length:g}" in printed
    # the best measured target so far, and the plot of every round
    assert [state["rounds"][k]["best_observed"] for k in "012"] == sorted(
        [state["rounds"][k]["best_observed"] for k in "012"], reverse=True
    )
    assert (out / "active" / "rounds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the move is the L1 between consecutive rounds' optima
    o1, o2 = state["rounds"]["1"]["optimum"], state["rounds"]["2"]["optimum"]
    assert state["rounds"]["2"]["moved"] == pytest.approx(sum(abs(o1[d] - o2[d]) for d in DOMAINS), abs=1e-5)
    # re-run: nothing left to train or propose
    again = _run(env, out)
    assert again["done"] == 0 and again["skipped"] == 8 and read_mixtures(out / "mixtures.csv", "m").ids == rows.ids
    # the stopping rule: with eps and delta above every move and std seen, a larger budget stops at once (round 2
    # follows two moves below eps); with eps below the moves it would go on
    moves = [state["rounds"][k]["moved"] for k in ("1", "2")]
    stds = [state["rounds"][k]["std"] for k in ("1", "2")]
    loose = dataclasses.replace(LOOP, budget=12, eps=max(moves) * 1.01, delta=max(stds) * 1.01)
    stop = _run(env, out, loop=loose)
    assert stop["stopped"] == "converged" and stop["rounds"] == 2 and stop["done"] == 0
    assert read_mixtures(out / "mixtures.csv", "m").ids == rows.ids  # nothing proposed


def _cli(env, out) -> list[str]:
    """`regmix sweep --active` with LOOP's settings, as a user types it (one in-process launcher, one thread)."""
    c = CONSTRAINTS
    return [
        sys.executable, "-m", "regmix_plugin", "sweep", "--active",
        "--mixtures", str(out / "mixtures.csv"), "--data_path", str(env["data"]), "--recipe", str(env["recipe"]),
        "--out_dir", str(out), "--local.workers", "0", "--local.threads", "1",
        "--eval.points", "0", "--eval.val_tokens", "128", "--eval.batch_size", "4",
        "--loop.initial", "4", "--loop.batch", "2", "--loop.budget", "8", "--loop.target", "val_loss/prose",
        "--loop.n_candidates", "2000", "--loop.constraints.target_tokens", str(c.target_tokens),
        "--loop.constraints.max_epochs", str(c.max_epochs), "--loop.constraints.block_size", "32",
        "--loop.constraints.max_weight", json.dumps(c.max_weight),
    ]  # fmt: skip


def test_sigkill_mid_round_then_rerun_trains_each_run_once_and_reuses_the_proposal(env):
    out = env["root"] / "killed"
    proc = subprocess.Popen(
        _cli(env, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:  # mid-round 1: proposed, one of its two runs done
        if len(list((out / "runs").glob("round01-*.json"))) >= 1:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.3)
    before = {p.stem: p.read_bytes() for p in (out / "runs").glob("*.json")}
    proposed = read_mixtures(out / "mixtures.csv", "m").as_dict()
    assert 5 <= len(before) < 8 and [r for r in proposed if r.startswith("round01-")], "kill it mid-round 1"
    counts = _run(env, out)
    assert counts["stopped"] == "budget" and counts["skipped"] == len(before)
    assert counts["done"] == 8 - len(before) and counts["failed"] == 0  # the rest, each trained once here
    assert all((out / "runs" / f"{r}.json").read_bytes() == b for r, b in before.items())  # none trained again
    rows = _check_rows(env, out)
    after = rows.as_dict()
    # (appending re-writes the earlier rows as read, renormalised: equal within the sweep's 1e-9 "same mixture")
    reused = all(after[r][d] == pytest.approx(v, abs=1e-9) for r, w in proposed.items() for d, v in w.items())
    assert reused, "the written proposal is reused, not re-proposed"
    assert sum(r.startswith("round01-") for r in rows.ids) == 2 and sum(r.startswith("round02-") for r in rows.ids) == 2


IDS = [f"mix-{i:04d}" for i in range(1, 5)] + [f"round0{k}-000{j}" for k in (1, 2) for j in (1, 2)]


def _fitted_on_their_runs(out, runs=(4, 6, 8)):
    """Each round's model was fitted on exactly the runs its line counts (none still training, none missing)."""
    rounds = json.loads((out / "active.json").read_text())["rounds"]
    assert {k: r["runs"] for k, r in rounds.items()} == {str(k): n for k, n in enumerate(runs)}
    for k, rnd in rounds.items():
        model = json.loads((out / "active" / f"round-0{k}" / "model" / "model.json").read_text())
        assert model["n_runs"] == rnd["runs"], (k, model["n_runs"], rnd["runs"])


def test_two_cooperating_loops_train_each_run_once_and_add_each_round_once(env):
    out = env["root"] / "coop"
    procs = [
        subprocess.Popen(
            _cli(env, out),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-1500:] for o in outputs]
    # the initial draw is made once, each round's proposals are added once: initial + rounds x batch rows
    assert sum(o.count("active: drew 4 initial mixtures") for o in outputs) == 1
    rows = _check_rows(env, out)
    assert rows.ids == IDS
    # every run trained by exactly one of them (one record each, and the trainings they report add up to 8)
    summaries = [[tuple(map(int, m)) for m in re.findall(r"sweep \S+: (\d+) done, (\d+) failed", o)] for o in outputs]
    done = [sum(d for d, _ in s) for s in summaries]
    assert sum(done) == 8 and min(done) > 0, summaries  # and they really shared the work
    assert all(f == 0 for s in summaries for _, f in s), summaries
    assert not list((out / "claims").glob("*.claim"))
    # each round proposed by one of them only (under the lock; unlocked, both propose, and here both fits are
    # equal, so the file alone would not show it)
    assert sum(o.count("\nproposed 2 mixtures") for o in outputs) == 2, outputs
    # each reports the rounds it fitted or read (a loop that finds the next round already appended trains it
    # before its line); a round both report has one line: fitted once, shared through active.json
    lines = [dict(re.findall(r"active round (\d): (.*)", o)) for o in outputs]
    assert {**lines[0], **lines[1]}.keys() == {"0", "1", "2"} and all("2" in line for line in lines)
    assert all(lines[0][k] == lines[1][k] for k in lines[0].keys() & lines[1].keys()), lines
    assert [re.match(r"(\d) runs", {**lines[0], **lines[1]}[k]).group(1) for k in "012"] == ["4", "6", "8"]
    assert all("active: stopped (budget) after round 2 with 8 runs" in o for o in outputs)
    _fitted_on_their_runs(out)


def test_a_round_appended_while_this_loop_trained_is_trained_before_it_is_fitted(env, tmp_path):
    """The interleaving the test above meets by chance, replayed in order with the real launcher: loop B's launch
    was planned from the 4 initial rows, and while it ran, loop A fitted round 0 and appended round 1. Loop B's
    launcher then also leaves results.csv as a launcher a round behind would: without round 1."""
    from regmix_plugin.commands.sweep.active import active_loop
    from regmix_plugin.formats.sweep_records import write_table

    out, loop = env["root"] / "late", dataclasses.replace(LOOP, budget=6)
    plain = functools.partial(
        sweep,
        data_path=env["data"],
        recipe=env["recipe"],
        out_dir=out,
        eval=FAST,
        local=LocalArgs(workers=0, threads=1),
    )

    class Stopped(Exception):
        pass

    def loop_a():  # trains the initial rows, then stops (killed) right after round 1 is appended
        if (out / "active.json").is_file() and json.loads((out / "active.json").read_text())["rounds"]:
            raise Stopped
        return plain(mixtures=out / "mixtures.csv")

    with pytest.raises(Stopped):
        active_loop(out / "mixtures.csv", env["data"], out, loop, loop_a)
    initial = read_mixtures(out / "mixtures.csv", "m")
    assert len(initial.ids) == 6 and len(read_records(out)) == 4
    write_mixtures(tmp_path / "planned.csv", {r: initial.as_dict()[r] for r in initial.ids[:4]}, initial.domains)
    plans = [tmp_path / "planned.csv", out / "mixtures.csv"]

    def loop_b():  # then, as a launcher a round behind would, results.csv is rewritten with the initial rows only
        counts = plain(mixtures=plans.pop(0))
        write_table(out / "results.csv", IDS[:4], read_records(out))
        return counts

    counts = active_loop(out / "mixtures.csv", env["data"], out, loop, loop_b)
    assert counts == {"done": 2, "failed": 0, "skipped": 4, "pending": 0, "rounds": 1, "stopped": "budget"}
    # round 1 trained before it was fitted, and fitted on its own table (all 6 runs), not on the stale results.csv
    _fitted_on_their_runs(out, runs=(4, 6))


def test_active_loop_under_the_submitit_local_executor(env, capsys):
    out = env["root"] / "slurm"
    slurm = {"cluster": "local", "tasks": 2, "cpus_per_task": 1}
    # budget 6: the initial runs and one proposed round (each array job starts fresh interpreters: ~10 s a round)
    counts = _run(env, out, loop=dataclasses.replace(LOOP, budget=6), launcher="slurm", slurm=slurm)
    assert counts == {"done": 6, "failed": 0, "skipped": 0, "pending": 0, "rounds": 1, "stopped": "budget"}
    assert _check_rows(env, out, n=6).ids == IDS[:6]
    _fitted_on_their_runs(out, runs=(4, 6))
    # each round's runs went through submitit: one array job of 2 tasks per round
    printed = capsys.readouterr().out
    assert len(re.findall(r"submitted 2 task\(s\)", printed)) == 2
    assert [int(n) for n in re.findall(r"sweep \S+: (\d+) done, 0 failed", printed)] == [4, 2]


def test_bad_loop_settings_are_refused_before_anything_runs(env, tmp_path):
    with pytest.raises(ValueError) as e:
        sweep(
            mixtures=tmp_path / "m.csv",
            data_path=env["data"],
            recipe=env["recipe"],
            out_dir=tmp_path / "o",
            active=True,
            loop=ActiveArgs(initial=2, batch=0, budget=1, regressor="linear", eps=-1),
        )
    msg = str(e.value)
    assert "--loop.initial must be >= 4" in msg and "--loop.batch must be >= 1" in msg
    assert "--loop.regressor must be one of ['gp', 'ensemble']" in msg and "--loop.eps" in msg
    assert not (tmp_path / "m.csv").exists() and not (tmp_path / "o").exists()


def test_resolution_is_the_median_nearest_neighbour_gap():
    C = np.array([[0.0, 1.0], [0.1, 0.9], [0.5, 0.5], [0.9, 0.1]])
    # nearest gaps in L1: 0.2, 0.2, 0.8, 0.8
    assert resolution(C) == pytest.approx(0.5)
