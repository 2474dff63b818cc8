"""Every recipe under recipes/ parses against ``litgpt pretrain``'s signature, says what each key is, and
carries the published numbers it claims to carry.

Parsing goes through the parser ``litgpt pretrain --config X.yaml`` builds (jsonargparse's ``auto_cli``
over ``litgpt.pretrain.setup``, as in ``litgpt/__main__.py``), and ``instantiate_classes`` really builds
``regmix_plugin.MixtureData``, ``litgpt.Config`` and ``TrainArgs`` from it, so a recipe that names a key
the code no longer accepts fails here, not at the start of a 25B-token run.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import PILE17
from jsonargparse import auto_parser
from litgpt.model import GPT
from litgpt.pretrain import get_lr, setup
from litgpt.utils import num_parameters

ROOT = Path(__file__).resolve().parents[1]
RECIPES_DIR = ROOT / "recipes"
RECIPES = sorted(RECIPES_DIR.rglob("*.yaml"))
PILE_RECIPES = sorted((RECIPES_DIR / "pile").glob("*.yaml"))
ONE_B_RECIPES = sorted((RECIPES_DIR / "pile").glob("tinyllama_1b_*.yaml"))


def _ids(paths):
    return [str(p.relative_to(RECIPES_DIR)) for p in paths]


# The Pile's 17 uncopyrighted domains, in regmix-plugin naming (weights.normalize_domain of the Pile set names).
PILE_DOMAINS = set(PILE17)

# The 1B mixtures exactly as published in sail-sg/regmix mixture_config/config_1b/<name>.yaml (keys
# train_the_pile_<domain>). The official trainer divides them by their sum before sampling
# (model_training/pretrain/tinyllama.py), so a recipe must hold published / sum(published).
PUBLISHED_1B = {
    "human": {
        "arxiv": 0.1052,
        "freelaw": 0.0386,
        "nih_exporter": 0.0052,
        "pubmed_central": 0.1071,
        "wikipedia_en": 0.0919,
        "dm_mathematics": 0.0198,
        "github": 0.0427,
        "philpapers": 0.0027,
        "stackexchange": 0.0929,
        "enron_emails": 0.0030,
        "gutenberg_pg_19": 0.0199,
        "pile_cc": 0.1121,
        "ubuntu_irc": 0.0074,
        "europarl": 0.0043,
        "hackernews": 0.0075,
        "pubmed_abstracts": 0.0845,
        "uspto_backgrounds": 0.0420,
    },
    "doremi": {
        "arxiv": 0.0036,
        "freelaw": 0.0043,
        "nih_exporter": 0.0063,
        "pubmed_central": 0.0046,
        "wikipedia_en": 0.0699,
        "dm_mathematics": 0.0018,
        "github": 0.0179,
        "philpapers": 0.0274,
        "stackexchange": 0.0153,
        "enron_emails": 0.0070,
        "gutenberg_pg_19": 0.0072,
        "pile_cc": 0.6057,
        "ubuntu_irc": 0.0093,
        "europarl": 0.0062,
        "hackernews": 0.0134,
        "pubmed_abstracts": 0.0113,
        "uspto_backgrounds": 0.0036,
    },
    "pile_cc_only": {"pile_cc": 1.0},
    "regmix": {
        "arxiv": 0.0012046169821426883,
        "freelaw": 0.001454510048554701,
        "nih_exporter": 0.001231640306882902,
        "pubmed_central": 0.003108561825532002,
        "wikipedia_en": 0.01593264140324679,
        "dm_mathematics": 0.00031106907908634156,
        "github": 0.00022861228152440253,
        "philpapers": 1.329107360676338e-05,
        "stackexchange": 0.00029547405933203174,
        "enron_emails": 0.0016691646199353991,
        "gutenberg_pg_19": 0.001612531300038395,
        "pile_cc": 0.8701291419934237,
        "ubuntu_irc": 0.06417728505869834,
        "europarl": 2.9166170357771267e-06,
        "hackernews": 0.011925517591888925,
        "pubmed_abstracts": 0.02424425081714838,
        "uspto_backgrounds": 0.0024587749419225434,
    },
}


@pytest.fixture(scope="module")
def parser():
    # The same parser `litgpt pretrain` builds: litgpt/__main__.py hands {"pretrain": setup, ...} to CLI.
    return auto_parser({"pretrain": setup})


def load(parser, recipe: Path):
    """(parsed, instantiated) arguments of ``litgpt pretrain --config recipe``."""
    cfg = parser.parse_args(["pretrain", "--config", str(recipe)])
    return cfg.pretrain, parser.instantiate_classes(cfg).pretrain


def non_embedding_parameters(config) -> int:
    with torch.device("meta"):
        model = GPT(config)
    return num_parameters(model) - model.transformer.wte.weight.numel() - model.lm_head.weight.numel()


def lr_at(args, iteration: int) -> float:
    """litgpt pretrain's learning rate at ``iteration`` (micro-batches) on one device."""
    max_iters = args.train.max_tokens // (args.train.micro_batch_size * args.model_config.block_size)
    warmup = args.train.warmup_iters(1, 1, max_iters, None)
    return get_lr(args.optimizer["init_args"]["lr"], iteration, warmup, max_iters, args.train.min_lr)


