"""`regmix recipe`: the optimised weights land in a recipe that stock `litgpt pretrain` parses, and nothing
else of the template changes, comments included."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from jsonargparse import auto_parser
from litgpt.pretrain import setup

from regmix_plugin.__main__ import main as regmix_main
from regmix_plugin.formats.manifest import DomainStats, Manifest, SplitStats
from regmix_plugin.formats.mixture_yaml import write_mixture
from regmix_plugin.formats.results import write_results


def main(argv: list[str]) -> None:
    """The CLI with ``--debug``: a user error propagates, so a test can match its message (exit 2 is tested in
    test_cli.py)."""
    regmix_main([*argv, "--debug"])


TINY = Path(__file__).resolve().parents[1] / "recipes" / "tiny_cpu.yaml"


@pytest.fixture(scope="module")
def parser():
    return auto_parser({"pretrain": setup})  # what `litgpt pretrain --config` builds


def _parse(parser, recipe: Path):
    cfg = parser.parse_args(["pretrain", "--config", str(recipe)])
    return cfg.pretrain, parser.instantiate_classes(cfg).pretrain


def _mixture(path: Path, weights: dict[str, float]) -> Path:
    write_mixture(
        path,
        {
            "weights": weights,
            "prediction": {"at_mixture": 3.25, "at_prior": 3.5},
            "search": {"top_k": 100, "n_candidates": 1000},
            "provenance": {
                "created": "2026-01-02T03:04:05+00:00",
                "regressor": "gp",
                "model": "out/model",
                "cv_spearman": 0.9712,
                "n_runs": 64,
            },
        },
    )
    return path


def test_fit_optimize_recipe_gives_a_recipe_litgpt_pretrain_accepts(tmp_path, parser, synthetic_rows):
    from regmix_plugin import MixtureData

    # two synthetic domains, named like the template's corpus
    rename = lambda k: k.replace("dm_mathematics", "prose").replace("arxiv", "code")  # noqa: E731
    rows = [{rename(k): v for k, v in r.items()} for r in synthetic_rows(24, 2, seed=0)]
    write_results(tmp_path / "runs.csv", rows)
    main(["fit", "--results", str(tmp_path / "runs.csv"), "--regressor", "gp", "--out", str(tmp_path / "model")])
    main(
        [
            "optimize",
            "--model",
            str(tmp_path / "model"),
            "--out",
            str(tmp_path / "mixture.yaml"),
            "--n_candidates",
            "5000",
            "--top_k",
            "20",
            "--constraints.max_weight",
            "{code: 0.8}",
        ]
    )
    main(
        [
            "recipe",
            "--mixture",
            str(tmp_path / "mixture.yaml"),
            "--template",
            str(TINY),
            "--out",
            str(tmp_path / "new.yaml"),
        ]
    )
    chosen = yaml.safe_load((tmp_path / "mixture.yaml").read_text())["weights"]
    parsed, args = _parse(parser, tmp_path / "new.yaml")
    assert isinstance(args.data, MixtureData)
    assert args.data.weights == pytest.approx(chosen, abs=1e-9) and args.data.schedule is None
    assert chosen["code"] <= 0.8 + 1e-9 and chosen != {"code": 0.5, "prose": 0.5}
    # every other key is exactly the template's
    template, _ = _parse(parser, TINY)
    got, want = parsed.as_dict(), template.as_dict()
    for d in (got, want):
        d["data"]["init_args"].pop("weights"), d.pop("config")  # `config` is the path the parser read
    assert got == want
    # and every comment of the template is still there, in order, under a provenance block
    text = (tmp_path / "new.yaml").read_text()
    lines = iter(text.splitlines())
    assert all(c in lines for c in TINY.read_text().splitlines() if c.lstrip().startswith("#"))
    assert text.startswith(f"# data.init_args.weights set by `regmix recipe` from {tmp_path / 'mixture.yaml'}")
    assert "with a gp model" in text.splitlines()[1]


def _template(tmp_path: Path, data_block: str, data_path: str = "data/x") -> Path:
    base = yaml.safe_load(TINY.read_text())
    del base["data"]
    text = yaml.safe_dump(base, sort_keys=False)
    path = tmp_path / "template.yaml"
    path.write_text(
        "# top comment\n" + text + "data:\n  class_path: regmix_plugin.MixtureData\n  init_args:\n"
        f"    data_path: {data_path}  # the corpus\n" + data_block + "    # the seed\n    seed: 7\n"
    )
    return path


def test_a_schedule_template_gets_weights_and_a_null_schedule(tmp_path, parser):
    template = _template(
        tmp_path,
        (
            "    # static weights: unused, the schedule rules\n"
            "    weights:\n"
            "    schedule:  # two stages\n"
            "      - until_fraction: 0.5\n"
            "        weights: {code: 1.0}\n"
            "      - weights:\n"
            "          prose: 1.0\n"
        ),
    )
    main(
        [
            "recipe",
            "--mixture",
            str(_mixture(tmp_path / "m.yaml", {"code": 0.25, "prose": 0.75})),
            "--template",
            str(template),
            "--out",
            str(tmp_path / "new.yaml"),
        ]
    )
    text = (tmp_path / "new.yaml").read_text()
    assert "    weights: {code: 0.25, prose: 0.75}\n    schedule: null\n    # the seed\n    seed: 7\n" in text
    assert "    # static weights: unused, the schedule rules\n" in text and "# top comment\n" in text
    _, args = _parse(parser, tmp_path / "new.yaml")
    assert (args.data.weights, args.data.schedule, args.data.seed) == ({"code": 0.25, "prose": 0.75}, None, 7)


def test_flow_weights_are_replaced_in_place_and_zero_weights_only_if_listed(tmp_path, parser):
    template = _template(tmp_path, "    weights: {code: 0.5, prose: 0.5}  # even\n")
    mixture = _mixture(tmp_path / "m.yaml", {"code": 0.0, "prose": 1.0, "wiki": 0.0})
    main(["recipe", "--mixture", str(mixture), "--template", str(template), "--out", str(tmp_path / "new.yaml")])
    assert "    weights: {code: 0.0, prose: 1.0}  # even\n" in (tmp_path / "new.yaml").read_text()
    _, args = _parse(parser, tmp_path / "new.yaml")
    assert args.data.weights == {"code": 0.0, "prose": 1.0}


def test_a_template_without_mixturedata_is_refused(tmp_path):
    base = yaml.safe_load(TINY.read_text())
    base["data"] = {"class_path": "litgpt.data.TinyLlama", "init_args": {"data_path": "x"}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(base))
    with pytest.raises(ValueError) as e:
        main(
            [
                "recipe",
                "--mixture",
                str(_mixture(tmp_path / "m.yaml", {"code": 1.0})),
                "--template",
                str(tmp_path / "t.yaml"),
                "--out",
                str(tmp_path / "new.yaml"),
            ]
        )
    assert str(e.value) == (
        f"--template {tmp_path / 't.yaml'}: data.class_path is 'litgpt.data.TinyLlama', not "
        "regmix_plugin.MixtureData with init_args; start from a recipe under recipes/ that streams MixtureData"
    )
    assert not (tmp_path / "new.yaml").exists()


def test_weights_for_a_domain_the_templates_corpus_lacks_are_refused(tmp_path):
    corpus = tmp_path / "corpus"
    Manifest("hash", 256, {d: DomainStats(train=SplitStats(tokens=100)) for d in ("code", "prose")}).write(corpus)
    template = _template(tmp_path, "    weights: {code: 0.5, prose: 0.5}\n", data_path=str(corpus))
    mixture = _mixture(tmp_path / "m.yaml", {"code": 0.5, "github": 0.5})
    with pytest.raises(
        ValueError,
        match=r"weights github, which the template's corpus .* has no train data for "
        r"\(it has code, prose\)",
    ):
        main(["recipe", "--mixture", str(mixture), "--template", str(template), "--out", str(tmp_path / "new.yaml")])
    assert not (tmp_path / "new.yaml").exists()
    (tmp_path / "bad.yaml").write_text("weights: {code: 0.5, prose: 0.2}\n")
    with pytest.raises(ValueError, match="weights: weights sum to 0.7, not 1"):
        main(
            [
                "recipe",
                "--mixture",
                str(tmp_path / "bad.yaml"),
                "--template",
                str(template),
                "--out",
                str(tmp_path / "new.yaml"),
            ]
        )
