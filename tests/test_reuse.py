"""Mixture reuse end to end on a re-prepared tiny corpus: the comparison by fingerprint, `sample --reuse`'s rows,
the structure carried by the mixtures file, `fit` in the reduced coordinates and `optimize` keeping the ratios."""

from __future__ import annotations

import json
import random
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import DOMAIN_WORDS, make_corpus

from regmix_plugin.commands.sample import sample
from regmix_plugin.formats.manifest import read_manifest
from regmix_plugin.formats.mixture_table import read_mixtures, write_mixtures
from regmix_plugin.formats.mixture_yaml import reuse_from_previous, write_mixture
from regmix_plugin.formats.reuse import BLOCK, ReuseStructure
from regmix_plugin.weights import ConstraintArgs, epoch_bounds

# v1: prose, code, tiny, old. v2: prose and tiny unchanged, code re-crawled (other text), old dropped, notes new.
PREVIOUS = {"code": 0.2, "old": 0.2, "prose": 0.5, "tiny": 0.1}


def _extra_domain(root, name: str, seed: int, docs: int = 40) -> None:
    rng = random.Random(seed)
    pool = DOMAIN_WORDS["prose"] + DOMAIN_WORDS["tiny"]
    (root / name).mkdir(parents=True, exist_ok=True)
    with open(root / name / "part-0000.jsonl", "w") as f:
        for _ in range(docs):
            f.write(json.dumps({"text": " ".join(rng.choice(pool) for _ in range(60))}) + "\n")


def _prepare(raw, out, tokenizer_dir):
    from regmix_plugin.commands.prepare import prepare

    prepare(source=[str(raw)], tokenizer_dir=tokenizer_dir, out_dir=out, val_fraction=0.1, num_workers=2,
            chunk_bytes="2KB")  # fmt: skip
    return out


@pytest.fixture(scope="module")
def versions(tmp_path_factory, tokenizer_dir):
    """Two preparations of a changing corpus: (v1 data, v2 data, v1 mixture.yaml with fingerprints)."""
    root = tmp_path_factory.mktemp("reuse")
    raw1 = make_corpus(root / "raw1")
    _extra_domain(raw1, "old", seed=1)
    raw2 = make_corpus(root / "raw2")  # same seed: the same text for every domain
    make_corpus(root / "raw2_code", docs={"code": 90}, seed=7)  # then code is re-crawled: other text
    (root / "raw2_code" / "code" / "part-0000.jsonl").replace(root / "raw2" / "code" / "part-0000.jsonl")
    _extra_domain(raw2, "notes", seed=2)
    v1 = _prepare(raw1, root / "v1", tokenizer_dir)
    v2 = _prepare(raw2, root / "v2", tokenizer_dir)
    previous = root / "mixture_v1.yaml"
    write_mixture(previous, {"weights": PREVIOUS}, "v1's chosen mixture", read_manifest(v1))
    return v1, v2, previous


def test_reuse_detects_unchanged_changed_new_and_dropped_by_fingerprint(versions):
    v1, v2, previous = versions
    m1, m2 = read_manifest(v1), read_manifest(v2)
    assert m1.fingerprints()["prose"] == m2.fingerprints()["prose"]  # the premise: same text, same chunks
    s, c = reuse_from_previous(previous, m2, m2.train_domains())
    got = (c.unchanged, c.changed, c.new, c.dropped, c.by_name)
    assert got == (["prose", "tiny"], ["code"], ["notes"], ["old"], [])
    assert s.block == ["prose", "tiny"] and s.free == ["code", "notes"]
    assert s.ratios == pytest.approx({"prose": 5 / 6, "tiny": 1 / 6})
    s, _ = reuse_from_previous(previous, m2, m2.train_domains(), free=["tiny"])
    assert s.block == ["prose"] and s.free == ["code", "notes", "tiny"]
    with pytest.raises(ValueError, match=r"--reuse_free: code are not unchanged domains \(unchanged: prose, tiny\)"):
        reuse_from_previous(previous, m2, m2.train_domains(), free=["code"])


def test_old_mixture_yaml_without_fingerprints_warns_and_matches_by_name(versions, tmp_path):
    _, v2, _ = versions
    old = tmp_path / "old.yaml"
    write_mixture(old, {"weights": PREVIOUS})  # no manifest: written the way files were before fingerprints
    m2 = read_manifest(v2)
    with pytest.warns(UserWarning, match="records no domain fingerprints.*matched by name only"):
        s, c = reuse_from_previous(old, m2, m2.train_domains())
    # by name, re-crawled code looks unchanged: exactly the risk the warning names
    assert c.unchanged == ["code", "prose", "tiny"] and c.by_name == ["code", "prose", "tiny"] and c.new == ["notes"]
    assert s.free == ["notes"]


def test_a_changed_tokenizer_is_refused(versions, tmp_path):
    _, v2, previous = versions
    import yaml

    record = yaml.safe_load(previous.read_text())
    record["tokenizer"] = "sha256:another"
    other = tmp_path / "other.yaml"
    write_mixture(other, record)
    with pytest.raises(ValueError, match="reuse needs the same tokenizer"):
        reuse_from_previous(other, read_manifest(v2), read_manifest(v2).train_domains())


def test_sample_reuse_rows_keep_the_block_ratios_and_every_epoch_bound(versions, tmp_path, capsys):
    _, v2, previous = versions
    out = tmp_path / "mixtures.csv"
    tokens = read_manifest(v2).train_tokens()
    target, max_epochs = 100_000, 4  # tiny (~700 tokens) may take at most ~0.03: binds inside the block
    sample(data_path=v2, out=out, n=60, reuse=previous, seed=1, natural=True, decimals=4,
           constraints=ConstraintArgs(target_tokens=target, max_epochs=max_epochs))  # fmt: skip
    printed = capsys.readouterr().out
    assert "unchanged: prose, tiny; changed: code; new: notes; dropped: old" in printed
    mix = read_mixtures(out)
    assert mix.reuse is not None and mix.reuse.block == ["prose", "tiny"] and mix.reuse.source == str(previous)
    assert mix.ids[0] == "natural" and len(mix.ids) == 61
    bounds = epoch_bounds(tokens, target, max_epochs)
    cells = [line.split(",") for line in out.read_text().splitlines() if not line.startswith("#")][1:]
    totals = set()
    for row in cells:
        w = dict(zip(mix.domains, (Fraction(x) for x in row[1:]), strict=True))
        assert sum(w.values()) == 1 and all(x * 10**4 == int(x * 10**4) for x in w.values())
        assert all(float(w[d]) <= bounds[d] + 1e-12 for d in w)  # per underlying domain, the block's too
        block = w["prose"] + w["tiny"]
        totals.add(block)
        # exactly the largest-remainder split of the block's units by the ratios 5:1: within one unit of 1e-4
        units = mix.reuse.expand_units(np.array([int(block * 10**4), int(w["code"] * 10**4), int(w["notes"] * 10**4)]))
        assert [Fraction(int(u), 10**4) for u in units] == [w[d] for d in mix.domains]
        assert abs(w["prose"] - block * Fraction(5, 6)) < Fraction(1, 10**4)
    assert len(totals) > 20  # the block's total varies
    assert max(float(Fraction(r[mix.domains.index("tiny") + 1])) for r in cells) > 0.5 * bounds["tiny"]


def test_a_reuse_table_refuses_rows_that_break_the_block_naming_the_run(versions, tmp_path):
    _, v2, previous = versions
    out = tmp_path / "mixtures.csv"
    sample(data_path=v2, out=out, n=5, reuse=previous, seed=2)
    text = out.read_text().splitlines()
    note, header, first = text[0], text[1], text[2].split(",")
    assert note.startswith("# reuse: ") and header == "run_id,weight/code,weight/notes,weight/prose,weight/tiny"
    prose, tiny = Fraction(first[3]), Fraction(first[4])
    first[3], first[4] = str(float(prose + tiny - Fraction(1, 100))), "0.01"  # same total, other ratios
    text[2] = ",".join(first)
    out.write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match=rf"run\(s\) {first[0]} break the reuse block's fixed ratios"):
        read_mixtures(out, known=read_manifest(v2).train_domains())
    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join(text[1:]) + "\n")  # the same rows without the note: a plain table, read as before
    assert read_mixtures(plain).reuse is None