def test_the_issue_recipes_exist():
    expected = {
        "tiny_cpu.yaml",
        "pile/proxy_1m.yaml",
        "pile/tinyllama_1b_human.yaml",
        "pile/tinyllama_1b_doremi.yaml",
        "pile/tinyllama_1b_pile_cc_only.yaml",
        "pile/tinyllama_1b_regmix.yaml",
    }
    assert expected <= set(_ids(RECIPES))


@pytest.mark.parametrize("recipe", RECIPES, ids=_ids(RECIPES))
def test_recipe_parses_and_is_consistent(parser, recipe):
    from regmix_plugin import MixtureData

    parsed, args = load(parser, recipe)
    assert isinstance(args.data, MixtureData)
    assert args.model_name == args.model_config.name
    init = parsed.data.init_args
    # static weights, or a schedule whose every stage is a mixture
    assert (init.weights is None) != (init.schedule is None)
    for weights in [init.weights] if init.schedule is None else [st["weights"] for st in init.schedule]:
        assert sum(weights.values()) == pytest.approx(1.0, abs=1e-3)
        assert min(weights.values()) >= 0
    # the epoch guard needs the budget at set-up: it must repeat train.max_tokens exactly
    assert init.max_tokens == args.train.max_tokens == args.data.max_tokens
    assert (init.max_epochs, init.on_epoch_limit, init.seed) == (15, "error", 42)
    # litgpt pretrain's validate_args refuses a run without these
    assert args.train.max_tokens is not None and args.train.max_norm is not None
    assert args.train.epochs is None and args.eval.max_new_tokens is None
    assert args.train.global_batch_size % args.train.micro_batch_size == 0
    assert args.optimizer["class_path"] == "torch.optim.AdamW"
    assert args.train.min_lr <= args.optimizer["init_args"]["lr"]


@pytest.mark.parametrize("recipe", PILE_RECIPES, ids=_ids(PILE_RECIPES))
def test_pile_recipes_cover_the_17_domains_and_validate_on_pile_cc(parser, recipe):
    parsed, args = load(parser, recipe)
    assert set(parsed.data.init_args.weights) == PILE_DOMAINS
    assert args.data.val_domains == ["pile_cc"]
    assert args.data.data_path == Path("data/pile")
    cfg = args.model_config
    # GPT-NeoX tokenizer in the official config: vocab 50432, already a multiple of 64
    assert (cfg.vocab_size, cfg.padded_vocab_size, cfg.block_size) == (50432, 50432, 2048)
    assert (cfg.norm_class_name, cfg.mlp_class_name, cfg.bias) == ("RMSNorm", "LLaMAMLP", False)
    assert (cfg.rotary_percentage, cfg.parallel_residual, cfg.norm_eps) == (1.0, False, 1e-5)
    assert args.train.tie_embeddings is False
    assert (args.train.global_batch_size, args.train.max_norm) == (512, 1.0)
    opt = args.optimizer["init_args"]
    assert (opt["lr"], opt["weight_decay"], opt["betas"]) == (4e-4, 0.1, [0.9, 0.95])


