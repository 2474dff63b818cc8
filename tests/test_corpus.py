"""The embedded demo corpus: layout, manifest, caps, determinism and distinct domains."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from regmix_plugin.demo.corpus import (
    CORPUS_MANIFEST,
    DEFAULT_MAX_CHARS,
    DEMO_DOMAINS,
    DEMO_TARGET,
    build_demo_corpus,
    read_texts,
)

CAPS = {"code": 120_000, "docs": 90_000, "prose": 80_000, "licenses": 60_000, "math": 40_000}
DOC_CHARS = 5_000


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    return out, build_demo_corpus(out, max_chars=CAPS, seed=0, max_doc_chars=DOC_CHARS)


def _docs(out, domain):
    lines = (out / domain / f"{domain}-00000.jsonl").read_text(encoding="utf-8").splitlines()
    objects = [json.loads(line) for line in lines]
    assert all(list(o) == ["text"] for o in objects)
    return [o["text"] for o in objects]


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_manifest_describe_the_shards(built):
    out, manifest = built
    assert DEMO_TARGET == "prose" and manifest["target"] == DEMO_TARGET
    assert json.loads((out / CORPUS_MANIFEST).read_text()) == manifest
    assert sorted(manifest["domains"]) == sorted(DEMO_DOMAINS)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jsonl")) == sorted(
        f"{d}/{d}-00000.jsonl" for d in DEMO_DOMAINS
    )
    for domain, entry in manifest["domains"].items():
        docs = _docs(out, domain)
        shard = out / entry["shards"][0]
        assert entry["documents"] == len(docs)
        assert entry["characters"] == sum(map(len, docs))
        assert entry["sha256"] == hashlib.sha256(shard.read_bytes()).hexdigest()
        assert (
            entry["sources"]
            and entry["sources_sha256"] == hashlib.sha256("\n".join(entry["sources"]).encode()).hexdigest()
        )
        assert all(doc.strip() for doc in docs)
    assert sum(1 for _ in read_texts(out)) == sum(e["documents"] for e in manifest["domains"].values())


def test_every_domain_fills_its_cap_and_no_document_is_too_long(built):
    out, manifest = built
    for domain, cap in CAPS.items():
        chars = manifest["domains"][domain]["characters"]
        # Every source kind has far more text than these caps, so each domain ends within one document of it.
        assert cap - DOC_CHARS <= chars <= cap, domain
        assert max(map(len, _docs(out, domain))) <= DOC_CHARS
    assert len(set(DEFAULT_MAX_CHARS.values())) == len(DEFAULT_MAX_CHARS)  # unequal natural mixture


def test_defaults_fill_every_domain_within_its_cap(tmp_path):
    manifest = build_demo_corpus(tmp_path)
    sizes = {d: e["characters"] for d, e in manifest["domains"].items()}
    assert all(100_000 <= sizes[d] <= cap for d, cap in DEFAULT_MAX_CHARS.items()), sizes
    assert len(set(sizes.values())) == len(sizes)
    assert max(len(t) for t in read_texts(tmp_path)) <= 4_000


def test_the_working_directory_does_not_change_the_corpus(tmp_path, monkeypatch):
    # The repository holds regmix_plugin.egg-info; scanning sys.path ('' = cwd) would add or drop a distribution.
    caps = dict.fromkeys(DEMO_DOMAINS, 1_000) | {"prose": 400_000, "licenses": 100_000}
    monkeypatch.chdir(Path(__file__).parent.parent)
    here = build_demo_corpus(tmp_path / "repo", max_chars=caps)
    monkeypatch.chdir(tmp_path)
    there = build_demo_corpus(tmp_path / "tmp", max_chars=caps)
    assert here["domains"]["prose"] == there["domains"]["prose"]
    assert here["domains"]["licenses"] == there["domains"]["licenses"]
    assert not any(s.startswith("regmix") for s in here["domains"]["prose"]["sources"])


def test_two_builds_write_identical_bytes_and_the_seed_changes_them(built, tmp_path):
    out, _ = built
    build_demo_corpus(tmp_path / "again", max_chars=CAPS, seed=0, max_doc_chars=DOC_CHARS)
    assert _files(tmp_path / "again") == _files(out)
    other = build_demo_corpus(tmp_path / "seed1", max_chars=CAPS, seed=1, max_doc_chars=DOC_CHARS)
    assert other["domains"]["code"]["sha256"] != built[1]["domains"]["code"]["sha256"]
    assert other["domains"]["math"]["sha256"] != built[1]["domains"]["math"]["sha256"]


def test_domains_have_distinct_character_statistics(built):
    out, _ = built

    def histogram(text):
        counts = np.zeros(128)
        for ch, n in Counter(text).items():
            counts[min(ord(ch), 127)] += n
        return counts / counts.sum()

    docs = {d: _docs(out, d) for d in DEMO_DOMAINS}
    centroid = {d: histogram("".join(texts)) for d, texts in docs.items()}
    for a, b in itertools.combinations(DEMO_DOMAINS, 2):
        total_variation = 0.5 * np.abs(centroid[a] - centroid[b]).sum()
        assert total_variation > 0.08, (a, b, total_variation)
    # A nearest-centroid classifier on character frequencies tells most documents' domain apart.
    hits = [
        min(DEMO_DOMAINS, key=lambda e: np.abs(histogram(t) - centroid[e]).sum()) == d
        for d, texts in docs.items()
        for t in texts
    ]
    assert np.mean(hits) > 0.8


def test_code_and_docs_use_disjoint_stdlib_modules(built):
    _, manifest = built
    code = set(manifest["domains"]["code"]["sources"])
    docs = {s.split(":", 1)[1] for s in manifest["domains"]["docs"]["sources"] if s.startswith("stdlib:")}
    assert code and docs and not code & docs
    assert not any("/test/" in s or s.startswith("test/") for s in code)


def test_rebuild_removes_stale_shards_and_manifest_comes_last(tmp_path):
    stale = tmp_path / "code" / "code-00001.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_text('{"text": "left over"}\n')
    (tmp_path / CORPUS_MANIFEST).write_text("{}")
    manifest = build_demo_corpus(tmp_path, max_chars=5_000, max_doc_chars=2_000)
    assert not stale.exists()
    assert json.loads((tmp_path / CORPUS_MANIFEST).read_text()) == manifest
    assert all(e["characters"] <= 5_000 for e in manifest["domains"].values())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_chars": {"web": 10_000}}, "unknown domain"),
        ({"max_chars": 10}, "max_chars must be integers >= 1000"),
        ({"max_chars": {"math": -5}}, "max_chars must be integers >= 1000"),
        ({"max_doc_chars": 10}, "max_doc_chars=10"),
    ],
)
def test_bad_arguments_are_refused_with_the_name_of_the_argument(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_demo_corpus(tmp_path, **kwargs)
    assert not (tmp_path / CORPUS_MANIFEST).exists()
