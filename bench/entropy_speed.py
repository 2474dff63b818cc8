"""How long the entropy mixture takes on 17 domains x 100M prepared tokens (the target: <= 60 s on 2 cores).

    python bench/entropy_speed.py --dir /tmp/entropy_bench      # writes ~3.4 GB once, then times

Each domain is written as ``regmix prepare`` writes it (litdata ``TokensLoader`` chunks of one uint16 array,
``index.json``), 4 chunks of 25M tokens, with a Zipf-like token distribution over a 50,277-id vocabulary (so
pair ids do not fit a bincount and the sort path is measured). Writing is not timed; the timed part is
``token_entropy.domain_entropies`` with its default sample (4M tokens per domain), twice. The chunks were just
written (or read), so both runs read from the page cache: a cold disk adds the reading of 68M random-block
tokens (136 MB) per run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DOMAINS, CHUNKS, CHUNK_TOKENS, VOCAB = 17, 4, 25_000_000, 50_277


def write_corpus(root: Path) -> list[str]:
    rng = np.random.default_rng(0)
    base = (rng.zipf(1.3, CHUNK_TOKENS) % VOCAB).astype(np.int64)
    names = [f"d{i:02d}" for i in range(DOMAINS)]
    for i, name in enumerate(names):
        out = root / name / "train"
        if (out / "index.json").is_file():
            continue
        out.mkdir(parents=True, exist_ok=True)
        chunks = []
        for k in range(CHUNKS):
            tokens = ((base * (i + 1) + k * 104_729) % VOCAB).astype(np.uint16)
            header = np.array([1, 0, tokens.nbytes], dtype=np.uint32)  # one item: [count][offsets...]
            filename = f"chunk-0-{k}.bin"
            with open(out / filename, "wb") as f:
                f.write(header.tobytes())
                f.write(tokens.tobytes())
            chunks.append({"chunk_bytes": tokens.nbytes, "chunk_size": 1, "dim": CHUNK_TOKENS, "filename": filename})
        config = {"data_format": ["no_header_numpy:5"], "item_loader": "TokensLoader", "chunk_size": None}
        (out / "index.json").write_text(json.dumps({"chunks": chunks, "config": config}))
    return names


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, default=Path("/tmp/entropy_bench"))
    parser.add_argument("--max_tokens", type=int, default=4_000_000)
    args = parser.parse_args()
    from regmix_plugin.models.token_entropy import domain_entropies, softmax_mixture

    t0 = time.perf_counter()
    names = write_corpus(args.dir)
    print(f"corpus: {DOMAINS} domains x {CHUNKS * CHUNK_TOKENS:,} tokens (written in {time.perf_counter() - t0:.1f} s)")
    for label in ("run 1", "run 2"):
        t = time.perf_counter()
        H = domain_entropies(args.dir, names, max_tokens=args.max_tokens, seed=0, vocab_size=VOCAB)
        softmax_mixture({d: h["conditional"] for d, h in H.items()})
        took = time.perf_counter() - t
        sampled = sum(h["sampled_tokens"] for h in H.values())
        print(
            f"{label}: {took:.1f} s for all three measures on {sampled:,} sampled tokens "
            f"({took / 60:.2f} of the 60 s budget)"
        )


if __name__ == "__main__":
    main()
