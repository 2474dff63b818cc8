"""`regmix prepare --verify` and the checks of a prepared corpus: what is damaged, how to repair it, what is too small.

Reads only: re-doing a domain is `regmix prepare --source`'s job (:mod:`regmix_plugin.commands.prepare`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from regmix_plugin.errors import RegmixError
from regmix_plugin.formats.manifest import Manifest, chunk_problems, read_manifest, repair_commands


def report_damage(out_dir: Path, manifest: Manifest, checksums: bool, redo: bool) -> dict[str, list[str]]:
    """Check finished domains' chunks against the manifest and say what is damaged; reads only, writes nothing."""
    damaged = {}
    unrecorded = []
    for domain, stats in sorted(manifest.domains.items()):
        if stats.chunks is None:
            unrecorded.append(domain)
            continue
        problems = chunk_problems(out_dir / domain, stats, checksums=checksums)
        if problems:
            damaged[domain] = problems
    if redo:
        for domain, problems in damaged.items():
            print(f"domain {domain} is damaged, re-doing it: " + "; ".join(problems[:3]))
    if unrecorded and checksums:
        print(
            f"cannot verify {', '.join(unrecorded)}: prepared by an older regmix-plugin that recorded no chunk "
            "sizes; prepare them into a new --out_dir to get them"
        )
    elif checksums and not damaged:
        print(f"verified {len(manifest.domains) - len(unrecorded)} domain(s) of {out_dir}: sizes and SHA-256 match")
    return damaged


def verify_only(out_dir: Path) -> Manifest:
    """``--verify true`` without ``--source``: report every damaged file and how to repair it; change nothing."""
    manifest = read_manifest(out_dir, flag="--out_dir")
    damaged = report_damage(out_dir, manifest, checksums=True, redo=False)
    if damaged:
        lines = [f"  {domain}: {p}" for domain, problems in damaged.items() for p in problems]
        raise RegmixError(
            f"{len(damaged)} damaged domain(s) in --out_dir {str(out_dir)!r} ({', '.join(damaged)}); nothing was "
            "changed:\n"
            + "\n".join(lines)
            + "\nRepair (re-does only the damaged domains): "
            + "; ".join(repair_commands(out_dir, manifest, list(damaged)))
        )
    return manifest


#: The block size ``prepare`` checks domains against when ``--block_size`` is not given: LitGPT's default
#: ``max_seq_length`` (and MixtureData's when it is not told one).
ASSUMED_BLOCK_SIZE = 2048


def warn_small(out_dir: Path, manifest: Manifest, block_size: int | None) -> None:
    """One line per train domain smaller than one block: MixtureData could not sample it, the planners refuse it."""
    from regmix_plugin.weights import domain_blocks

    size = block_size or ASSUMED_BLOCK_SIZE
    where = (
        f"--block_size {block_size}"
        if block_size
        else f"assuming block_size {size}, LitGPT's default; pass --block_size to check your recipe's"
    )
    train = manifest.train_domains()
    for d, n in domain_blocks(out_dir, train, size).items():
        if n == 0:
            print(
                f"warning: domain {d} has {manifest.domains[d].train.tokens} train token(s) but no whole block of "
                f"{size + 1} tokens in any chunk ({where}): MixtureData cannot sample it; prepare more data for it"
                + ("" if manifest.domains[d].train.tokens <= size else " or use a larger --chunk_bytes"),
                file=sys.stderr,
            )
