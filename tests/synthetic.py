"""Generate a synthetic corpus with a known answer: sources from distinct Markov chains, a target mixed from them.

It is the scientific check of the RegMix chain: the target domain's documents are drawn from the sources
in a KNOWN proportion ``alpha``, so sample -> sweep -> fit -> optimize must recover a mixture close to it.

Design (all seeded; numbers for the defaults):

- A shared vocabulary of 200 two-letter words (``ka``, ``zo``...), so a 512-token byte-level BPE
  (``regmix_plugin.tokenizer.train_tokenizer``) holds every word, with its leading space, as one token.
- Source ``k`` is a first-order Markov chain over all 200 words: with probability 1 - ``jump_prob`` it
  follows a sparse transition (an equal blend of ``BRANCHING[k]`` random permutations: 2, 3, 5, 8 (, 13)
  possible successors per word), otherwise it jumps to a word drawn from its own unigram distribution,
  which favours (``preference`` times) a block of 40 words that is the source's own. Different branching
  gives different entropy rates (recorded in ``synthetic.json``); the favoured blocks make a document's
  source plain from its word counts.
- Every word is used by every source, so the previous word says little about the source, while the next
  word differs by source: a model trained on mixture ``w`` predicts the ``w``-weighted blend of the sources'
  transitions, and its loss on source ``k`` grows like -log w_k. Target loss ~ sum_k alpha_k (c_k - log w_k)
  is lowest at w = alpha (exactly so for a converged bigram model, see ``bigram_limit_loss``): the tiny
  proxies cannot tell the source from a weak unigram signal within one context window. (How close real
  proxies get to that limit, and how well RegMix recovers alpha, is measured in CHANGELOG.md.)
- The target (``"target"``) has val documents only, like the paper's out-of-distribution Pile-CC: exactly
  round(alpha_k * n) of its n documents come from source k (largest remainder), in shuffled order.

Output, in the layout the demo corpus uses (``regmix prepare`` reads ``train/`` and ``val/`` separately)::

    OUT/train/<source>/<source>-00000.jsonl     # sources only
    OUT/val/<domain>/<domain>-00000.jsonl       # every source and the target
    OUT/synthetic.json                          # alpha, per-source parameters and sizes, target doc labels

    python -c "from synthetic import build_synthetic_corpus; build_synthetic_corpus('syn')"
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from regmix_plugin.atomic import write_json
from regmix_plugin.demo.corpus import read_texts, write_jsonl
from regmix_plugin.weights import largest_remainder, normalize_domain, validate_weights

TARGET = "target"
DEFAULT_ALPHA = {"s0": 0.5, "s1": 0.3, "s2": 0.2, "s3": 0.0}
BRANCHING = (2, 3, 5, 8, 13)
MANIFEST = "synthetic.json"
FORMAT_VERSION = 1
_FIRST, _SECOND = "bcdfghjklmnprstvwxyz", "aeiouylnrs"  # the 200 two-letter words
_BLOCK = 40  # words each source favours; 200 words hold 5 disjoint blocks


def build_synthetic_corpus(
    out_dir: str | Path,
    alpha: Mapping[str, float] | None = None,
    seed: int = 0,
    train_words: int = 250_000,
    val_words: int = 20_000,
    target_val_words: int = 50_000,
    doc_words: tuple[int, int] = (200, 400),
    jump_prob: float = 0.3,
    preference: float = 6.0,
) -> dict:
    """Write the synthetic corpus to ``out_dir`` and return its manifest (also written to ``synthetic.json``).

    ``alpha`` maps source names to the target's mixture weights (default ``DEFAULT_ALPHA``; 2 to 5
    sources). Each source gets about ``train_words`` train and ``val_words`` val words (one BPE token each),
    the target about ``target_val_words`` val words; documents have ``doc_words`` words (inclusive range).
    """
    alpha = dict(DEFAULT_ALPHA if alpha is None else alpha)
    names = [normalize_domain(s) for s in alpha]
    problems = []
    if len(set(names)) != len(names) or TARGET in names:
        problems.append(f"alpha's source names {list(alpha)} must be distinct and not {TARGET!r}")
    if not 2 <= len(names) <= len(BRANCHING):
        problems.append(f"alpha has {len(names)} sources; use 2 to {len(BRANCHING)}")
    if not (0 < doc_words[0] <= doc_words[1]):
        problems.append(f"doc_words={doc_words} must be (min, max) with 0 < min <= max")
    if min(train_words, val_words, target_val_words) < doc_words[1]:
        problems.append("train_words, val_words and target_val_words must each hold at least one document")
    if not 0 < jump_prob < 1:
        problems.append(f"jump_prob={jump_prob} must lie strictly between 0 and 1")
    if not preference >= 1:
        problems.append(f"preference={preference} must be >= 1 (how much more often a source uses its own words)")
    if problems:
        raise ValueError("build_synthetic_corpus: " + "; ".join(problems))
    alpha = validate_weights(dict(zip(names, alpha.values(), strict=True)), names, key="alpha")
    alpha = {n: alpha[n] for n in names}  # keep the caller's order: it fixes which source gets which branching

    vocab, chains = make_sources(len(names), seed, jump_prob, preference)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # a stale manifest must not describe new shards
    for split, keep in (("train", names), ("val", names + [TARGET])):
        _remove_stale_domains(out_dir / split, keep)  # an earlier build with other sources must not leak in

    def sample(k: int, lengths: list[int], rng: np.random.Generator) -> list[str]:
        return ["".join(vocab[ids]).lstrip() for ids in _walk(chains[k], lengths, rng)]

    sources = {}
    for k, name in enumerate(names):
        rng = np.random.default_rng([seed, k])
        train = sample(k, _doc_lengths(rng, train_words, doc_words), rng)
        val = sample(k, _doc_lengths(rng, val_words, doc_words), rng)
        sources[name] = {
            "branching": BRANCHING[k],
            "entropy_nats": round(entropy_rate(chains[k]), 4),
            "train": _write(out_dir / "train" / name, name, train),
            "val": _write(out_dir / "val" / name, name, val),
        }

    # Target: document lengths first, then exactly apportioned source labels in shuffled order, so the
    # document proportions equal alpha up to rounding; each source then fills the slots labelled with it.
    rng = np.random.default_rng([seed, len(names)])
    lengths = _doc_lengths(rng, target_val_words, doc_words)
    counts = [int(c) for c in largest_remainder(list(alpha.values()), len(lengths))]
    label_ids = rng.permutation(np.repeat(np.arange(len(names)), counts))
    docs = [""] * len(lengths)
    for k in range(len(names)):
        slots = np.flatnonzero(label_ids == k)
        for slot, doc in zip(slots, sample(k, [lengths[i] for i in slots], rng), strict=True):
            docs[slot] = doc
    labels = [names[k] for k in label_ids]

    manifest = {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "target": TARGET,
        "alpha": alpha,
        "jump_prob": jump_prob,
        "preference": preference,
        "doc_words": list(doc_words),
        "sources": sources,
        "target_val": {
            **_write(out_dir / "val" / TARGET, TARGET, docs),
            "documents_per_source": dict(zip(names, counts, strict=True)),
            "labels": labels,
        },
        "vocabulary": [w.strip() for w in vocab.tolist()],
    }
    write_json(out_dir / MANIFEST, manifest)
    return manifest


def train_texts(out_dir: str | Path) -> Iterator[str]:
    """Yield every train document of a built synthetic corpus (what the tokenizer is trained on)."""
    return read_texts(Path(out_dir) / "train")


def make_sources(
    n_sources: int, seed: int, jump_prob: float = 0.3, preference: float = 6.0
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The shared vocabulary (words with a leading space) and one row-stochastic transition matrix per source."""
    rng = np.random.default_rng([seed, 1_000_003])
    words = np.array([" " + a + b for a in _FIRST for b in _SECOND])[rng.permutation(len(_FIRST) * len(_SECOND))]
    n = len(words)
    chains = []
    for k in range(n_sources):
        P = np.zeros((n, n))
        for _ in range(BRANCHING[k]):  # equal weights: the entropy rate rises with the branching, for any seed
            P[np.arange(n), rng.permutation(n)] += (1 - jump_prob) / BRANCHING[k]
        unigram = np.ones(n)
        unigram[_BLOCK * k : _BLOCK * (k + 1)] = preference
        chains.append(P + jump_prob * unigram / unigram.sum())
    return words, chains


