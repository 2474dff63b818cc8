"""One epoch unit (issue 17): the planners count a domain's allowance in blocks of ``block_size + 1`` tokens, as
MixtureData's guard does, so a mixture planned at the bound trains with ``on_epoch_limit: error``; domains too
small for one block are warned about by ``prepare`` and refused by the planners; token counts are accepted as
users write them."""

from __future__ import annotations

import json
import random

import pytest
import yaml
from conftest import DOMAIN_WORDS, PILE17

from regmix_plugin.__main__ import main
from regmix_plugin.formats.mixture_table import read_mixtures
from regmix_plugin.formats.token_chunks import TokenSource
from regmix_plugin.pretrain.mixture_data import MixtureData

SEQ = 32  # the recipe's block_size: samples are 33 tokens
DOMAINS = list(PILE17[:3])  # named like the synthetic results table that `regmix fit` learns from
SIZES = dict(zip(DOMAINS, (150, 80, 14), strict=True))  # documents of 60 words


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tokenizer_dir):
    from regmix_plugin.commands.prepare import prepare

    root = tmp_path_factory.mktemp("epochunit")
    rng = random.Random(0)
    for (domain, n), pool in zip(SIZES.items(), DOMAIN_WORDS.values(), strict=True):
        (root / "raw" / domain).mkdir(parents=True)
        with open(root / "raw" / domain / "x.jsonl", "w") as f:
            for _ in range(n):
                f.write(json.dumps({"text": " ".join(rng.choice(pool) for _ in range(60))}) + "\n")
    prepare(
        source=str(root / "raw"),
        tokenizer_dir=tokenizer_dir,
        out_dir=root / "data",
        num_workers=1,
        chunk_bytes="1KB",
        val_fraction=0.1,
    )
    return root / "data"


def blocks(data) -> dict[str, int]:
    return {d: TokenSource(data / d / "train", SEQ + 1).num_blocks for d in DOMAINS}


def guard(data, weights: dict[str, float], max_tokens: int, stream: bool = False) -> MixtureData:
    """MixtureData's epoch guard at ``max_epochs 1`` with ``on_epoch_limit: error``; optionally stream the whole run."""
    dm = MixtureData(
        data_path=data, weights=weights, max_tokens=max_tokens, max_epochs=1, on_epoch_limit="error", num_workers=0
    )
    dm.connect(batch_size=1, max_seq_length=SEQ)
    dm.setup()
    if stream:  # the stream's own check, sample by sample, over the whole budget
        loader = dm.train_dataloader()
        for _, _ in zip(range(len(loader)), loader, strict=False):
            pass
    else:
        dm.check_budget(1)
    return dm


def planned_samples(weights: dict[str, float], max_tokens: int) -> dict[str, float]:
    return {d: w * (max_tokens // SEQ) for d, w in weights.items()}


def test_tokens_and_blocks_disagree_in_this_corpus(corpus):
    # the reason for the issue: a domain's tokens / block_size is more samples than its blocks of block_size + 1
    from regmix_plugin.formats.manifest import read_manifest

    tokens = read_manifest(corpus).train_tokens()
    for d, b in blocks(corpus).items():
        assert tokens[d] / SEQ > b + 1, (d, tokens[d], b)


@pytest.fixture(scope="module")
def model(tmp_path_factory, synthetic_rows):
    from regmix_plugin.formats.results import write_results

    d = tmp_path_factory.mktemp("epochunit_model")
    write_results(d / "runs.csv", synthetic_rows(48, 3, seed=0))
    main(["fit", "--results", str(d / "runs.csv"), "--regressor", "gp", "--out", str(d / "gp")])
    return d / "gp"


@pytest.mark.parametrize("planner", ["optimize", "entropy"])
def test_a_mixture_planned_at_the_bound_passes_the_guard_exactly_at_the_edge(corpus, model, tmp_path, cli, planner):
    b = blocks(corpus)
    budget = SEQ * sum(b.values())  # the block allowances sum to exactly 1: the only mixture is at every edge
    flags = ["--data_path", corpus, "--constraints.target_tokens", budget, "--constraints.max_epochs", 1]
    if planner == "optimize":
        flags = ["--model", model, "--n_candidates", 2000, "--top_k", 20, *flags]

    def plan(*extra):
        code, _, err = cli(planner, *flags, "--out", tmp_path / "m.yaml", *extra)
        assert code == 0, err
        return yaml.safe_load((tmp_path / "m.yaml").read_text())

    # counted in tokens (the old unit), the planned mixture breaks the guard: some domain is over its blocks
    weights = plan()["weights"]
    with pytest.raises(ValueError, match=r"would repeat more than --data.max_epochs 1 times"):
        guard(corpus, weights, budget)
    # counted in blocks of --block_size + 1, it passes the guard, with every domain at its allowance exactly
    record = plan("--constraints.block_size", SEQ)
    assert record["constraints"]["block_size"] == SEQ
    guard(corpus, record["weights"], budget, stream=True)
    for d, n in planned_samples(record["weights"], budget).items():
        assert n == pytest.approx(b[d], rel=1e-8), d


def test_sampled_mixtures_all_pass_the_guard_when_counted_in_blocks(corpus, tmp_path, cli):
    b = blocks(corpus)
    budget = int(0.9 * SEQ * sum(b.values()))
    base = [
        "sample",
        "--data_path",
        corpus,
        "--n",
        200,
        "--constraints.target_tokens",
        budget,
        "--constraints.max_epochs",
        1,
        "--seed",
        3,
    ]

    def failures(*extra) -> int:
        code, _, err = cli(*base, "--out", tmp_path / "m.csv", *extra)
        assert code == 0, err
        failed = 0
        for w in read_mixtures(tmp_path / "m.csv").as_dict().values():
            try:
                guard(corpus, w, budget)
            except ValueError:
                failed += 1
        return failed

    assert failures() > 0  # the token-counted bound lets through rows that the guard refuses
    assert failures("--constraints.block_size", SEQ) == 0


def test_block_size_needs_a_prepared_corpus_and_is_shown_in_help(model, tmp_path, cli):
    tokens = "{arxiv: 9e3, dm_mathematics: 9e3, enron_emails: 9e3}"
    code, _, err = cli(
        "optimize",
        "--model",
        model,
        "--domain_tokens",
        tokens,
        "--constraints.target_tokens",
        "9e3",
        "--constraints.block_size",
        SEQ,
        "--out",
        tmp_path / "m.yaml",
    )
    assert code == 2 and "--constraints.block_size needs --data_path" in err, err
    for command in ("sample", "optimize", "schedule", "entropy"):
        code, out, _ = cli(command, "--help")
        out = " ".join(out.split())  # argparse wraps lines at the terminal width
        assert code == 0 and "--constraints.block_size BLOCK_SIZE" in out and "MixtureData's guard" in out
        assert "--constraints.target_tokens TARGET_TOKENS" in out and "(type: TokenCount | None, default: null)" in out


# ------------------------------------------------------------------------------------- empty and tiny domains
@pytest.fixture(scope="module")
def with_empty(tmp_path_factory, tokenizer_dir):
    """A corpus with an empty file as domain ``enron_emails`` (one EOS token) and a real one per other domain."""
    from regmix_plugin.commands.prepare import prepare

    root = tmp_path_factory.mktemp("empty")
    rng = random.Random(1)
    for domain, pool in zip(DOMAINS[:2], DOMAIN_WORDS.values(), strict=False):
        (root / "raw" / domain).mkdir(parents=True)
        (root / "raw" / domain / "x.txt").write_text(" ".join(rng.choice(pool) for _ in range(400)))
    (root / "raw" / "enron_emails").mkdir()
    (root / "raw" / "enron_emails" / "x.txt").write_text("")
    prepare(source=str(root / "raw"), tokenizer_dir=tokenizer_dir, out_dir=root / "data", num_workers=1, val_fraction=0)
    return root


def test_prepare_warns_about_a_domain_smaller_than_one_block(with_empty, tokenizer_dir, tmp_path, cli):
    code, out, err = cli(
        "prepare",
        "--source",
        with_empty / "raw",
        "--tokenizer_dir",
        tokenizer_dir,
        "--out_dir",
        tmp_path / "data",
        "--num_workers",
        1,
        "--val_fraction",
        0,
    )
    assert code == 0, err
    warning = [line for line in (out + err).splitlines() if "enron_emails" in line]
    assert warning == [
        "warning: domain enron_emails has 1 train token(s) but no whole block of 2049 tokens in any "
        "chunk (assuming block_size 2048, LitGPT's default; pass --block_size to check your recipe's): "
        "MixtureData cannot sample it; prepare more data for it"
    ], out + err
    assert ".py:" not in out + err
    # with the recipe's block size it says which one, and domains that hold a block are not warned about
    code, out, err = cli("prepare", "--verify", "true", "--out_dir", tmp_path / "data", "--block_size", SEQ)
    assert code == 0, err
    assert (
        "warning: domain enron_emails has 1 train token(s) but no whole block of 33 tokens in any chunk "
        "(--block_size 32)" in out + err
    )
    assert "arxiv" not in out + err and "dm_mathematics" not in out + err


@pytest.mark.parametrize("planner", ["sample", "optimize", "entropy"])
@pytest.mark.parametrize("block_size", [None, SEQ])
def test_planners_refuse_a_domain_without_one_block_naming_it_and_the_fix(
    with_empty, model, tmp_path, cli, planner, block_size
):
    data = with_empty / "data"
    flags = ["--data_path", data, "--out", tmp_path / ("m.csv" if planner == "sample" else "m.yaml")]
    flags += ["--constraints.block_size", block_size] if block_size else []
    flags += ["--model", model, "--n_candidates", 500, "--top_k", 5] if planner == "optimize" else []
    flags += ["--n", 3] if planner == "sample" else []
    code, _, err = cli(planner, *flags)
    assert code == 2, err
    unit = "block of --constraints.block_size 32 + 1 = 33 tokens" if block_size else "block of any size (2 tokens)"
    assert f"domain(s) enron_emails hold no whole {unit} of train data" in err, err
    assert "prepare more data for them, or leave them out with --constraints.exclude [enron_emails]" in err
    # the fix it names works
    code, _, err = cli(planner, *flags, "--constraints.exclude", "[enron_emails]")
    assert code == 0, err


# ------------------------------------------------------------------------------------------ token counts
@pytest.mark.parametrize("spelling", ["25e9", "25_000_000_000", "2.5e10"])
def test_a_large_budget_is_recorded_as_the_exact_integer(corpus, tmp_path, cli, spelling):
    code, _, err = cli(
        "entropy",
        "--data_path",
        corpus,
        "--constraints.target_tokens",
        spelling,
        "--constraints.max_epochs",
        "1e9",
        "--max_tokens",
        "5e3",
        "--out",
        tmp_path / "m.yaml",
    )
    assert code == 0, err
    record = yaml.safe_load((tmp_path / "m.yaml").read_text())
    assert record["constraints"]["target_tokens"] == 25_000_000_000 and record["provenance"]["max_tokens"] == 5000


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("2.5e0", "'2.5e0' is not a whole number of tokens"),
        ("-3", "'-3' is negative; a number of tokens is >= 0"),
        ("lots", "'lots' is not a number of tokens; write it as 25e9"),
    ],
)
@pytest.mark.parametrize("planner", ["sample", "optimize", "schedule", "entropy"])
def test_a_bad_token_count_is_refused_in_one_line_naming_the_flag(planner, value, why, tmp_path, cli):
    model = ["--model", tmp_path] if planner in ("optimize", "schedule") else []
    code, _, err = cli(planner, "--constraints.target_tokens", value, "--data_path", tmp_path, *model)
    assert code == 2
    line = f"regmix {planner}: error: --constraints.target_tokens: {why}"
    assert len(err.strip().splitlines()) == 1 and err.startswith(line), err


@pytest.mark.parametrize("spelling", ["25e9", "25_000_000_000", "2.5e10"])
@pytest.mark.parametrize("planner", ["sample", "optimize", "schedule", "entropy"])
def test_every_token_count_flag_takes_large_numbers_as_written(planner, spelling, tmp_path, monkeypatch):
    seen = {}

    def capture(**kwargs):
        seen.update(kwargs)

    import regmix_plugin.__main__ as cli_module

    commands = cli_module._commands()
    monkeypatch.setattr(cli_module, "_commands", lambda: {**commands, planner: _spy(commands[planner], capture)})
    args = [planner, "--constraints.target_tokens", spelling, "--data_path", str(tmp_path)]
    args += ["--max_tokens", spelling] if planner == "entropy" else []
    args += ["--model", str(tmp_path)] if planner in ("optimize", "schedule") else []
    args += ["--domain_tokens", f"{{arxiv: {spelling}}}"] if planner in ("optimize", "schedule") else []
    main(args)
    target = seen["constraints"].target_tokens
    assert target == 25_000_000_000 and type(target) is int
    if planner == "entropy":
        assert seen["max_tokens"] == 25_000_000_000
    if planner in ("optimize", "schedule"):
        assert seen["domain_tokens"] == {"arxiv": 25_000_000_000}


def _spy(function, capture):
    """``function``'s signature (the CLI's schema) with a body that records what the parser passed."""
    import functools

    @functools.wraps(function)
    def wrapper(**kwargs):
        capture(**kwargs)

    return wrapper


def test_mixture_data_max_tokens_in_a_recipe_takes_25e9(tmp_path):
    import subprocess
    import sys

    from regmix_plugin.resources import recipe_path

    recipe = yaml.safe_load(recipe_path("tiny_cpu.yaml").read_text())
    recipe["data"]["init_args"]["max_tokens"] = "25e9"
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    litgpt = [sys.executable, "-c", "from litgpt.__main__ import main; main()"]
    r = subprocess.run(
        [*litgpt, "pretrain", "--config", str(tmp_path / "r.yaml"), "--print_config"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["data"]["init_args"]["max_tokens"] == 25_000_000_000
