"""RegMix-D end to end with real proxies: sample --stages 2 -> sweep -> fit_trajectory -> schedule -> recipe ->
`litgpt pretrain`, every step through the `regmix` CLI, on the tiny fixture corpus (four 12-step proxies)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import pretrain_config

from regmix_plugin.__main__ import main
from regmix_plugin.commands.inspect_run import realized_mixture
from regmix_plugin.formats.mixture_table import read_mixtures
from regmix_plugin.formats.schedule import read_schedule
from regmix_plugin.formats.sweep_records import read_records
from regmix_plugin.litgpt_compat import run_pretrain

MICRO, SEQ, STEPS = 4, 32, 12  # 48 samples per proxy; stage 1 ends after sample 24, at step 6


@pytest.mark.slow
def test_staged_proxies_to_a_schedule_that_litgpt_pretrain_trains(tmp_path, prepared, tokenizer_dir):
    cfg = pretrain_config(Path("unused"), prepared, tokenizer_dir, None, max_epochs=15)
    cfg["train"].update(max_tokens=STEPS * MICRO * SEQ)
    cfg["data"]["init_args"]["max_tokens"] = STEPS * MICRO * SEQ  # until_fraction switches count against it
    (tmp_path / "proxy.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    main(
        [
            "sample",
            "--data_path",
            str(prepared),
            "--out",
            str(tmp_path / "mixtures.csv"),
            "--n",
            "4",
            "--stages",
            "2",
            "--constraints.target_tokens",
            str(STEPS * MICRO * SEQ),
            "--drop_below",
            "0.01",
            "--decimals",
            "2",
            "--seed",
            "1",
        ]
    )
    table = read_mixtures(tmp_path / "mixtures.csv")
    assert table.stages.shape == (4, 2, 3)
    main(
        [
            "sweep",
            "--mixtures",
            str(tmp_path / "mixtures.csv"),
            "--data_path",
            str(prepared),
            "--recipe",
            str(tmp_path / "proxy.yaml"),
            "--out_dir",
            str(tmp_path / "sweep"),
            "--local.workers",
            "0",
            "--eval.points",
            "2",
            "--eval.val_tokens",
            "256",
            "--eval.batch_size",
            "4",
            "--keep_checkpoints",
            "true",
        ]
    )

    records = read_records(tmp_path / "sweep")
    assert sorted(records) == table.ids and all(r.status == "done" for r in records.values())
    runs = table.as_runs()
    per_step = MICRO * SEQ
    for run_id, rec in records.items():
        assert rec.schedule == runs[run_id]  # the stages of the file, as trained
        assert rec.mixture == pytest.approx(table.as_dict()[run_id])  # ...and their mean, for static readers
        # scored at the eval points (steps 4, 8), the stage boundary (step 6) and the end
        assert [p["tokens"] for p in rec.losses] == [4 * per_step, 6 * per_step, 8 * per_step, 12 * per_step]
        # the run trained the file's first stage up to the boundary: 24 samples at stage 1's weights
        at_switch = realized_mixture(tmp_path / "sweep" / "runs" / run_id / "step-00000006")
        for d, w in runs[run_id][0]["weights"].items():
            assert abs(at_switch.get(d, {"samples": 0})["samples"] - 24 * w) <= 1, (run_id, d)

    main(
        [
            "fit_trajectory",
            "--sweep",
            str(tmp_path / "sweep"),
            "--target",
            "val_loss/*",
            "--cv_folds",
            "2",
            "--out",
            str(tmp_path / "traj"),
        ]
    )
    meta = json.loads((tmp_path / "traj" / "trajectory.json").read_text())
    assert meta["weight_domains"] == ["code", "prose", "tiny"] and meta["n_runs"] == 4
    assert meta["grid"] == pytest.approx([4 / 12, 6 / 12, 8 / 12, 1.0])  # the boundary is a grid point
    main(
        [
            "schedule",
            "--model",
            str(tmp_path / "traj"),
            "--out",
            str(tmp_path / "schedule.yaml"),
            "--stages",
            "2",
            "--data_path",
            str(prepared),
            "--constraints.target_tokens",
            str(STEPS * MICRO * SEQ),
            "--search.n_candidates",
            "2000",
            "--search.top_k",
            "16",
        ]
    )
    sched = read_schedule(tmp_path / "schedule.yaml")
    assert len(sched.stages) == 2 and sched.stages[0].until_fraction == 0.5
    main(
        [
            "recipe",
            "--mixture",
            str(tmp_path / "schedule.yaml"),
            "--template",
            str(tmp_path / "proxy.yaml"),
            "--out",
            str(tmp_path / "recipe.yaml"),
        ]
    )
    recipe = yaml.safe_load((tmp_path / "recipe.yaml").read_text())
    assert recipe["data"]["init_args"]["weights"] is None
    stages = recipe["data"]["init_args"]["schedule"]
    assert [s.get("until_fraction") for s in stages] == [0.5, None]
    for got, want in zip(stages, sched.stages, strict=True):
        assert got["weights"] == pytest.approx(want.weights, abs=1e-9)

    recipe.update(out_dir=str(tmp_path / "target"))
    run_pretrain(recipe)  # the stock loop accepts the recipe and trains the schedule
    final = realized_mixture(tmp_path / "target" / "final")
    assert sum(v["samples"] for v in final.values()) == STEPS * MICRO
