"""Shared fixtures: a tiny generated multi-domain corpus, a throwaway BPE tokenizer, a tiny model config."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

# Three domains with disjoint word pools and very different sizes; "tiny" is small enough to cycle quickly.
DOMAIN_WORDS = {
    "prose": "the a river city walked slowly under bright morning light people said quiet".split(),
    "code": "def return if else for in range import class self none true false print".split(),
    "tiny": "alpha beta gamma delta epsilon zeta eta theta".split(),
}
DOMAIN_DOCS = {"prose": 160, "code": 90, "tiny": 12}


def make_corpus(root: Path, docs: dict[str, int] = DOMAIN_DOCS, seed: int = 0, words: int = 60) -> Path:
    """Write ``root/<domain>/part-0000.jsonl`` with generated documents; return ``root``."""
    rng = random.Random(seed)
    for domain, n in docs.items():
        pool = DOMAIN_WORDS[domain]
        (root / domain).mkdir(parents=True, exist_ok=True)
        with open(root / domain / "part-0000.jsonl", "w") as f:
            for _ in range(n):
                f.write(json.dumps({"text": " ".join(rng.choice(pool) for _ in range(words))}) + "\n")
    return root


def tiny_model_config(vocab: int = 256, block_size: int = 32) -> dict:
    """A ~50k-parameter LLaMA-style model: fast enough for several real pretrain runs per test."""
    return {
        "name": "tiny", "block_size": block_size, "vocab_size": vocab, "padded_vocab_size": vocab,
        "n_layer": 2, "n_head": 2, "n_query_groups": 2, "n_embd": 32, "intermediate_size": 64,
        "bias": False, "norm_class_name": "RMSNorm", "mlp_class_name": "LLaMAMLP",
        "rotary_percentage": 1.0, "parallel_residual": False,
    }


def pretrain_config(out_dir: Path, data_path: Path, tokenizer_dir: Path, weights=None, **data_args) -> dict:
    """A stock `litgpt pretrain` config over MixtureData sized for a few seconds of CPU."""
    micro, seq = 4, 32
    return {
        "model_name": "regmix-tiny",
        "model_config": tiny_model_config(),
        "out_dir": str(out_dir),
        "precision": "32-true",
        "resume": False,
        "data": {
            "class_path": "regmix_plugin.MixtureData",
            "init_args": {"data_path": str(data_path), "weights": weights, "num_workers": 0, **data_args},
        },
        "train": {
            "save_interval": None, "log_interval": 1, "global_batch_size": micro, "micro_batch_size": micro,
            "max_tokens": 10 * micro * seq, "max_norm": 1.0, "min_lr": 1e-3, "lr_warmup_steps": 1,
            "tie_embeddings": False,
        },
        "eval": {"interval": 1000, "max_iters": 2, "initial_validation": False, "final_validation": False},
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3}},
        "devices": 1,
        "tokenizer_dir": str(tokenizer_dir),
        "logger_name": "csv",
        "seed": 42,
    }


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    from regmix_plugin.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    texts = [" ".join(ws) for ws in DOMAIN_WORDS.values()] * 4
    return train_tokenizer(texts, out, vocab_size=256)


@pytest.fixture(scope="session")
def raw_corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("raw"))


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, raw_corpus, tokenizer_dir) -> Path:
    from regmix_plugin.prepare import prepare

    out = tmp_path_factory.mktemp("prepared") / "data"
    prepare(source=[str(raw_corpus)], tokenizer_dir=tokenizer_dir, out_dir=out, val_fraction=0.1, num_workers=2,
            chunk_bytes="2KB")
    return out
