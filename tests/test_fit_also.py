"""`regmix fit --also OLD_SWEEP`: an earlier sweep's runs as data, only where they are valid for the new corpus.

The sweeps are planned for real (`plan_sweep` + `check_setup` write ``sweep.json`` from a real prepared corpus and
recipe); their run records are written with the records' own writer, with losses the test chooses, so the test
controls which runs are valid without training dozens of proxies.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import make_corpus, pretrain_config

DOMAINS = ["code", "prose", "tiny"]


@pytest.fixture(scope="module")
def corpus_v2(tmp_path_factory, tokenizer_dir) -> Path:
    """Version 2 of conftest's corpus: ``prose`` and ``code`` byte-identical, ``tiny`` refreshed (more documents)."""
    from regmix_plugin.commands.prepare import prepare

    root = tmp_path_factory.mktemp("v2")
    raw = make_corpus(root / "raw", {"prose": 160, "code": 90, "tiny": 14})
    out = root / "data"
    prepare(
        source=[str(raw)], tokenizer_dir=tokenizer_dir, out_dir=out, val_fraction=0.1, num_workers=2, chunk_bytes="2KB"
    )
    return out


def _sweep(tmp_path, name, data_path, tokenizer_dir, runs: dict, *, max_tokens=None, failed=(), reuse=None) -> Path:
    """A planned sweep at ``tmp_path/name`` whose runs ``{id: (mixture, {domain: final loss})}`` are recorded."""
    from regmix_plugin.commands.sweep import EvalArgs
    from regmix_plugin.commands.sweep.plan import check_setup, plan_sweep
    from regmix_plugin.formats.mixture_table import write_mixtures
    from regmix_plugin.formats.sweep_records import RunRecord, read_records, write_record, write_table

    mixtures = tmp_path / f"{name}.csv"
    write_mixtures(mixtures, {r: m for r, (m, _) in runs.items()}, DOMAINS, reuse=reuse)
    config = pretrain_config(Path("unused"), data_path, tokenizer_dir, None)
    if max_tokens is not None:
        config["train"]["max_tokens"] = max_tokens
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(yaml.safe_dump(config, sort_keys=False))
    out = tmp_path / name
    plan = check_setup(out, plan_sweep(mixtures, data_path, recipe, out, None, EvalArgs(points=0), 0, False))
    for run_id, (mixture, losses) in runs.items():
        status = "failed" if run_id in failed else "done"
        point = [{"tokens": plan.final_tokens, "final": True, "losses": losses}]
        write_record(out, RunRecord(run_id, status, mixture, point if status == "done" else [], plan.final_tokens))
    write_table(out / "results.csv", list(runs), read_records(out), reuse)
    return out


def _loss(m: dict) -> dict:
    """A loss per domain that depends on the mixture (so a fit on it is not degenerate)."""
    return {d: 4.0 - 1.5 * m.get(d, 0.0) + 0.3 * m.get("tiny", 0.0) for d in DOMAINS}


NEW_RUNS = {
    f"n{i}": (m, _loss(m))
    for i, m in enumerate(
        [
            {"code": 0.2, "prose": 0.6, "tiny": 0.2},
            {"code": 0.5, "prose": 0.3, "tiny": 0.2},
            {"code": 0.1, "prose": 0.8, "tiny": 0.1},
            {"code": 0.3, "prose": 0.3, "tiny": 0.4},
            {"code": 0.6, "prose": 0.2, "tiny": 0.2},
        ]
    )
}
OLD_RUNS = {
    "o-valid1": ({"code": 0.5, "prose": 0.5, "tiny": 0.0}, _loss({"code": 0.5, "prose": 0.5})),
    "o-valid2": ({"code": 0.1, "prose": 0.9, "tiny": 0.0}, _loss({"code": 0.1, "prose": 0.9})),
    "o-valid3": ({"code": 0.0, "prose": 1.0, "tiny": 0.0}, _loss({"prose": 1.0})),
    "o-tiny": ({"code": 0.2, "prose": 0.5, "tiny": 0.3}, _loss({"code": 0.2, "prose": 0.5, "tiny": 0.3})),
    "o-failed": ({"code": 0.4, "prose": 0.6, "tiny": 0.0}, {}),
}


def test_sweep_records_the_corpus_fingerprints(tmp_path, prepared, tokenizer_dir):
    from regmix_plugin.formats.manifest import read_manifest

    out = _sweep(tmp_path, "s", prepared, tokenizer_dir, dict(list(OLD_RUNS.items())[:1]))
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["fingerprints"] == read_manifest(prepared).fingerprints()
    assert saved["fingerprints"]["prose"]  # a real fingerprint, not None


def test_also_adds_only_runs_on_unchanged_domains_and_names_the_refused(
    tmp_path, prepared, corpus_v2, tokenizer_dir, cli
):
    from regmix_plugin.formats.manifest import read_manifest

    before, after = read_manifest(prepared).fingerprints(), read_manifest(corpus_v2).fingerprints()
    assert before["prose"] == after["prose"] and before["code"] == after["code"] and before["tiny"] != after["tiny"]
    old = _sweep(tmp_path, "v1", prepared, tokenizer_dir, OLD_RUNS, failed={"o-failed"})
    new = _sweep(tmp_path, "v2", corpus_v2, tokenizer_dir, NEW_RUNS)
    code, out, err = cli(
        "fit", "--results", new / "results.csv", "--also", old, "--target", "val_loss/prose",
        "--regressor", "linear", "--out", tmp_path / "model",
    )  # fmt: skip
    assert code == 0, err
    assert f"--also {old}: used 3 run(s), refused 2" in out
    assert "refused o-tiny: trained on tiny (changed since)" in out
    assert "refused o-failed: status failed" in out
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["n_runs"] == len(NEW_RUNS) + 3
    assert meta["source"]["also"]["used"] == {str(old): ["o-valid1", "o-valid2", "o-valid3"]}
    ids = [line.split(",")[0] for line in (tmp_path / "model" / "cv_predictions.csv").read_text().splitlines()[1:]]
    assert sorted(ids) == sorted([*NEW_RUNS, f"{old}:o-valid1", f"{old}:o-valid2", f"{old}:o-valid3"])

    # a target on the refreshed domain's validation split: no earlier loss on it is comparable
    code, out, err = cli(
        "fit", "--results", new / "results.csv", "--also", old, "--target", "val_loss/tiny",
        "--regressor", "linear", "--out", tmp_path / "model_tiny",
    )  # fmt: skip
    assert code == 0, err
    assert f"--also {old}: used 0 run(s), refused 5" in out
    assert "refused o-valid1: no comparable loss for val_loss/tiny (changed since)" in out
    assert json.loads((tmp_path / "model_tiny" / "model.json").read_text())["n_runs"] == len(NEW_RUNS)


def test_with_earlier_runs_a_reuse_fit_stays_in_full_coordinates(tmp_path, prepared, corpus_v2, tokenizer_dir, cli):
    from regmix_plugin.formats.reuse import ReuseStructure

    block = ReuseStructure(tuple(DOMAINS), {"code": 0.25, "prose": 0.75}, "v1/mixture.yaml", 4)
    rows = [{"code": t / 4, "prose": 3 * t / 4, "tiny": 1 - t} for t in (0.6, 0.7, 0.8, 0.9, 0.95)]
    new = _sweep(
        tmp_path, "v2", corpus_v2, tokenizer_dir, {f"r{i}": (m, _loss(m)) for i, m in enumerate(rows)}, reuse=block
    )
    old = _sweep(tmp_path, "v1", prepared, tokenizer_dir, OLD_RUNS, failed={"o-failed"})
    args = ("fit", "--results", new / "results.csv", "--target", "val_loss/prose", "--regressor", "linear")
    code, out, err = cli(*args, "--out", tmp_path / "reduced")
    assert code == 0, err
    assert json.loads((tmp_path / "reduced" / "model.json").read_text())["features"] == ["@block", "tiny"]
    code, out, err = cli(*args, "--also", old, "--out", tmp_path / "full")
    assert code == 0, err
    assert "the earlier runs do not keep the reuse block's ratios, so the fit uses the full coordinates" in out
    meta = json.loads((tmp_path / "full" / "model.json").read_text())
    assert "features" not in meta and "reuse" not in meta and meta["domains"] == DOMAINS and meta["n_runs"] == 5 + 3


def test_a_changed_proxy_recipe_or_tokenizer_is_refused_with_the_fix(
    tmp_path, tmp_path_factory, prepared, corpus_v2, tokenizer_dir, cli
):
    from regmix_plugin.commands.prepare import prepare
    from regmix_plugin.tokenizer import train_tokenizer

    new = _sweep(tmp_path, "v2", corpus_v2, tokenizer_dir, NEW_RUNS)
    longer = _sweep(tmp_path, "v1_longer", prepared, tokenizer_dir, OLD_RUNS, max_tokens=20 * 4 * 32)
    code, _, err = cli("fit", "--results", new / "results.csv", "--also", longer, "--out", tmp_path / "m")
    assert code == 2
    assert (
        f"--also {longer}: its proxies used another proxy recipe (differs in: data.init_args.max_tokens, "
        "train.max_tokens); their losses are not comparable" in err
    )
    assert f"Drop --also {longer}, or sweep the new corpus with the old recipe" in err
    assert not (tmp_path / "m").exists()

    other_tok = train_tokenizer(["zz yy xx ww " * 8, "prose code tiny"] * 4, tmp_path / "tok2", vocab_size=280)
    raw = make_corpus(tmp_path / "raw_other")
    data = tmp_path / "data_other"
    prepare(source=[str(raw)], tokenizer_dir=other_tok, out_dir=data, val_fraction=0.1, num_workers=1)
    retok = _sweep(tmp_path, "v1_tok", data, other_tok, OLD_RUNS)
    code, _, err = cli("fit", "--results", new / "results.csv", "--also", retok, "--out", tmp_path / "m")
    assert code == 2
    assert f"--also {retok}: its corpus was tokenized with another tokenizer" in err
    assert "re-prepare the new corpus with the old tokenizer" in err

    # a sweep planned before fingerprints were recorded, whose corpus is gone: nothing can be shown unchanged
    old = _sweep(tmp_path, "v1_old", prepared, tokenizer_dir, OLD_RUNS)
    saved = json.loads((old / "sweep.json").read_text())
    saved.pop("fingerprints")
    saved["data_path"] = str(tmp_path / "gone")
    (old / "sweep.json").write_text(json.dumps(saved))
    code, _, err = cli("fit", "--results", new / "results.csv", "--also", old, "--out", tmp_path / "m")
    assert code == 2 and f"--also {old}: its sweep.json predates recorded fingerprints" in err


def test_also_needs_a_sweeps_results_table_and_another_sweep(tmp_path, cli, results_table, prepared, tokenizer_dir):
    code, _, err = cli("fit", "--results", results_table(8), "--also", tmp_path, "--out", tmp_path / "m")
    assert code == 2 and "--also needs --results to be the results table of a `regmix sweep`" in err
    new = _sweep(tmp_path, "v2", prepared, tokenizer_dir, NEW_RUNS)
    code, _, err = cli("fit", "--results", new / "results.csv", "--also", new, "--out", tmp_path / "m")
    assert code == 2 and f"--also {new} is the sweep of --results, or given twice" in err
