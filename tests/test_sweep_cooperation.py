"""Launchers that share a sweep directory, and runs whose process dies: real launchers, real workers, real kills.

Two `regmix sweep` processes on one directory split the runs through claims and train each exactly once; a
claim left by a killed process is taken over; a worker killed mid-run is replaced and its run retried; a run
that runs out of (CUDA) memory is re-queued instead of being recorded as the mixture's failure; a sweep with a
failed run exits 1 and summarises.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_sweep import DOMAINS, MIXES, _recipe

from regmix_plugin.commands.sweep import EvalArgs, LocalArgs, sweep, sweep_status
from regmix_plugin.formats.claims import claim_path, read_claim
from regmix_plugin.formats.mixture_table import write_mixtures
from regmix_plugin.formats.sweep_records import read_records

pytestmark = pytest.mark.slow
FAST = EvalArgs(points=0, val_tokens=128, batch_size=4)


@pytest.fixture(scope="module")
def coop(tmp_path_factory, prepared, tokenizer_dir):
    root = tmp_path_factory.mktemp("coop")
    write_mixtures(root / "mixtures.csv", MIXES, DOMAINS)
    write_mixtures(root / "three.csv", {r: MIXES[r] for r in ("m2", "m3", "m4")}, DOMAINS)
    return {"root": root, "data": prepared, "recipe": _recipe(root / "proxy.yaml", prepared, tokenizer_dir)}


def _cli(coop, out: Path, *extra: str, mixtures: str = "mixtures.csv") -> list[str]:
    return [
        sys.executable,
        "-m",
        "regmix_plugin",
        "sweep",
        "--mixtures",
        str(coop["root"] / mixtures),
        "--data_path",
        str(coop["data"]),
        "--recipe",
        str(coop["recipe"]),
        "--out_dir",
        str(out),
        "--eval.points",
        "0",
        "--eval.val_tokens",
        "128",
        "--eval.batch_size",
        "4",
        *extra,
    ]


def _counts(stdout: str) -> dict[str, int]:
    m = re.search(r"(\d+) done, (\d+) failed, (\d+) skipped, (\d+) pending", stdout)
    assert m, stdout[-2000:]
    return dict(zip(("done", "failed", "skipped", "pending"), map(int, m.groups()), strict=True))


def test_two_launchers_on_one_directory_train_every_run_exactly_once(coop, tmp_path):
    out = tmp_path / "shared"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            _cli(coop, out, "--local.workers", "1", "--local.threads", "1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    counts = [_counts(o) for o in outputs]
    # every run trained by exactly one of them; each counts the other's runs as skipped
    assert counts[0]["done"] + counts[1]["done"] == len(MIXES), counts
    assert all(c["failed"] == 0 and c["pending"] == 0 and c["done"] + c["skipped"] == len(MIXES) for c in counts), (
        counts,
        [o[-1500:] for o in outputs],
    )
    assert counts[0]["done"] > 0 and counts[1]["done"] > 0, counts  # they really shared the work
    records = read_records(out)
    assert sorted(records) == sorted(MIXES) and all(r.status == "done" for r in records.values())
    assert not list((out / "claims").glob("*.claim"))  # every claim released


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_claims_of_a_killed_process_or_without_heartbeat_are_taken_over(coop, tmp_path):
    out = tmp_path / "stale"
    for run_id, host, pid in (("m1", socket.gethostname(), _dead_pid()), ("m2", "other-host", 1)):
        path = claim_path(out, run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"run_id": run_id, "host": host, "pid": pid, "launcher": "gone", "started": 0}))
    old = time.time() - 3600
    os.utime(claim_path(out, "m2"), (old, old))  # no heartbeat for an hour, on a host we cannot check
    counts = sweep(
        mixtures=coop["root"] / "mixtures.csv",
        data_path=coop["data"],
        recipe=coop["recipe"],
        out_dir=out,
        eval=FAST,
        local=LocalArgs(workers=0, threads=1),
        claim_timeout=60,
    )
    assert counts == {"done": 6, "failed": 0, "skipped": 0, "pending": 0}
    assert read_claim(out, "m1") is None and read_claim(out, "m2") is None


def test_a_live_claim_elsewhere_is_waited_for_not_trained_twice(coop, tmp_path, capsys):
    out = tmp_path / "live"
    path = claim_path(out, "m3")
    path.parent.mkdir(parents=True, exist_ok=True)
    # a claim by this (live) test process, as another launcher's worker would hold it
    path.write_text(
        json.dumps(
            {
                "run_id": "m3",
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "launcher": "other",
                "started": time.time(),
            }
        )
    )
    proc = subprocess.Popen(
        _cli(coop, out, "--local.workers", "0", "--local.threads", "1", mixtures="three.csv"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.time() + 300
    while len(read_records(out)) < 2 and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(3)
    assert "m3" not in read_records(out) and proc.poll() is None  # still waiting for the other launcher
    capsys.readouterr()
    sweep_status(out)
    assert re.search(
        rf"claimed m3: {re.escape(socket.gethostname())} pid {os.getpid()} \(launcher other\), "
        r"heartbeat \d+ s ago \(training\)",
        capsys.readouterr().out,
    )
    path.unlink()  # the other launcher gave up without a record: the run is taken back and trained here
    stdout = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0 and _counts(stdout) == {"done": 3, "failed": 0, "skipped": 0, "pending": 0}


def test_a_killed_worker_is_replaced_and_its_run_retried(coop, tmp_path):
    out = tmp_path / "killed-worker"
    proc = subprocess.Popen(
        _cli(coop, out, "--local.workers", "1", "--local.threads", "1", mixtures="three.csv"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline, victim = time.time() + 300, None
    while victim is None and time.time() < deadline:
        held = read_claim(out, "m2") if (out / "claims").exists() else None
        if held is not None and held[0].pid > 0:
            victim = held[0].pid
        time.sleep(0.05)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)  # the worker process training m2, mid-run
    stdout = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, stdout[-2000:]
    assert re.search(r"worker 0 died \(exit code -9\) during m2; log: .*m2\.log; retrying", stdout), stdout[-2000:]
    assert _counts(stdout) == {"done": 3, "failed": 0, "skipped": 0, "pending": 0}
    assert read_records(out)["m2"].status == "done"


def test_out_of_memory_requeues_the_run_and_never_blames_the_mixture(coop, tmp_path):
    out = tmp_path / "oom"
    out.mkdir()
    (out / ".test-oom.m4").touch()  # the next attempt of m4 raises torch.cuda.OutOfMemoryError
    proc = subprocess.run(
        _cli(coop, out, "--local.workers", "2", "--local.threads", "1", mixtures="three.csv"),
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "m4 ran out of GPU memory; re-queued with 1 run(s)" in proc.stdout
    assert _counts(proc.stdout) == {"done": 3, "failed": 0, "skipped": 0, "pending": 0}
    assert read_records(out)["m4"].status == "done" and not (out / ".test-oom.m4").exists()


def test_a_failed_run_makes_the_sweep_exit_1_with_a_summary(coop, tmp_path):
    bad = tmp_path / "bad.csv"
    write_mixtures(bad, {"m1": MIXES["m1"], "bad": {"code": 0.0, "prose": 0.0, "tiny": 1.0}}, DOMAINS)
    cmd = _cli(coop, tmp_path / "s", "--local.workers", "0", "--local.threads", "1")
    cmd[cmd.index("--mixtures") + 1] = str(bad)
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "1 done, 1 failed, 0 skipped, 0 pending" in proc.stdout
    assert re.search(r"val_loss/code over 1 done runs: best m1 \d+\.\d+, worst m1 \d+\.\d+, range 0\.0000", proc.stdout)
    assert re.search(r"  failed bad: ValueError: with --data.max_tokens", proc.stdout)
