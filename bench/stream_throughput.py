"""Tokens/s of MixtureData's train loader next to litdata's StreamingDataset and CombinedStreamingDataset.

    .venv/bin/python bench/stream_throughput.py [--domains 4] [--tokens_per_domain 8000000] [--batches 200]

All three read the same prepared corpus (litdata token chunks, the paper's block of 2048 + 1 tokens) with the
same batch size and worker count; each is timed over the same number of batches after a warm-up, in
alternating rounds, and the median round is reported. Prints the ratios the CHANGELOG quotes.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def write_corpus(root: Path, domains: int, tokens: int, seed: int = 0) -> list[str]:
    """A prepared corpus in `regmix prepare`'s layout, with random uint16 tokens (tokenizing is not measured)."""
    from litdata import TokensLoader
    from litdata.streaming.writer import BinaryWriter

    from regmix_plugin.formats.manifest import DomainStats, Manifest, SplitStats

    rng = np.random.default_rng(seed)
    names = [f"domain_{i}" for i in range(domains)]
    manifest = Manifest(tokenizer_hash="sha256:bench", vocab_size=50432, domains={})
    for i, name in enumerate(names):
        size = tokens * (i + 1) // domains + tokens // 2  # different sizes
        for split, n in (("train", size), ("val", 50_000)):
            out = root / name / split
            out.mkdir(parents=True)
            writer = BinaryWriter(str(out), chunk_bytes="16MB", item_loader=TokensLoader())
            for k, start in enumerate(range(0, n, 1 << 20)):
                writer.add_item(k, rng.integers(0, 50432, min(1 << 20, n - start), dtype=np.uint16))
            writer.done()
            writer.merge()
        manifest.domains[name] = DomainStats(train=SplitStats(size, 1), val=SplitStats(50_000, 1))
    manifest.write(root)
    return names


def time_loader(make, batches: int, warmup: int = 5) -> float:
    """Tokens per second over ``batches`` batches after ``warmup`` (workers started, chunks mapped)."""
    loader = make()
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    tokens, t0 = 0, time.perf_counter()
    for batch in itertools.islice(it, batches):
        tokens += batch.numel()
    rate = tokens / (time.perf_counter() - t0)
    del it
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=4)
    parser.add_argument("--tokens_per_domain", type=int, default=8_000_000)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--block", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from litdata import CombinedStreamingDataset, StreamingDataLoader, StreamingDataset, TokensLoader

    from regmix_plugin.pretrain.mixture_data import MixtureData

    root = Path(tempfile.mkdtemp(prefix="regmix-bench-"))
    names = write_corpus(root, args.domains, args.tokens_per_domain)
    weights = {n: (i + 1) / sum(range(1, len(names) + 1)) for i, n in enumerate(names)}
    seq = args.block + 1

    def single():
        ds = StreamingDataset(
            str(root / names[-1] / "train"), item_loader=TokensLoader(block_size=seq), shuffle=True, drop_last=True
        )
        return StreamingDataLoader(ds, batch_size=args.batch_size, num_workers=args.workers, drop_last=True)

    def combined():
        dss = [
            StreamingDataset(
                str(root / n / "train"), item_loader=TokensLoader(block_size=seq), shuffle=True, drop_last=True
            )
            for n in names
        ]
        ds = CombinedStreamingDataset(dss, seed=42, weights=list(weights.values()), iterate_over_all=False)
        return StreamingDataLoader(ds, batch_size=args.batch_size, num_workers=args.workers, drop_last=True)

    def mixture():
        dm = MixtureData(data_path=root, weights=weights, num_workers=args.workers)
        dm.connect(batch_size=args.batch_size, max_seq_length=args.block)
        dm.setup()
        return dm.train_dataloader()

    makers = {"StreamingDataset (1 domain)": single, "CombinedStreamingDataset": combined, "MixtureData": mixture}
    rates = {name: [] for name in makers}
    for _ in range(args.rounds):
        for name, make in makers.items():
            rates[name].append(time_loader(make, args.batches))
    med = {name: statistics.median(r) for name, r in rates.items()}
    print(
        f"corpus: {args.domains} domains, {args.batch_size}x{seq}-token batches, {args.workers} workers, "
        f"{args.batches} batches x {args.rounds} rounds (median)"
    )
    for name, r in med.items():
        print(f"  {name:<30} {r / 1e6:8.2f} M tokens/s")
    print(
        f"MixtureData / StreamingDataset:        "
        f"{med['MixtureData'] / med['StreamingDataset (1 domain)']:.2f}x  (goal >= 0.95x)"
    )
    print(
        f"MixtureData / CombinedStreamingDataset: "
        f"{med['MixtureData'] / med['CombinedStreamingDataset']:.2f}x  (goal >= 1.0x)"
    )


if __name__ == "__main__":
    main()
