"""Training-free mixtures (BiMix, arXiv 2405.14908, §5.3): a domain's weight from the entropy of its tokens.

    from regmix_plugin.models.token_entropy import domain_entropies, softmax_mixture  (the command: `regmix entropy`)

Per training domain, on a seeded sample of at most ``max_tokens`` prepared tokens (random blocks of
``block_tokens``; pairs never straddle two blocks), with plug-in (maximum-likelihood) estimates in nats:

- ``shannon``: the unigram entropy ``H(X)``;
- ``joint``: the entropy of adjacent pairs ``H(X_t, X_t+1)``;
- ``conditional`` (the default; the lowest perplexity in the paper): ``H(X_t+1 | X_t) = H(X_t, X_t+1) - H(X_t)``.

The mixture is ``softmax(H)``, ``r_i = exp(H_i) / sum_j exp(H_j)``, then projected onto the same constraints
as ``regmix optimize`` (epochs, min/max, exclude). Plug-in estimates fall short of the truth by more when
a domain has many rare pairs and few samples; every domain gets the same sample size (unless it is smaller),
so the comparison between domains stays fair.

Counting is ``numpy.bincount`` on unigram ids and on pair ids ``a * V + b`` when ``V * V`` fits a 2**26-bin
array, else a sort (``numpy.unique``): ``bench/entropy_speed.py`` measures it on 17 domains x 100M tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from regmix_plugin.weights import ConstraintArgs

MEASURES = ("conditional", "joint", "shannon")
_BINCOUNT_MAX = 1 << 26


def sample_tokens(source_dir: str | Path, max_tokens: int, seed: int, block_tokens: int = 8192) -> np.ndarray:
    """A seeded sample of a prepared domain: ``(blocks, block_tokens)`` token ids, at most ``max_tokens`` in all.

    Blocks are drawn without replacement over the whole domain, so the sample covers it evenly; a domain
    smaller than ``max_tokens`` is read whole (as whole blocks).
    """
    from regmix_plugin.formats.token_chunks import TokenSource

    source = TokenSource(source_dir, block_tokens)
    if source.num_blocks * source.block_size < min(max_tokens, source.num_tokens) // 2:
        # Blocks never straddle chunks: with chunks shorter than a block (a small domain, small --chunk_bytes)
        # most tokens would be unreachable, so cut blocks as long as the median chunk instead.
        dims = TokenSource(source_dir, 1).chunk_blocks
        source = TokenSource(source_dir, max(2, min(block_tokens, int(np.median(dims)))))
    n = min(source.num_blocks, max(1, max_tokens // source.block_size))
    picks = np.sort(np.random.default_rng(seed).choice(source.num_blocks, n, replace=False))
    starts = np.concatenate([[0], np.cumsum(source.chunk_blocks)])
    chunk = np.searchsorted(starts, picks, side="right") - 1
    out = np.empty((n, source.block_size), dtype=np.int64)
    for k, (c, b) in enumerate(zip(chunk, picks - starts[chunk], strict=False)):
        out[k] = source.block(int(c), int(b))
    return out


def token_entropies(blocks: np.ndarray, vocab_size: int | None = None) -> dict[str, float]:
    """Plug-in ``shannon``, ``joint`` and ``conditional`` entropies (nats) of ``(blocks, length)`` token ids."""
    blocks = np.asarray(blocks, dtype=np.int64)
    if blocks.shape[1] < 2:
        raise ValueError("token_entropies needs blocks of at least 2 tokens")
    V = int(blocks.max()) + 1 if vocab_size is None else int(vocab_size)
    left = blocks[:, :-1].ravel()
    pairs = left * V + blocks[:, 1:].ravel()
    h_left = _entropy(np.bincount(left, minlength=V))
    if V * V <= _BINCOUNT_MAX:
        pair_counts = np.bincount(pairs, minlength=V * V)
    else:
        pairs.sort()
        edges = np.flatnonzero(np.diff(pairs)) + 1
        pair_counts = np.diff(np.concatenate([[0], edges, [len(pairs)]]))
    joint = _entropy(pair_counts)
    return {
        "shannon": _entropy(np.bincount(blocks.ravel(), minlength=V)),
        "joint": joint,
        "conditional": joint - h_left,
    }


def _entropy(counts: np.ndarray) -> float:
    c = counts[counts > 0].astype(float)
    p = c / c.sum()
    return float(-(p * np.log(p)).sum())


def domain_entropies(
    data_path: str | Path,
    domains: Sequence[str],
    max_tokens: int = 4_000_000,
    seed: int = 0,
    vocab_size: int | None = None,
    block_tokens: int = 8192,
) -> dict[str, dict[str, float]]:
    """Every measure for each of ``domains`` (their ``<domain>/train`` token chunks under ``data_path``)."""
    out = {}
    for i, d in enumerate(domains):
        blocks = sample_tokens(Path(data_path) / d / "train", max_tokens, seed=seed + i, block_tokens=block_tokens)
        out[d] = {**token_entropies(blocks, vocab_size), "sampled_tokens": int(blocks.size)}
    return out


def softmax_mixture(entropies: Mapping[str, float]) -> dict[str, float]:
    """``r_i = exp(H_i) / sum_j exp(H_j)`` (BiMix's entropy-driven proportions)."""
    names = list(entropies)
    h = np.array([entropies[d] for d in names], float)
    e = np.exp(h - h.max())
    return dict(zip(names, (e / e.sum()).tolist(), strict=False))


def entropy_mixture(
    data_path: Path,
    measure: str = "conditional",
    max_tokens: int = 4_000_000,
    seed: int = 0,
    tokenizer_dir: Path | None = None,
    constraints: ConstraintArgs | None = None,
) -> dict:
    """The mixture record `regmix entropy` writes (weights, entropies, constraints, provenance).

    The softmax is projected onto ``constraints`` (:func:`regmix_plugin.weights.constraint_bounds`; none by
    default). ``regmix sample --prior_source entropy`` centres its Dirichlet draws on the record's ``weights``.
    """
    from regmix_plugin.formats.manifest import read_manifest
    from regmix_plugin.tokenizer import check_tokenizer
    from regmix_plugin.weights import constraint_bounds, constraints_record, project, train_sizes

    if measure not in MEASURES:
        raise ValueError(f"--measure {measure!r} is not one of {', '.join(MEASURES)}")
    if max_tokens < 2:
        raise ValueError(f"--max_tokens must be at least 2, got {max_tokens}")
    manifest = read_manifest(data_path)
    if tokenizer_dir is not None:
        check_tokenizer(tokenizer_dir, manifest.tokenizer_hash, "--tokenizer_dir", f"--data_path {str(data_path)!r}")
    domains = manifest.train_domains()
    constraints = ConstraintArgs.of(constraints)
    tokens = train_sizes(domains, constraints.block_size, data_path, manifest.train_tokens())
    lower, upper = constraint_bounds(domains, constraints, tokens)
    H = domain_entropies(data_path, domains, max_tokens, seed, vocab_size=manifest.vocab_size)
    raw = softmax_mixture({d: H[d][measure] for d in domains})
    weights = project(np.array([[raw[d] for d in domains]]), lower, upper)[0]
    return {
        "weights": {d: float(f"{w:.10g}") for d, w in zip(domains, weights, strict=False)},
        "entropy": {
            "measure": measure,
            "nats": {d: round(H[d][measure], 6) for d in domains},
            "softmax_before_constraints": {d: float(f"{raw[d]:.10g}") for d in domains},
            "sampled_tokens": {d: H[d]["sampled_tokens"] for d in domains},
            "all_measures": {d: {m: round(H[d][m], 6) for m in MEASURES} for d in domains},
        },
        "constraints": constraints_record(domains, lower, upper, constraints),
        "provenance": {
            "method": f"entropy ({measure})",
            "data_path": str(data_path),
            "max_tokens": max_tokens,
            "seed": seed,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }
