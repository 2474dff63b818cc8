"""Entropy mixtures: on domains whose entropy order is known, the proportions follow that order."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from regmix_plugin.models.token_entropy import MEASURES, domain_entropies, softmax_mixture, token_entropies

# The command is written against the restructured layout (issue 8: formats/, tokenizer.check_tokenizer).
RESTRUCTURED = pytest.mark.skipif(
    not (Path(__file__).resolve().parents[1] / "regmix_plugin" / "formats").is_dir(),
    reason="needs the restructured layout (issue 8)",
)
README = Path(__file__).resolve().parents[1] / "README.md"


def _write(root: Path, domain: str, texts: list[str]) -> None:
    (root / domain).mkdir(parents=True)
    (root / domain / "part-0000.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


@pytest.fixture(scope="module")
def known_order(tmp_path_factory):
    """``random`` (uniformly drawn token ids) > ``natural`` (the README's sentences) > ``repeated`` (one phrase)."""
    from tokenizers import Tokenizer

    from regmix_plugin.commands.prepare import prepare
    from regmix_plugin.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("entropy")
    rng = random.Random(0)
    sentences = [s.strip() for s in README.read_text().replace("\n", " ").split(". ") if len(s.split()) > 4]
    natural = [". ".join(rng.sample(sentences, 6)) for _ in range(60)]
    repeated = [" ".join(["the cat sat on the mat."] * 30) for _ in range(60)]
    tok = train_tokenizer(natural + repeated, root / "tok", vocab_size=512)
    bpe = Tokenizer.from_file(str(tok / "tokenizer.json"))
    # whole-letter tokens only: a lone byte of a multi-byte character would decode to the same U+FFFD every time
    letters = [i for t, i in bpe.get_vocab().items() if t.lstrip("\u0120").isascii() and t.lstrip("\u0120").isalpha()]
    random_docs = [bpe.decode([rng.choice(letters) for _ in range(300)]) for _ in range(60)]
    for domain, texts in (("natural", natural), ("repeated", repeated), ("random", random_docs)):
        _write(root / "raw", domain, texts)
    data = root / "data"
    prepare(
        source=[str(root / "raw")], tokenizer_dir=tok, out_dir=data, val_fraction=0.1, num_workers=1, chunk_bytes="8KB"
    )
    return {"data": data, "tok": tok}


def test_entropy_proportions_follow_the_known_order(known_order):
    domains = ["natural", "random", "repeated"]
    H = domain_entropies(known_order["data"], domains, max_tokens=20_000, seed=0, block_tokens=256)
    print("entropies:", json.dumps({d: {k: round(v, 3) for k, v in h.items()} for d, h in H.items()}))
    for measure in MEASURES:
        r = softmax_mixture({d: h[measure] for d, h in H.items()})
        print(measure, {d: round(w, 4) for d, w in r.items()})
        assert r["random"] > r["natural"] > r["repeated"], (measure, r)
        assert abs(sum(r.values()) - 1) < 1e-12
    # each token of the phrase fixes the next one, except across document boundaries (EOS)
    assert H["repeated"]["conditional"] < 0.25 * H["natural"]["conditional"]
    assert H["random"]["sampled_tokens"] <= 20_000


def test_estimates_are_exact_on_counted_sequences():
    # 0 1 0 1 ... 0: pairs (0,1),(1,0) equally often (50 each), next token fully determined
    blocks = np.tile([0, 1] * 50 + [0], (4, 1))
    h = token_entropies(blocks)
    assert h["shannon"] == pytest.approx(-(51 / 101) * np.log(51 / 101) - (50 / 101) * np.log(50 / 101))
    assert h["joint"] == pytest.approx(np.log(2))
    assert h["conditional"] == pytest.approx(0.0, abs=1e-12)
    # the sort path (vocabulary too large for a bincount of pairs) gives the same numbers
    rng = np.random.default_rng(0)
    small = rng.integers(0, 50, (20, 100))
    big = token_entropies(small, vocab_size=20_000)
    assert big == pytest.approx(token_entropies(small, vocab_size=50))


def test_sampling_is_seeded_and_bounded(known_order):
    a = domain_entropies(known_order["data"], ["natural"], max_tokens=2_000, seed=3, block_tokens=256)
    b = domain_entropies(known_order["data"], ["natural"], max_tokens=2_000, seed=3, block_tokens=256)
    assert a == b


@RESTRUCTURED
def test_entropy_command_writes_a_mixture_recipe_reads_and_respects_constraints(known_order, tmp_path, capsys):
    from regmix_plugin.__main__ import main
    from regmix_plugin.formats.mixture_yaml import read_mixture

    out = tmp_path / "mixture.yaml"
    main(
        [
            "entropy",
            "--data_path",
            str(known_order["data"]),
            "--out",
            str(out),
            "--max_tokens",
            "20000",
            "--tokenizer_dir",
            str(known_order["tok"]),
            "--constraints.max_weight",
            "{random: 0.5}",
        ]
    )
    record = read_mixture(out)
    w = record["weights"]
    print(capsys.readouterr().out, w, record["entropy"])
    assert w["random"] == pytest.approx(0.5)  # softmax gave it ~0.78; the bound holds it at 0.5
    assert w["natural"] > w["repeated"]
    assert sum(w.values()) == pytest.approx(1.0)
    assert record["entropy"]["measure"] == "conditional"


@RESTRUCTURED
def test_entropy_refuses_a_tokenizer_the_corpus_was_not_prepared_with(known_order, tmp_path, tokenizer_dir):
    from regmix_plugin.commands.entropy import entropy

    with pytest.raises(ValueError, match="tokenizer mismatch: --tokenizer_dir"):
        entropy(data_path=known_order["data"], out=tmp_path / "m.yaml", tokenizer_dir=tokenizer_dir)
    assert not (tmp_path / "m.yaml").exists()


def test_sample_prior_entropy_centres_the_proxies_on_the_entropy_mixture(known_order, tmp_path):
    from regmix_plugin.commands.sample import sample
    from regmix_plugin.formats.mixture_table import read_mixtures
    from regmix_plugin.models.token_entropy import entropy_mixture

    centre = entropy_mixture(known_order["data"], seed=0)["weights"]
    sample(data_path=known_order["data"], out=tmp_path / "m.csv", n=400, prior_source="entropy", seed=0)
    rows = read_mixtures(tmp_path / "m.csv")
    mean = dict(zip(rows.domains, rows.weights.mean(0), strict=True))
    print("entropy centre", centre, "mean of 400 draws", mean)
    # A Dirichlet's mean is its base measure. Dropping duplicate rows (weak concentrations draw the same vertex
    # often, the likeliest one most) pulls the mean of the kept rows off it a little: measured 0.06 at most.
    assert all(abs(mean[d] - centre[d]) < 0.1 for d in centre), (mean, centre)
    assert max(mean, key=mean.get) == "random"
    sample(data_path=known_order["data"], out=tmp_path / "t.csv", n=400, seed=0)
    tokens = read_mixtures(tmp_path / "t.csv").weights.mean(0)
    c = np.array([centre[d] for d in rows.domains])
    print("token-prior mean", tokens.round(3).tolist())
    assert np.abs(tokens - c).sum() > 2 * np.abs(rows.weights.mean(0) - c).sum()  # the check has teeth
