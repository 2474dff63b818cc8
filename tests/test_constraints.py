"""One constraints type (issue 18): the ``--constraints.*`` group, one prior, renamed flags and ``regmix status``.

Every renamed flag keeps its old spelling for one release: it must give the same file as the new one and
print a one-line deprecation note naming the new spelling.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import pretrain_config

from regmix_plugin.__main__ import RENAMED, renamed_flags
from regmix_plugin.errors import DeprecatedFlag
from regmix_plugin.weights import ConstraintArgs, prior_weights

OLD_SAMPLE = [
    "--target_tokens",
    "200000",
    "--max_epochs=4",
    "--minimum",
    "0.002",
    "--prior",
    "tokens",
    "--exclude",
    "[tiny]",
]
NEW_SAMPLE = [
    "--constraints.target_tokens",
    "200000",
    "--constraints.max_epochs=4",
    "--drop_below",
    "0.002",
    "--prior_source",
    "tokens",
    "--constraints.exclude",
    "[tiny]",
]


def test_old_sample_spellings_give_the_same_file_and_one_note_each(prepared, tmp_path, cli):
    base = ["sample", "--data_path", prepared, "--n", 12, "--seed", 5]
    code, _, err = cli(*base, *NEW_SAMPLE, "--out", tmp_path / "new.csv")
    assert code == 0 and "deprecated" not in err, err
    with pytest.warns(DeprecatedFlag) as caught:
        code, _, err = cli(*base, *OLD_SAMPLE, "--out", tmp_path / "old.csv")
    assert code == 0, err
    assert (tmp_path / "old.csv").read_bytes() == (tmp_path / "new.csv").read_bytes()
    notes = sorted(str(w.message) for w in caught)
    assert notes == sorted(
        f"{old} is deprecated and will be removed in the next release; use {new}"
        for old, new in [
            ("--target_tokens", "--constraints.target_tokens"),
            ("--max_epochs", "--constraints.max_epochs"),
            ("--minimum", "--drop_below"),
            ("--prior", "--prior_source"),
            ("--exclude", "--constraints.exclude"),
        ]
    )
    # the excluded domain stays a column at weight 0, so the old --exclude really reached the sampler
    assert all(line.endswith(",0.0") for line in (tmp_path / "old.csv").read_text().splitlines()[1:])


def test_the_cli_prints_a_deprecation_as_one_line(prepared, tmp_path):
    import subprocess
    import sys

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
            "--minimum",
            "0.001",
            "--out",
            str(tmp_path / "m.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines() == [
        "regmix sample: warning: --minimum is deprecated and will be removed in the next release; use --drop_below"
    ]


@pytest.mark.parametrize(("sub", "old", "new"), [(s, o, n) for s, table in RENAMED.items() for o, n in table.items()])
def test_every_renamed_flag_is_rewritten_only_for_its_subcommand(sub, old, new):
    with pytest.warns(DeprecatedFlag, match=re.escape(f"{old} is deprecated") + ".*" + re.escape(f"use {new}")):
        assert renamed_flags([sub, old, "x", f"{old}=y"]) == [sub, new, "x", f"{new}=y"]
    # a flag that only shares a prefix, and a group flag of the same name, are left alone
    assert renamed_flags([sub, f"{old}_more", "x", f"{new}", "y"]) == [sub, f"{old}_more", "x", new, "y"]
    others = [s for s in ("prepare", "fit", "recipe", "sweep") if old not in RENAMED.get(s, {})]
    for other in others:
        assert renamed_flags([other, old, "x"]) == [other, old, "x"]


@pytest.mark.parametrize("sub", ["sample", "optimize", "schedule", "entropy"])
def test_help_shows_the_new_spellings_and_not_the_old(sub, cli):
    code, out, _ = cli(sub, "--help")
    assert code == 0
    flags = set(re.findall(r"^\s+(--[\w.]+)", out, re.M))
    for field in ("target_tokens", "max_epochs", "block_size", "min_weight", "max_weight", "exclude"):
        assert f"--constraints.{field}" in flags
    assert not flags & set(RENAMED[sub]), flags & set(RENAMED[sub])
    # the field docstrings live once, on ConstraintArgs, and reach every command's help
    assert "MAXIMUM_USAGE" in out and "(type: float, default: 15.0)" in out
    if sub == "sample":
        assert "--drop_below" in flags and "--prior_source {tokens,entropy}" in out
    if sub == "optimize":
        assert "--scoring {screen,brute}" in out
    if sub == "schedule":  # the objective is a Literal: --help lists its choices
        assert "--search.objective {greedy,joint}" in out


def test_sample_refuses_weight_bounds_it_does_not_apply(prepared, tmp_path, cli):
    code, _, err = cli(
        "sample",
        "--data_path",
        prepared,
        "--n",
        2,
        "--constraints.min_weight",
        "{code: 0.1}",
        "--out",
        tmp_path / "m.csv",
    )
    assert code == 2 and "--constraints.min_weight and --constraints.max_weight bound a planned mixture" in err
    assert not (tmp_path / "m.csv").exists()


def test_one_prior_for_every_planner():
    domains = ["a", "b", "c"]
    manifest = SimpleNamespace(natural_weights=lambda: {"a": 0.5, "b": 0.25, "c": 0.25, "z": 0.0})
    weights, source = prior_weights(domains, None, manifest)
    assert weights.tolist() == [0.5, 0.25, 0.25] and source == "token distribution of --data_path"
    weights, source = prior_weights(domains, {"a": 0.2, "c": 0.8}, manifest)
    assert weights.tolist() == [0.2, 0.0, 0.8] and source == "given (--prior)"
    assert prior_weights(domains, None, None) is None  # each planner's own fallback (runs' mean, uniform)
    empty = SimpleNamespace(natural_weights=lambda: {"a": 0.0, "z": 1.0})
    with pytest.raises(
        ValueError,
        match=r"--data_path: none of the model's domains \(a, b, c\) has train tokens.*"
        r"give --prior \{domain: weight\}",
    ):
        prior_weights(domains, None, empty)


def test_schedule_refuses_a_corpus_without_the_model_s_domains_instead_of_an_all_zero_prior(
    traj_model, prepared, tmp_path
):
    import json

    from regmix_plugin.commands.schedule import schedule

    # a corpus that holds none of the model's domains: schedule used to centre its draws on all zeros
    raw = json.loads((prepared / "manifest.json").read_text())
    raw["domains"] = {f"other_{d}": v for d, v in raw["domains"].items()}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"none of the model's domains \(code, prose, tiny\) has train tokens"):
        schedule(traj_model, tmp_path / "s.yaml", stages=2, data_path=tmp_path / "other")
    assert not (tmp_path / "s.yaml").exists()


def test_constraints_are_one_dataclass_with_one_default():
    from regmix_plugin.layout import DEFAULT_MAX_EPOCHS
    from regmix_plugin.pretrain.mixture_data import MixtureData
    from regmix_plugin.pretrain.stream import MixtureStream

    assert ConstraintArgs().max_epochs == DEFAULT_MAX_EPOCHS == 15.0
    assert MixtureData.__dataclass_fields__["max_epochs"].default == DEFAULT_MAX_EPOCHS
    import inspect

    assert inspect.signature(MixtureStream).parameters["max_epochs"].default == DEFAULT_MAX_EPOCHS
    assert ConstraintArgs.of({"max_epochs": 2, "exclude": ["a"]}) == ConstraintArgs(max_epochs=2, exclude=["a"])
    assert ConstraintArgs.of(None) == ConstraintArgs()


def _planned_sweep(tmp_path, prepared, tokenizer_dir) -> Path:
    from regmix_plugin.commands.sweep import EvalArgs
    from regmix_plugin.commands.sweep.plan import check_setup, plan_sweep
    from regmix_plugin.formats.mixture_table import write_mixtures

    write_mixtures(
        tmp_path / "m.csv",
        {"m1": {"code": 0.5, "prose": 0.5, "tiny": 0.0}, "m2": {"code": 0.2, "prose": 0.5, "tiny": 0.3}},
        ["code", "prose", "tiny"],
    )
    recipe = tmp_path / "proxy.yaml"
    recipe.write_text(yaml.safe_dump(pretrain_config(Path("unused"), prepared, tokenizer_dir, None), sort_keys=False))
    out = tmp_path / "sweep"
    plan = plan_sweep(tmp_path / "m.csv", prepared, recipe, out, None, EvalArgs(points=0), 0, False, "off", "off")
    check_setup(out, plan)  # writes the plan, trains nothing
    return out


def test_status_is_its_own_command_and_sweep_status_still_works(prepared, tokenizer_dir, tmp_path, cli):
    out = _planned_sweep(tmp_path, prepared, tokenizer_dir)
    code, printed, err = cli("status", out)
    assert code == 0 and err == "", err
    assert printed.splitlines() == [f"{out}: 2 runs: 0 done, 0 failed, 2 pending"]
    with pytest.warns(DeprecatedFlag, match=r"regmix sweep --status DIR is deprecated.*use regmix status DIR"):
        code, old, _ = cli("sweep", "--status", out)
    assert code == 0 and old == printed
    code, _, err = cli("status", tmp_path / "nothing")
    assert code == 2 and "--sweep" in err and "is not a sweep directory" in err
