"""The synthetic corpus with a known answer: layout, determinism, the target's mixture, separable sources."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic import (
    DEFAULT_ALPHA,
    MANIFEST,
    TARGET,
    bigram_limit_loss,
    build_synthetic_corpus,
    train_texts,
)

from regmix_plugin.demo.corpus import read_texts
from regmix_plugin.tokenizer import train_tokenizer

SIZES = {"train_words": 40_000, "val_words": 20_000, "target_val_words": 60_000}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    return out, build_synthetic_corpus(out, seed=0, **SIZES)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _docs(out, split, domain):
    return list(read_texts(out / split, domains=[domain]))


def test_layout_target_is_val_only_and_manifest_matches(built):
    out, manifest = built
    sources = list(DEFAULT_ALPHA)
    assert sorted(p.name for p in (out / "train").iterdir()) == sources
    assert sorted(p.name for p in (out / "val").iterdir()) == sorted(sources + [TARGET])
    assert json.loads((out / MANIFEST).read_text()) == manifest
    assert manifest["alpha"] == DEFAULT_ALPHA
    for name, entry in manifest["sources"].items():
        for split in ("train", "val"):
            docs = _docs(out, split, name)
            assert entry[split]["documents"] == len(docs)
            assert entry[split]["words"] == sum(len(d.split()) for d in docs)
            assert all(200 <= len(d.split()) <= 400 for d in docs)
        assert SIZES["train_words"] <= entry["train"]["words"] < SIZES["train_words"] + 400
    target = manifest["target_val"]
    assert len(_docs(out, "val", TARGET)) == target["documents"] == len(target["labels"])


def test_same_seed_same_bytes_other_seed_other_corpus(built, tmp_path):
    out, manifest = built
    build_synthetic_corpus(tmp_path / "again", seed=0, **SIZES)
    assert _files(tmp_path / "again") == _files(out)
    other = build_synthetic_corpus(tmp_path / "seed1", seed=1, **SIZES)
    assert other["vocabulary"] != manifest["vocabulary"]
    assert other["target_val"]["sha256"] != manifest["target_val"]["sha256"]


def test_rebuild_with_fewer_sources_leaves_no_stale_domain(tmp_path):
    build_synthetic_corpus(tmp_path, train_words=1_000, val_words=1_000, target_val_words=1_000)
    manifest = build_synthetic_corpus(
        tmp_path, alpha={"a": 0.7, "b": 0.3}, train_words=1_000, val_words=1_000, target_val_words=1_000
    )
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["a", "b"]
    assert sorted(p.name for p in (tmp_path / "val").iterdir()) == ["a", "b", TARGET]
    assert set(manifest["target_val"]["labels"]) <= {"a", "b"}


def _unigram_classifier(out, names):
    """Naive Bayes on word counts, fitted on the train split (add-one smoothing)."""
    vocab = {w: i for i, w in enumerate(json.loads((out / MANIFEST).read_text())["vocabulary"])}
    log_p = []
    for name in names:
        counts = np.ones(len(vocab))
        for doc in _docs(out, "train", name):
            np.add.at(counts, [vocab[w] for w in doc.split()], 1)
        log_p.append(np.log(counts / counts.sum()))
    log_p = np.array(log_p)

    def predict(doc):
        return names[int(np.argmax(log_p[:, [vocab[w] for w in doc.split()]].sum(axis=1)))]

    return predict


def test_sources_are_told_apart_by_word_counts_and_differ_in_entropy(built):
    out, manifest = built
    names = list(manifest["sources"])
    predict = _unigram_classifier(out, names)
    for name in names:
        docs = _docs(out, "val", name)
        accuracy = np.mean([predict(d) == name for d in docs])
        assert accuracy > 0.95, (name, accuracy)
    entropies = [manifest["sources"][n]["entropy_nats"] for n in names]
    assert all(b - a > 0.15 for a, b in zip(entropies, entropies[1:], strict=False)), entropies


def test_target_documents_come_from_the_sources_in_proportion_alpha(built):
    out, manifest = built
    names, alpha = list(manifest["sources"]), manifest["alpha"]
    target = manifest["target_val"]
    n = target["documents"]
    # Exact apportionment: each source's share of documents is alpha to within one document.
    for name in names:
        assert abs(target["documents_per_source"][name] / n - alpha[name]) <= 1 / n
    # The labels are true: an independent classifier recovers them, so the proportions are measured, not assumed.
    classify = _unigram_classifier(out, names)
    predicted = [classify(d) for d in _docs(out, "val", TARGET)]
    assert np.mean([p == t for p, t in zip(predicted, target["labels"], strict=True)]) > 0.95
    for name in names:
        assert abs(predicted.count(name) / n - alpha[name]) <= 0.03, name  # stated tolerance: 0.03 per source
    assert predicted.count("s3") <= 0.02 * n  # alpha_s3 = 0: the source the target does not contain


def test_ideal_bigram_model_has_its_lowest_target_loss_at_alpha(built):
    out, manifest = built
    alpha = np.array(list(manifest["alpha"].values()))
    names = list(manifest["sources"])

    def loss(w):
        return bigram_limit_loss(out, dict(zip(names, w, strict=True)))

    at_alpha = loss(alpha)
    others = [np.full(4, 0.25), np.array([1, 1, 1, 0]) / 3, np.sqrt(alpha) / np.sqrt(alpha).sum()]
    others += list(np.random.default_rng(0).dirichlet(np.ones(4), 12))
    for w in others:
        gap = loss(w) - at_alpha
        # The gap grows with the distance: a flat loss surface would leave the sweep nothing to find.
        assert gap > 0.05 * np.abs(w - alpha).sum(), (w.round(3), gap)
    assert loss(np.full(4, 0.25)) - at_alpha > 0.15


def test_every_word_is_one_token_of_a_512_bpe(built, tmp_path):
    out, manifest = built
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(train_tokenizer(train_texts(out), tmp_path / "tok", 512) / "tokenizer.json"))
    assert all(len(tokenizer.encode(" " + w).ids) == 1 for w in manifest["vocabulary"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha": {"s0": 0.5, "s1": 0.6}}, "alpha: weights sum to 1.1"),
        ({"alpha": {"s0": 1.5, "s1": -0.5}}, "negative"),
        ({"alpha": {"s0": 1.0}}, "use 2 to 5"),
        ({"alpha": {"a": 0.5, "target": 0.5}}, "not 'target'"),
        ({"doc_words": (300, 100)}, "doc_words"),
        ({"jump_prob": 1.0}, "jump_prob"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_synthetic_corpus(tmp_path, **kwargs)
    assert not (tmp_path / MANIFEST).exists()