def test_write_mixtures_refuses_a_row_that_breaks_the_block(tmp_path):
    s = ReuseStructure(("a", "b", "c"), {"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match="run\\(s\\) bad break"):
        write_mixtures(tmp_path / "m.csv", {"ok": {"a": 0.25, "b": 0.25, "c": 0.5}, "bad": {"a": 0.5, "c": 0.5}},
                       ["a", "b", "c"], reuse=s)  # fmt: skip
    assert not (tmp_path / "m.csv").exists()


def test_coordinates_name_the_block(tmp_path):
    s = ReuseStructure(("a", "b", "c"), {"a": 1.0, "b": 3.0})
    assert s.coordinates == [BLOCK, "c"]


def _proxy_recipe(path, data, tokenizer_dir):
    import yaml
    from conftest import pretrain_config

    cfg = pretrain_config(Path("unused"), data, tokenizer_dir, None, max_epochs=0.3)
    cfg["train"].update(max_tokens=12 * 4 * 32)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


REUSE_NOTE = {"block": {"code": 0.25, "prose": 0.75}, "source": "v1/mixture.yaml", "decimals": 4}


def test_a_reuse_sweep_refuses_rows_that_break_the_block_and_runs_nothing(prepared, tokenizer_dir, tmp_path):
    from regmix_plugin.commands.sweep import sweep
    from regmix_plugin.formats.table import write_rows

    rows = [
        {"run_id": "ok", "weight/code": 0.2, "weight/prose": 0.6, "weight/tiny": 0.2},
        {"run_id": "edited", "weight/code": 0.4, "weight/prose": 0.4, "weight/tiny": 0.2},
    ]
    columns = ["run_id", "weight/code", "weight/prose", "weight/tiny"]
    write_rows(tmp_path / "mixtures.csv", columns, rows, {"reuse": REUSE_NOTE})  # bypasses write_mixtures' check
    with pytest.raises(ValueError, match=r"nothing was run(.|\n)*run\(s\) edited break the reuse block's fixed ratios"):
        sweep(mixtures=tmp_path / "mixtures.csv", data_path=prepared, out_dir=tmp_path / "sweep",
              recipe=_proxy_recipe(tmp_path / "proxy.yaml", prepared, tokenizer_dir))  # fmt: skip
    assert not (tmp_path / "sweep" / "runs").exists()


@pytest.mark.slow
def test_a_reuse_sweep_carries_the_block_into_its_results(prepared, tokenizer_dir, tmp_path):
    from regmix_plugin.commands.sweep import EvalArgs, LocalArgs, sweep
    from regmix_plugin.formats.results import read_results

    s = ReuseStructure(("code", "prose", "tiny"), REUSE_NOTE["block"], "v1/mixture.yaml", 4)
    mixes = {"a": {"code": 0.2, "prose": 0.6, "tiny": 0.2}, "b": {"code": 0.175, "prose": 0.525, "tiny": 0.3}}
    write_mixtures(tmp_path / "mixtures.csv", mixes, ["code", "prose", "tiny"], reuse=s)
    sweep(
        mixtures=tmp_path / "mixtures.csv",
        data_path=prepared,
        out_dir=tmp_path / "sweep",
        local=LocalArgs(workers=1),
        recipe=_proxy_recipe(tmp_path / "proxy.yaml", prepared, tokenizer_dir),
        eval=EvalArgs(points=0, val_tokens=256, batch_size=4),
    )
    results = read_results(tmp_path / "sweep" / "results.csv")
    assert results.ids == ["a", "b"] and results.reuse == s and np.isfinite(results.metrics["val_loss/code"]).all()