def test_proxy_is_the_papers_1m_model_at_a_constant_lr(parser):
    _, args = load(parser, RECIPES_DIR / "pile" / "proxy_1m.yaml")
    cfg = args.model_config
    assert (cfg.n_layer, cfg.n_head, cfg.n_query_groups, cfg.n_embd, cfg.intermediate_size) == (2, 8, 8, 256, 512)
    assert non_embedding_parameters(cfg) == 1_312_000
    # 1000 steps of 512 x 2048 = 1,048,576 tokens
    assert args.train.max_tokens == 1000 * 512 * 2048
    assert args.train.lr_warmup_steps == 100
    assert args.train.min_lr == args.optimizer["init_args"]["lr"] == 4e-4
    assert args.eval.interval == 100
    # litgpt's own schedule: linear warmup, then flat at 4e-4 to the last iteration
    max_iters = args.train.max_tokens // (args.train.micro_batch_size * cfg.block_size)
    warmup = args.train.warmup_iters(1, 1, max_iters, None)
    assert warmup == 100 * 512 // args.train.micro_batch_size
    assert lr_at(args, warmup // 2) == pytest.approx(2e-4)
    assert [lr_at(args, i) for i in (warmup, max_iters // 2, max_iters - 1, max_iters)] == [4e-4] * 4


@pytest.mark.parametrize("recipe", ONE_B_RECIPES, ids=_ids(ONE_B_RECIPES))
def test_1b_recipes_are_tinyllama_shaped_for_25b_tokens(parser, recipe):
    _, args = load(parser, recipe)
    cfg = args.model_config
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.intermediate_size) == (22, 16, 2048, 5632)
    # 16 key/value heads as in the official tinyllama_1_1b config (no GQA, unlike TinyLlama's 4)
    assert cfg.n_query_groups == 16
    assert non_embedding_parameters(cfg) == 1_130_457_088
    assert args.train.max_tokens == 25_000_000_000
    assert (args.train.lr_warmup_steps, args.train.min_lr, args.train.micro_batch_size) == (1000, 1e-5, 4)
    # cosine from 4e-4 at the end of warmup down to min_lr at the end of the run
    max_iters = args.train.max_tokens // (args.train.micro_batch_size * cfg.block_size)
    warmup = args.train.warmup_iters(1, 1, max_iters, None)
    assert lr_at(args, warmup) == pytest.approx(4e-4)
    assert lr_at(args, (warmup + max_iters) // 2) == pytest.approx((4e-4 + 1e-5) / 2, rel=1e-6)
    assert lr_at(args, max_iters) == pytest.approx(1e-5)


@pytest.mark.parametrize("name", sorted(PUBLISHED_1B))
def test_1b_mixture_is_the_published_one(parser, name):
    parsed, _ = load(parser, RECIPES_DIR / "pile" / f"tinyllama_1b_{name}.yaml")
    published = PUBLISHED_1B[name]
    total = sum(published.values())
    expected = {d: published.get(d, 0.0) / total for d in PILE_DOMAINS}
    weights = parsed.data.init_args.weights
    assert weights.keys() == expected.keys()
    for d in sorted(expected):
        assert math.isclose(weights[d], expected[d], rel_tol=1e-12, abs_tol=1e-15), d


def test_tiny_cpu_recipe(parser):
    parsed, args = load(parser, RECIPES_DIR / "tiny_cpu.yaml")
    cfg = args.model_config
    assert (cfg.n_layer, cfg.n_head, cfg.n_query_groups, cfg.n_embd, cfg.intermediate_size) == (2, 4, 4, 64, 128)
    assert (cfg.block_size, cfg.vocab_size, cfg.padded_vocab_size) == (128, 512, 512)
    assert non_embedding_parameters(cfg) == 82_240
    assert (args.precision, args.devices, args.logger_name) == ("32-true", 1, "csv")
    assert (args.train.micro_batch_size, args.train.global_batch_size) == (16, 16)
    assert args.train.max_tokens == 20 * 16 * 128
    assert args.train.save_interval is None
    assert (args.eval.interval, args.eval.max_iters) == (1000, 4)
    assert (args.eval.initial_validation, args.eval.final_validation) == (False, True)
    assert parsed.data.init_args.weights == {"code": 0.5, "prose": 0.5}
    assert args.data.data_path == Path("data/tiny")
    assert args.tokenizer_dir == Path("data/tiny/tokenizer")


def test_online_regmixd_recipe(parser):
    """recipes/demo/regmixd_online.yaml: the tiny run's model and corpus, 3 stages, the controller on them."""
    from regmix_plugin import RegMixDController

    parsed, args = load(parser, RECIPES_DIR / "demo" / "regmixd_online.yaml")
    tiny, _ = load(parser, RECIPES_DIR / "tiny_cpu.yaml")
    assert parsed.model_config == tiny.model_config and args.tokenizer_dir == Path("data/tiny/tokenizer")
    data = args.data
    assert data.data_path == Path("data/tiny") and data.weights is None
    assert [st.get("until_fraction") for st in data.schedule] == [0.3333, 0.6667, None]
    demo_domains = {"code", "docs", "licenses", "math", "prose"}  # what build_demo_corpus writes
    assert all(set(st["weights"]) == demo_domains for st in data.schedule)
    [ctl] = data.callbacks
    assert isinstance(ctl, RegMixDController)
    # the controller's out_dir is the run's: it scores the run's checkpoints and writes next to them
    assert Path(ctl.out_dir) == args.out_dir == Path("out/tiny_online") and ctl.model == "out/tiny_trajectory"
    assert ctl.wait_timeout_s == 60.0 and ctl.objective == "joint"
    # switches at steps 20 and 40 of 60; 2 workers prefetch 4 batches: decided at 16 and 36, where a checkpoint is
    assert args.train.max_tokens == data.max_tokens == 60 * 16 * 128
    assert data.num_workers == 2 and args.train.micro_batch_size == args.train.global_batch_size == 16
    assert 16 % args.train.save_interval == 0 and 36 % args.train.save_interval == 0


def test_stock_litgpt_cli_accepts_the_tiny_recipe():
    out = subprocess.run(
        [sys.executable, "-m", "litgpt", "pretrain", "--config", str(RECIPES_DIR / "tiny_cpu.yaml"), "--print_config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "class_path: regmix_plugin.MixtureData" in out.stdout
    assert "max_tokens: 40960" in out.stdout


# --- every key has a comment above it, config_hub style ----------------------------------------------------

_KEY = re.compile(r"^\s*(?:-\s+)?([A-Za-z_][\w.\-]*)\s*:(?:\s|$)")


def keys_without_comment(text: str) -> list[str]:
    """``line N: key`` for each mapping key whose comment block directly above lacks ``(type: ...)``.

    Keys inside a flow mapping (``{a: 1}``) are part of their parent's line and need no comment of their own.
    """
    problems = []
    lines = text.splitlines()
    depth = 0  # open flow brackets carried over from previous lines
    for n, line in enumerate(lines, 1):
        stripped = line.strip()
        content = line.split(" #", 1)[0]
        starts_inside_flow = depth > 0
        depth += sum(content.count(c) for c in "[{") - sum(content.count(c) for c in "]}")
        if not stripped or stripped.startswith("#") or starts_inside_flow:
            continue
        match = _KEY.match(line)
        if not match:
            continue
        block = []
        i = n - 2
        while i >= 0 and lines[i].strip().startswith("#"):
            block.append(lines[i])
            i -= 1
        if not block or "type:" not in " ".join(block):
            problems.append(f"line {n}: {match.group(1)}")
    return problems


@pytest.mark.parametrize("recipe", RECIPES, ids=_ids(RECIPES))
def test_every_key_has_a_comment_with_its_type(recipe):
    assert keys_without_comment(recipe.read_text()) == []


def test_comment_check_flags_bare_and_untyped_keys():
    text = "# A (type: int, default: 1)\na: 1\n\nb: 2\n# no type here\nc:\n  # d (type: dict)\n  d: {e: 1, f: 2}\n"
    assert keys_without_comment(text) == ["line 4: b", "line 6: c"]
