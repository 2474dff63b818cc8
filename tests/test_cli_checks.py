"""Mistakes the ``regmix`` CLI must catch before any work starts, each with a message that says what is wrong
and the fix: run through the real entry point (``main([...])`` or a subprocess), exit code 2, exact text."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import pretrain_config

from regmix_plugin.__main__ import main
from regmix_plugin.formats.mixture_table import write_mixtures
from regmix_plugin.models.schedule_search import SearchArgs

MIXES = {"m1": {"code": 0.5, "prose": 0.5, "tiny": 0.0}, "m2": {"code": 0.2, "prose": 0.5, "tiny": 0.3}}


def refused(capsys, *argv: str) -> str:
    """Run ``regmix ARGV`` in process; it must exit 2 with nothing on stdout. Returns stderr."""
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    return err


def _proxy_recipe(path: Path, prepared: Path, tokenizer_dir: Path) -> Path:
    cfg = pretrain_config(Path("unused"), prepared, tokenizer_dir, None, max_epochs=15)
    cfg["train"].update(max_tokens=12 * 4 * 32)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_demo_refuses_every_bad_flag_before_building_anything(tmp_path, capsys):
    out = tmp_path / "demo"
    t0 = time.perf_counter()
    err = refused(
        capsys,
        "demo",
        "--out_dir",
        str(out),
        "--quick",
        "true",
        "--arms",
        "[bogus,regmix_d]",
        "--proxies",
        "3",
        "--workers",
        "0",
    )
    assert err == (
        "regmix demo: error: --arms: unknown arm(s) bogus, regmix_d; known: regmix, natural, uniform, best_proxy, "
        "entropy, bimix, active, random_subset (the RegMix-D arm is added with --regmix_d true); --proxies 3: the "
        "fit needs at least 4 proxy runs; give --proxies 4 or more; --workers must be >= 1 (parallel training "
        "processes), got 0\n"
    )
    assert not out.exists()  # no corpus, no tokenizer, no proxy: refused before the first stage
    assert time.perf_counter() - t0 < 30


def test_sweep_names_every_damaged_file_before_the_first_proxy(tmp_path, prepared, raw_corpus, tokenizer_dir, capsys):
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    manifest = json.loads((data / "manifest.json").read_text())
    chunk = next(n for n in sorted(manifest["domains"]["code"]["chunks"]) if n.startswith("train/chunk-"))
    size = manifest["domains"]["code"]["chunks"][chunk]["bytes"]
    with open(data / "code" / chunk, "r+b") as f:
        f.truncate(10)
    gone = next(n for n in sorted(manifest["domains"]["prose"]["chunks"]) if n.startswith("val/chunk-"))
    (data / "prose" / gone).unlink()  # index.json is still there: only the manifest's records show the damage
    write_mixtures(tmp_path / "mixtures.csv", MIXES, ["code", "prose", "tiny"])
    recipe = _proxy_recipe(tmp_path / "proxy.yaml", data, tokenizer_dir)
    out = tmp_path / "sweep"
    err = refused(
        capsys,
        "sweep",
        "--mixtures",
        str(tmp_path / "mixtures.csv"),
        "--data_path",
        str(data),
        "--recipe",
        str(recipe),
        "--out_dir",
        str(out),
        "--local.workers",
        "0",
    )
    assert err.splitlines() == [
        "regmix sweep: error: nothing was run:",
        f"  the prepared corpus {str(data)!r} is damaged (2 domain(s)):",
        f"    domain 'code': {data / 'code' / chunk} is 10 bytes, the manifest says {size:,} (truncated?)",
        f"    domain 'prose': {data / 'prose' / gone} is missing",
        "    repair (re-does only the damaged domains, keeps the others): "
        + shlex.join(["regmix", "prepare", *manifest["domains"]["code"]["prepared_with"], "--out_dir", str(data)]),
    ]
    # the flags that prepared the corpus, recorded in its manifest: the same for both damaged domains
    assert manifest["domains"]["code"]["prepared_with"] == manifest["domains"]["prose"]["prepared_with"]
    assert manifest["domains"]["code"]["prepared_with"][:4] == [
        "--source",
        str(raw_corpus),
        "--tokenizer_dir",
        str(tokenizer_dir),
    ]
    assert not (out / "runs").exists()


def test_sweep_refuses_a_negative_eval_points_saying_what_it_counts(tmp_path, prepared, tokenizer_dir, capsys):
    write_mixtures(tmp_path / "mixtures.csv", MIXES, ["code", "prose", "tiny"])
    recipe = _proxy_recipe(tmp_path / "proxy.yaml", prepared, tokenizer_dir)
    err = refused(
        capsys,
        "sweep",
        "--mixtures",
        str(tmp_path / "mixtures.csv"),
        "--data_path",
        str(prepared),
        "--recipe",
        str(recipe),
        "--out_dir",
        str(tmp_path / "sweep"),
        "--eval.points",
        "-1",
    )
    assert err.splitlines() == [
        "regmix sweep: error: nothing was run:",
        "  --eval.points must be >= 0, got -1: it counts the evaluation points besides the end of each run (0 "
        "scores the end only)",
    ]
    assert not (tmp_path / "sweep" / "runs").exists()


def test_sample_n_0_says_what_it_would_write_and_the_fix(tmp_path, prepared, capsys):
    out = tmp_path / "mixtures.csv"
    err = refused(capsys, "sample", "--data_path", str(prepared), "--n", "0", "--out", str(out))
    assert err == (
        "regmix sample: error: --n 0 with no baseline row would write an empty mixtures file: give --n >= 1 (the "
        "number of proxy mixtures to draw; RegMix's sweeps use 512), or add rows with --natural true, --uniform "
        "true or --baselines\n"
    )
    assert not out.exists()
    main(["sample", "--data_path", str(prepared), "--n", "0", "--uniform", "true", "--out", str(out)])
    assert out.read_text().splitlines()[1:] == ["uniform,0.3334,0.3333,0.3333"]  # baselines alone are fine


def test_recipe_given_a_csv_says_what_mixture_takes(tmp_path, capsys):
    table = tmp_path / "mixtures.csv"
    write_mixtures(table, MIXES, ["code", "prose", "tiny"])
    out = tmp_path / "recipe.yaml"
    err = refused(capsys, "recipe", "--mixture", str(table), "--template", "recipes/demo/proxy.yaml", "--out", str(out))
    assert err == (
        f"regmix recipe: error: --mixture {str(table)!r} is a table, not a mixture YAML: --mixture takes the mixture "
        "YAML written by `regmix optimize`, `regmix entropy` or `regmix schedule` (its schedule.yaml). No command "
        "turns a row of a mixtures or results table into one; to train one row's mixture, write a YAML file holding "
        "`weights: {code: 0.5, prose: 0.5, tiny: 0}` (here for row 'm1') and pass that\n"
    )
    assert "--out" not in err.split("error:")[1].split("to train")[0]  # no advice to overwrite the CSV
    assert not out.exists()


@pytest.mark.parametrize("make", [False, True])
def test_fit_trajectory_without_a_sweep_directory_says_so(tmp_path, capsys, make):
    sweep = tmp_path / "sweep"
    if make:
        sweep.mkdir()  # exists, but nothing `regmix sweep` wrote
    err = refused(capsys, "fit_trajectory", "--sweep", str(sweep), "--out", str(tmp_path / "traj"))
    what = "is not a sweep directory (it has no runs/)" if make else "does not exist"
    assert err == (
        f"regmix fit_trajectory: error: --sweep {str(sweep)!r} {what}; pass the --out_dir of a `regmix sweep` run "
        "(the directory holding sweep.json and runs/)\n"
    )


def test_schedule_help_lists_every_search_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["schedule", "--help"])
    assert exit_.value.code == 0
    shown = set(re.findall(r"^\s+--search\.(\w+)", capsys.readouterr().out, re.M))
    assert shown == {f.name for f in dataclasses.fields(SearchArgs)}
    assert {"objective", "pessimism"} <= shown


def test_schedule_search_flags_reach_the_search(tmp_path):
    from regmixd_truth import proxy_records

    from regmix_plugin.commands.fit_trajectory import fit_trajectories
    from regmix_plugin.formats.schedule import read_schedule
    from regmix_plugin.models.trajectory import trajectories_from_records

    runs, wd, ld = trajectories_from_records(proxy_records(12, 2, seed=0))
    fit_trajectories(runs, wd, ld, "val_loss/target", "losses", "linear", tmp_path / "m", 3, seed=0)
    main(
        [
            "schedule",
            "--model",
            str(tmp_path / "m"),
            "--out",
            str(tmp_path / "s.yaml"),
            "--stages",
            "2",
            "--search.n_candidates",
            "500",
            "--search.top_k",
            "8",
            "--search.objective",
            "greedy",
            "--search.pessimism",
            "0.5",
        ]
    )
    search = read_schedule(tmp_path / "s.yaml").search
    assert (search["n_candidates"], search["top_k"], search["objective"], search["pessimism"]) == (
        500,
        8,
        "greedy",
        0.5,
    )


def test_warnings_print_as_regmix_messages_without_file_and_line(tmp_path, prepared):
    # a baseline row over its epoch bound is a warning of regmix_plugin's own (sample.py)
    env = {k: v for k, v in os.environ.items() if k != "REGMIX_DEBUG"}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "regmix_plugin",
            "sample",
            "--data_path",
            str(prepared),
            "--n",
            "2",
            "--baselines",
            "{heavy: {tiny: 1.0}}",
            "--out",
            str(tmp_path / "m.csv"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines() == [
        "regmix sample: warning: baseline 'heavy' repeats tiny more than --constraints.max_epochs 15 times"
    ]


def test_the_warning_format_is_the_cli_s_alone(tmp_path, prepared):
    import warnings

    before = warnings.formatwarning
    with pytest.warns(UserWarning, match="baseline 'heavy' repeats tiny") as caught:  # recorders still see it
        main(
            [
                "sample",
                "--data_path",
                str(prepared),
                "--n",
                "2",
                "--baselines",
                "{heavy: {tiny: 1.0}}",
                "--out",
                str(tmp_path / "m.csv"),
            ]
        )
    assert len(caught) == 1 and warnings.formatwarning is before  # restored when the command ends
    assert "UserWarning" in warnings.formatwarning("x", UserWarning, "f.py", 1)  # Python's own format again
