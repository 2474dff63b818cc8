"""Online RegMix-D on several ranks and workers: switches in one unit everywhere, and faults in the record.

The 2-rank run is real processes: stock `litgpt pretrain` under `torchrun --nproc_per_node 2` (DDP over gloo
through the test hook ``litgpt_compat.ddp_instead_of_fsdp_for_tests``: Fabric refuses FSDP on CPU), 2 dataloader
workers per rank, the controller making real decisions with a fitted trajectory model.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PLAN, regmixd_config

import regmix_plugin
from regmix_plugin.commands.inspect_run import all_streams, read_data_state, stage_counts, stage_rows
from regmix_plugin.litgpt_compat import run_pretrain, write_config

STEPS, MICRO, WORKERS, RANKS = 24, 4, 2, 2
#: Stream samples at which stages 1 and 2 begin: 24 rank batches over 2 workers = 48 samples per stream.
STARTS = [0, 16, 32]
#: The first rank batch of stages 1 and 2 (worker 0's): (16 // 4) * 2 workers, (32 // 4) * 2.
SWITCH = [8, 16]
LAG = WORKERS * 2  # torch's default prefetch_factor
#: Long enough that a real decision (~1 s here) never runs out, short enough that a stall fails fast.
WAIT_S = 30.0


@pytest.mark.parametrize(("world", "workers"), [(1, 0), (2, 0), (1, 2), (2, 2)])
def test_switch_batch_is_where_every_ranks_streams_enter_the_stage(prepared, world, workers):
    """The batch :class:`StreamLayout` names for a stage end is the first batch a real loader serves from that
    stage, on every rank (what the controller decides by), for ranks and worker processes alike."""
    from litdata.utilities.env import _DistributedEnv

    from regmix_plugin.pretrain.mixture_data import MixtureData

    batch, rank_batches = 2, 12
    schedule = [{"until_fraction": 0.25, "weights": PLAN}, {"until_fraction": 0.5, "weights": PLAN}, {"weights": PLAN}]
    for rank in range(world):
        dm = MixtureData(
            data_path=prepared, schedule=schedule, max_tokens=rank_batches * world * batch * 32, num_workers=workers
        )
        dm.connect(batch_size=batch, max_seq_length=32)
        dm.setup()
        loader = dm.train_dataloader()
        loader.dataset.distributed_env = _DistributedEnv(world_size=world, global_rank=rank, num_nodes=1)
        assert dm.check_budget(world) == rank_batches  # re-placed for this world size (the stream shares the stages)
        layout = dm.layout(world)
        first = {}
        for i, _ in enumerate(itertools.islice(loader, rank_batches)):
            stage = loader._states[i % layout.streams_per_rank]["stage"]  # the stage of the batch's last sample
            first.setdefault(stage, i)
        ends = [st.end for st in dm.stages[:-1]]
        assert [first[k] for k in (1, 2)] == [layout.switch_batch(e) for e in ends], (rank, ends, first)


def _decisions(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "decisions.jsonl").read_text().splitlines()]


def _nonzero(w: dict) -> dict:
    return {d: v for d, v in w.items() if v > 0}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, prepared, tokenizer_dir, traj_model):
    """``(out_dir, wall seconds)`` of a real 2-process `litgpt pretrain` with RegMixDController."""
    out = tmp_path_factory.mktemp("multirank") / "run"
    cfg = regmixd_config(
        out, prepared, tokenizer_dir, traj_model, STEPS, num_workers=WORKERS, devices=RANKS, wait_timeout_s=WAIT_S
    )
    path = write_config(cfg, out / "pretrain_config.yaml")
    root = Path(regmix_plugin.__file__).resolve().parents[1]
    pypath = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])  # the ranks import this checkout
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pypath}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={RANKS}"]
    start = time.monotonic()
    with open(out / "torchrun.log", "w") as log:
        proc = subprocess.run(
            [*launch, str(root / "tests" / "multirank_pretrain.py"), str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=400,
        )
    wall = time.monotonic() - start
    assert proc.returncode == 0, (out / "torchrun.log").read_text()[-4000:]
    return out, wall


@pytest.mark.slow
def test_two_ranks_switch_together_on_the_decision_made_once(two_ranks, measured):
    out, wall = two_ranks
    measured(f"2-rank x 2-worker torchrun litgpt pretrain with 2 controller switches: {wall:.1f} s wall")
    recs = _decisions(out)
    # decided once per stage (rank 1 reads rank 0's files; a decision on every rank would add lines), by the
    # fixed arithmetic: LAG batches before the switch, counted in rank batches
    assert [r["stage"] for r in recs] == [1, 2]
    assert [r["decided_at_batch"] for r in recs] == [s - LAG for s in SWITCH]
    assert all(r["fault"] is None for r in recs)
    assert recs[0]["weights"] != PLAN  # a real move: a stream that ignored it would be seen below
    assert not list((out / "regmixd").glob("fault-*.json"))

    state = read_data_state(out / "final")
    streams = all_streams(state)
    assert sorted(streams) == [(r, w) for r in range(RANKS) for w in range(WORKERS)]  # every rank's streams
    assert state["regmixd"]["decisions"] == recs
    weights = [PLAN] + [r["weights"] for r in recs]
    for (rank, worker), st in streams.items():
        log = st["stage_log"]
        assert [e["stage"] for e in log] == [0, 1, 2], (rank, worker)
        # every stream enters each stage at the same sample, so at the same rank batch on every rank
        assert [e["start"] for e in log] == STARTS, (rank, worker)
        assert [(e["start"] // MICRO) * WORKERS + worker for e in log[1:]] == [s + worker for s in SWITCH]
        assert all(e.get("waited_s", 0) < 5 and e.get("fault") is None for e in log), (rank, worker, log)
        for k, (entry, counts) in enumerate(zip(log, stage_counts(st), strict=True)):
            # blended with what decisions.jsonl says, and its counts are those weights (exact blending)
            assert _nonzero(entry["weights"]) == pytest.approx(_nonzero(weights[k]), rel=1e-9, abs=1e-12)
            n = sum(counts.values())
            assert n == 16, (rank, worker, k, counts)
            for d, w in weights[k].items():
                assert abs(counts.get(d, 0) - w * n) < 1, (rank, worker, k, d, counts, w)

    # `regmix inspect`'s per-stage rows: requested = decided, realised over all 4 streams
    rows = stage_rows(state)
    assert [r["stage"] for r in rows] == [0, 1, 2] and [r["start"] for r in rows] == STARTS
    for row, w in zip(rows, weights, strict=True):
        assert _nonzero(row["requested"]) == pytest.approx(_nonzero(w), abs=1e-9)
        assert sum(row["samples"].values()) == 16 * RANKS * WORKERS and row["faults"] == []
        for d, x in w.items():
            assert abs(row["realized"].get(d, 0) - x) <= RANKS * WORKERS / 64 + 1e-9, (row, w)


@pytest.mark.slow
def test_a_decision_that_comes_too_late_is_a_fault_in_the_record(tmp_path, prepared, tokenizer_dir, traj_model, capfd):
    """With no lag, 2 workers need stage k's first batch while the main process still trains the batches they
    prefetched, before it decides: each stream keeps its mixture, and says so (fault file, stream log, inspect)."""
    from regmix_plugin.commands.inspect_run import inspect

    out = tmp_path / "late"
    cfg = regmixd_config(
        out, prepared, tokenizer_dir, traj_model, STEPS, num_workers=WORKERS, lag=0, wait_timeout_s=0.01
    )
    run_pretrain(cfg)  # (the streams also warn, from worker processes, where pytest's warning capture loses it)
    recs = _decisions(out)
    assert [r["stage"] for r in recs] == [1, 2] and all(r["fault"] is None and r["weights"] for r in recs)
    assert recs[0]["weights"] != PLAN
    # one fault file per stream and stage, next to the stage's decision file
    names = sorted(p.name for p in (out / "regmixd").glob("fault-*.json"))
    assert names == [f"fault-stage-{k}-rank-0-worker-{w}.json" for k in (1, 2) for w in range(WORKERS)]
    for k in (1, 2):
        for w in range(WORKERS):
            fault = json.loads((out / "regmixd" / f"fault-stage-{k}-rank-0-worker-{w}.json").read_text())
            assert (fault["stage"], fault["rank"], fault["worker"], fault["start"]) == (k, 0, w, STARTS[k])
            assert _nonzero(fault["trained"]) == PLAN and fault["reason"].startswith("no decision after")
            assert fault["run"] == recs[0]["run"]
    # the checkpoint says what was trained: the plan, not the decisions
    state = read_data_state(out / "final")
    for st in all_streams(state).values():
        assert [e["fault"] is not None for e in st["stage_log"][1:]] == [True, True]
        for counts in stage_counts(st):
            assert counts == {"code": 8, "prose": 8}
    rows = stage_rows(state)
    assert [len(r["faults"]) for r in rows] == [0, WORKERS, WORKERS]
    assert rows[1]["requested"] == recs[0]["weights"] and rows[1]["realized"] == {"code": 0.5, "prose": 0.5}
    capfd.readouterr()
    inspect(out / "final")
    printed = capfd.readouterr().out
    assert printed.count("FAULT stage") == 2 * WORKERS, printed
    assert "FAULT stage 1: rank 0 worker 1 trained {code: 0.500, prose: 0.500}: no decision after" in printed