def stationary(P: np.ndarray) -> np.ndarray:
    """Stationary distribution of an irreducible, aperiodic chain (power iteration; every row here has full support)."""
    pi = np.full(len(P), 1.0 / len(P))
    for _ in range(200):
        pi = pi @ P
    return pi / pi.sum()


def entropy_rate(P: np.ndarray) -> float:
    """Entropy rate (nats per word) of a Markov chain: its stationary average of the rows' entropies."""
    logs = np.log(np.where(P > 0, P, 1.0))
    return float(stationary(P) @ -(P * logs).sum(axis=1))


def bigram_limit_loss(out_dir: str | Path, weights: Mapping[str, float], domain: str = TARGET) -> float:
    """Loss (nats per word) on val ``domain`` of the ideal bigram model trained on mixture ``weights``.

    That model predicts sum_k w_k pi_k(prev) P_k(prev, next) / sum_k w_k pi_k(prev), the exact next-word law of
    a ``w``-mixture of the chains; on the target it is minimised at ``w = alpha``. A reference for what a
    proxy sweep should find: ``bigram_limit_loss("syn", manifest["alpha"])``.
    """
    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / MANIFEST).read_text())
    names = list(manifest["sources"])
    w = np.array([float(weights.get(n, 0.0)) for n in names])
    vocab, chains = make_sources(len(names), manifest["seed"], manifest["jump_prob"], manifest["preference"])
    joint = sum(wk * stationary(P)[:, None] * P for wk, P in zip(w / w.sum(), chains, strict=True))
    log_next = np.log(joint / joint.sum(axis=1, keepdims=True))
    index = {word.strip(): i for i, word in enumerate(vocab)}
    total, count = 0.0, 0
    for text in read_texts(out_dir / "val", domains=[domain]):
        ids = np.array([index[word] for word in text.split()])
        total -= log_next[ids[:-1], ids[1:]].sum()
        count += len(ids) - 1
    return total / count


