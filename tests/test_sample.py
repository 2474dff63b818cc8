"""`regmix sample`: bounds, exact row sums, tempering, baselines, determinism, and its error messages."""

from __future__ import annotations

import csv
from fractions import Fraction

import numpy as np
import pytest

from regmix_plugin.commands.sample import sample, sample_schedules
from regmix_plugin.formats.manifest import read_manifest
from regmix_plugin.formats.mixture_table import read_mixtures
from regmix_plugin.weights import ConstraintArgs, SamplerArgs, largest_remainder


def _cells(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def test_sample_respects_every_bound_and_rows_sum_to_exactly_one(prepared, tmp_path):
    out = tmp_path / "mixtures.csv"
    tokens = read_manifest(prepared).train_tokens()
    target, max_epochs, minimum = 200_000, 15, 2e-3
    sample(
        data_path=prepared,
        out=out,
        n=40,
        constraints=ConstraintArgs(target_tokens=target, max_epochs=max_epochs),
        drop_below=minimum,
        decimals=4,
        seed=3,
        natural=True,
        uniform=True,
        baselines={"code_heavy": {"code": 0.9, "prose": 0.1}},
    )
    header, rows = _cells(out)
    assert header == ["run_id", "weight/code", "weight/prose", "weight/tiny"]
    ids = [r[0] for r in rows]
    assert ids[:3] == ["natural", "uniform", "code_heavy"] and ids[3:] == [f"mix-{i:04d}" for i in range(1, 41)]
    assert rows[2][1:] == ["0.9", "0.1", "0.0"]
    total = sum(tokens.values())
    natural = [Fraction(c) for c in rows[0][1:]]
    assert all(
        abs(w - Fraction(tokens[d], total)) < Fraction(1, 10**4)
        for w, d in zip(natural, ("code", "prose", "tiny"), strict=True)
    )
    sampled = rows[3:]
    for r in rows:
        assert sum(Fraction(c) for c in r[1:]) == 1  # exactly, in decimal
    for r in sampled:
        weights = dict(zip(("code", "prose", "tiny"), (Fraction(c) for c in r[1:]), strict=True))
        for d, w in weights.items():
            assert w == 0 or w >= Fraction(minimum).limit_denominator(10**6)
            assert w * target <= max_epochs * tokens[d]  # tiny: at most 15 * 3762 / 200000 = 0.28
            assert w * 10**4 == int(w * 10**4)  # 4 decimals
    assert len({tuple(r[1:]) for r in sampled}) == 40
    assert max(Fraction(r[3]) for r in sampled) <= Fraction(max_epochs * tokens["tiny"], target)
    # same seed, same file; another seed, other mixtures
    again = tmp_path / "again.csv"
    sample(
        data_path=prepared,
        out=again,
        n=40,
        constraints=ConstraintArgs(target_tokens=target, max_epochs=max_epochs),
        drop_below=minimum,
        decimals=4,
        seed=3,
        natural=True,
        uniform=True,
        baselines={"code_heavy": {"code": 0.9, "prose": 0.1}},
    )
    assert again.read_bytes() == out.read_bytes()
    sample(
        data_path=prepared,
        out=again,
        n=40,
        constraints=ConstraintArgs(target_tokens=target),
        drop_below=minimum,
        seed=4,
    )
    assert _cells(again)[1][0][1:] != sampled[0][1:]
    # the file reads back through the shared reader, validated against the corpus's domains
    mixes = read_mixtures(out, known=["code", "prose", "tiny"]).as_dict()
    assert list(mixes)[:3] == ["natural", "uniform", "code_heavy"] and mixes["code_heavy"]["code"] == 0.9


def test_temperature_argument_is_honoured():
    tokens = {"a": 900, "b": 90, "c": 10}
    p = np.array([900, 90, 10], dtype=float)
    for temperature in (0.5, 1.0):
        # a huge strength concentrates every draw on the (tempered) base measure
        rows = [
            stages[0]
            for stages in sample_schedules(
                tokens,
                300,
                1,
                temperature=temperature,
                sampler=SamplerArgs(min_strength=1e5, max_strength=1e5, num_strengths=1),
                minimum=0,
                decimals=6,
                seed=0,
                max_epochs=1e9,
            )
        ]
        mean = np.mean([[r[d] for d in "abc"] for r in rows], axis=0)
        expected = p**temperature / np.sum(p**temperature)
        np.testing.assert_allclose(mean, expected, atol=2e-3)


def test_largest_remainder_sums_exactly():
    rng = np.random.default_rng(0)
    for _ in range(200):
        x = rng.dirichlet(np.full(17, 0.3))
        units = largest_remainder(x, 10**4)
        assert units.sum() == 10**4 and np.all(np.abs(units - x * 10**4) < 1)


def test_impossible_bounds_and_bad_flags_name_the_fix(prepared, tmp_path):
    # 3 domains, every weight <= 0.1 at this budget: no mixture can sum to 1
    with pytest.raises(ValueError, match=r"only 0 of --n 5 .* raise --constraints.max_epochs, lower --constraints.tar"):
        sample(
            data_path=prepared,
            out=tmp_path / "m.csv",
            n=5,
            constraints=ConstraintArgs(target_tokens=10**8, max_epochs=0.1),
        )
    with pytest.raises(
        ValueError, match=r"--sampler.min_strength <= --sampler.max_strength.*--temperature must be > 0"
    ):
        sample(
            data_path=prepared,
            out=tmp_path / "m.csv",
            n=5,
            sampler=SamplerArgs(min_strength=5, max_strength=1),
            temperature=0,
        )
    with pytest.raises(ValueError, match=r"--baselines.web: unknown domain\(s\) 'web'"):
        sample(data_path=prepared, out=tmp_path / "m.csv", n=1, baselines={"web": {"web": 1.0}})
    assert not (tmp_path / "m.csv").exists()
    with pytest.raises(FileNotFoundError, match="run `regmix prepare"):
        sample(data_path=tmp_path / "nothing", out=tmp_path / "m.csv", n=1)


def test_stages_draw_each_stage_independently_under_a_whole_run_epoch_bound(prepared, tmp_path):
    out = tmp_path / "staged.csv"
    tokens = read_manifest(prepared).train_tokens()
    target, max_epochs = 200_000, 15
    sample(
        data_path=prepared,
        out=out,
        n=30,
        stages=2,
        constraints=ConstraintArgs(target_tokens=target, max_epochs=max_epochs),
        drop_below=2e-3,
        seed=3,
        uniform=True,
    )
    header, rows = _cells(out)
    assert header == ["run_id"] + [f"weight/{d}@{k}" for k in (1, 2) for d in ("code", "prose", "tiny")]
    assert rows[0] == ["uniform"] + ["0.3334", "0.3333", "0.3333"] * 2  # a baseline keeps its mixture all run
    for r in rows:
        assert sum(map(Fraction, r[1:4])) == 1 and sum(map(Fraction, r[4:7])) == 1  # each stage, exactly
    stage1 = np.array([[float(c) for c in r[1:4]] for r in rows[1:]])
    stage2 = np.array([[float(c) for c in r[4:7]] for r in rows[1:]])
    assert not np.allclose(stage1, stage2)  # independent draws, not one mixture repeated
    mean = (stage1 + stage2) / 2
    assert (mean[:, 2] * target <= max_epochs * tokens["tiny"] + 1e-6).all()  # the bound counts the whole run
    assert (np.maximum(stage1, stage2)[:, 2] * target > max_epochs * tokens["tiny"]).any()  # ...not each stage

    table = read_mixtures(out, known=["code", "prose", "tiny"])
    assert table.stages.shape == (31, 2, 3) and np.allclose(table.weights[1:], mean)
    runs = table.as_runs()
    assert runs["mix-0001"] == [
        {"weights": dict(zip(("code", "prose", "tiny"), stage1[0], strict=True)), "until_fraction": 0.5},
        {"weights": dict(zip(("code", "prose", "tiny"), stage2[0], strict=True))},
    ]
    # stages=1 is the static sampler, draw for draw
    sample(data_path=prepared, out=tmp_path / "a.csv", n=10, seed=3, stages=1)
    sample(data_path=prepared, out=tmp_path / "b.csv", n=10, seed=3)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_a_table_is_static_or_staged_never_both(tmp_path):
    bad = tmp_path / "mixed.csv"
    bad.write_text("run_id,weight/a,weight/a@1,weight/b@1\nr1,1,0.5,0.5\n")
    with pytest.raises(ValueError, match="static or staged"):
        read_mixtures(bad)
    gap = tmp_path / "gap.csv"
    gap.write_text("run_id,weight/a@1,weight/b@1,weight/a@3,weight/b@3\nr1,1,0,0,1\n")
    with pytest.raises(ValueError, match="numbered 1..S"):
        read_mixtures(gap)
    short = tmp_path / "short.csv"
    short.write_text("run_id,weight/a@1,weight/b@1,weight/a@2\nr1,0.5,0.5,1\n")
    with pytest.raises(ValueError, match="every domain of stage 1"):
        read_mixtures(short)
    off = tmp_path / "off.csv"
    off.write_text("run_id,weight/a@1,weight/b@1,weight/a@2,weight/b@2\nr1,0.5,0.5,0.7,0.7\n")
    with pytest.raises(ValueError, match="stage 2"):
        read_mixtures(off)