def _walk(P: np.ndarray, lengths: list[int], rng: np.random.Generator) -> list[np.ndarray]:
    """Run one chain per document in parallel (inverse-CDF on uniform draws) and cut each at its length."""
    if not lengths:
        return []
    cdf = np.cumsum(P, axis=1)
    cdf /= cdf[:, -1:]  # entries past a row's last successor become exactly 1.0 > any draw: never chosen
    n, steps = len(lengths), max(lengths)
    seq = np.empty((n, steps), dtype=np.int64)
    seq[:, 0] = rng.integers(0, len(P), n)
    for t in range(1, steps):
        u = rng.random(n)
        seq[:, t] = (cdf[seq[:, t - 1]] <= u[:, None]).sum(axis=1)
    return [seq[i, :length] for i, length in enumerate(lengths)]


def _doc_lengths(rng: np.random.Generator, n_words: int, doc_words: tuple[int, int]) -> list[int]:
    lengths, total = [], 0
    while total < n_words:
        lengths.append(int(rng.integers(doc_words[0], doc_words[1] + 1)))
        total += lengths[-1]
    return lengths


def _remove_stale_domains(split_dir: Path, keep: list[str]) -> None:
    """Delete ``<domain>/<domain>-NNNNN.jsonl`` shards of domains not in ``keep`` (only files this module writes)."""
    for shard in sorted(split_dir.glob("*/*.jsonl")):
        domain = shard.parent.name
        if domain not in keep and shard.name.startswith(f"{domain}-") and shard.stem[len(domain) + 1 :].isdigit():
            shard.unlink()
            if not any(shard.parent.iterdir()):
                shard.parent.rmdir()


def _write(domain_dir: Path, name: str, docs: list[str]) -> dict:
    shard, digest = write_jsonl(domain_dir, name, docs)
    return {"documents": len(docs), "words": sum(d.count(" ") + 1 for d in docs), "sha256": digest, "shard": shard}
